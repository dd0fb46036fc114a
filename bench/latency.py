"""Benchmark 2, single-request latency: one image, DDIM 50 steps, CFG, from submit to the PNG being
readable through the whole service (HTTP, Redis, worker, result store), over N sequential requests,
beside the engine's own sampling time for the same request: as the worker counted it (the change of
its sampling-seconds counter in GET /metrics across each request) and run directly in this process
(the engine as the worker builds it, before the service starts, so that nothing shares the device).

    python -m bench.latency                  # on the device: 50 requests
    python -m bench.latency --requests 5 --steps 5
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import render
from bench.common import (
    PNG_MAGIC,
    TERMINAL,
    add_common_arguments,
    engine_request,
    environment,
    exit_on_sigterm,
    resolve_device,
    run_jobs,
    store_root,
    summary,
    sync,
    worker_accel,
    worker_engine,
    worker_generators,
    write_result,
)
from bench.stack import add_service_arguments, counters_delta, running_service, worker_counters


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.splitlines()[0])
    add_common_arguments(p)
    p.add_argument("--requests", type=int, default=50, help="timed sequential requests (default: 50)")
    p.add_argument("--warmup-requests", type=int, default=3, help="untimed requests first (default: 3)")
    p.add_argument("--engine-runs", type=int, default=20,
                   help="direct engine runs of the same request, in this process (default: 20)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps (default: 50)")
    p.add_argument("--guidance-scale", type=float, default=3.0, help="CFG scale (default: 3)")
    p.add_argument("--class-label", type=int, default=7, help="class of the image (default: 7)")
    add_service_arguments(p)
    return p.parse_args(argv)


def api_request(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    return {"class_label": args.class_label, "num_images": 1, "sampler": "ddim", "steps": args.steps,
            "guidance": "cfg", "guidance_scale": args.guidance_scale, "seed": seed}


def direct_engine(args: argparse.Namespace, device: str) -> list[float]:
    """Seconds of each direct engine run of the one-image request (after one untimed run)."""
    import torch

    generators = worker_generators(store_root(args.model_store), args.model, device)
    ref = next(iter(generators))
    engine = worker_engine(generators, 64)
    seconds = []
    for i in range(args.engine_runs + 1):
        request = engine_request(args.class_label, 1, 500 + i, steps=args.steps, guidance_scale=args.guidance_scale)
        sync(device)
        t0 = time.perf_counter()
        run_jobs(engine, ref, {f"direct-{i}": request})
        sync(device)
        if i:
            seconds.append(time.perf_counter() - t0)
    del engine, generators
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return seconds


def one_request(http: httpx.Client, body: dict[str, Any], wait: float) -> tuple[float, dict[str, Any]]:
    """Seconds from POST /generate to the first image's PNG read back; and the job document."""
    t0 = time.perf_counter()
    r = http.post("/generate", params={"wait": wait}, json=body)
    if r.status_code not in (200, 202):
        raise RuntimeError(f"POST /generate answered {r.status_code}: {r.text[:500]}")
    doc = r.json()
    deadline = time.monotonic() + 2 * wait
    while doc["status"] not in TERMINAL and (left := deadline - time.monotonic()) > 0:
        doc = http.get(f"/jobs/{doc['id']}", params={"wait": min(wait, left)}).json()  # a long poll
    if doc["status"] != "succeeded":
        raise RuntimeError(f"job {doc['id']} ended {doc['status']}: {doc.get('error')}")
    png = http.get(doc["images"][0]["url"])
    if png.status_code != 200 or not png.content.startswith(PNG_MAGIC):
        raise RuntimeError(f"{doc['images'][0]['url']} answered {png.status_code}, not a PNG")
    return time.perf_counter() - t0, doc


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    device = resolve_device(args.device)
    env = environment(device)
    root = store_root(args.model_store)
    print(f"bench.latency: direct engine, {args.engine_runs} runs on {device}", flush=True)
    direct = direct_engine(args, device)

    service_s: list[float] = []
    in_worker_s: list[float] = []
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        workdir = args.workdir or Path(tmp)
        started = time.perf_counter()
        with running_service(root, workdir, device, 64, args.log_level, args.ready_timeout) as svc, \
                httpx.Client(base_url=svc.url, timeout=args.wait + 30) as http:
            ready_s = time.perf_counter() - started
            print(f"bench.latency: service ready in {ready_s:.1f} s at {svc.url}", flush=True)
            for i in range(args.warmup_requests):
                one_request(http, api_request(args, 900_000 + i), args.wait)
            for i in range(args.requests):
                before = worker_counters(http)
                try:
                    seconds, _ = one_request(http, api_request(args, 1000 + i), args.wait)
                except (RuntimeError, httpx.HTTPError) as e:  # counted and shown; the others go on
                    errors.append(f"{type(e).__name__}: {e}"[:300])
                    continue
                delta = counters_delta(before, worker_counters(http))
                service_s.append(seconds)
                in_worker_s.append(delta["sampling_seconds"])
            svc.children.check_alive()

    figures = {"service": summary(service_s), "engine_in_worker": summary(in_worker_s),
               "engine_direct": summary(direct)}
    overhead = {
        "p50_over_worker_engine_s": figures["service"]["p50"] - figures["engine_in_worker"]["p50"],
        "p50_over_direct_engine_s": figures["service"]["p50"] - figures["engine_direct"]["p50"],
    }
    print(f"bench.latency: service p50 {figures['service']['p50'] * 1e3:.1f} ms, p95 "
          f"{figures['service']['p95'] * 1e3:.1f} ms; engine in the worker p50 "
          f"{figures['engine_in_worker']['p50'] * 1e3:.1f} ms; direct p50 "
          f"{figures['engine_direct']['p50'] * 1e3:.1f} ms",
          flush=True)
    result = {
        "benchmark": "latency",
        "environment": env,
        "settings": {"model": args.model, "request": api_request(args, 0) | {"seed": "1000 + i"},
                     "requests": args.requests, "warmup_requests": args.warmup_requests,
                     "engine_runs": args.engine_runs, "log_level": args.log_level, "workers": 1,
                     "accel": worker_accel() and device == "cuda",
                     "service": "private redis-server, `imagegen serve`, one `imagegen worker` (child processes); "
                                "POST /generate?wait=, then GET of the first image's PNG; sequential requests",
                     "engine_in_worker": "change of the worker's sampling-seconds counter (GET /metrics) across "
                                         "each request: its engine steps, device work included",
                     "engine_direct": "BatchEngine built as the worker builds it, in the benchmark process before "
                                      "the service starts: add the job, step() until it finishes"},
        "service_ready_s": ready_s,
        "errors": len(errors),
        "error_examples": errors[:5],
        "figures": figures,
        "overhead": overhead,
        "samples_s": {"service": service_s, "engine_in_worker": in_worker_s, "engine_direct": direct},
    }
    write_result("latency", result, args.out, args.md, render.latency)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
