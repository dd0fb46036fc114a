"""Benchmark 3, the service under load: N concurrent clients (an httpx async load generator on
loopback), each submitting one-image requests and waiting for each to end (POST /generate?wait=,
then long polls of GET /jobs/{id}?wait= if need be, then reading the PNG), bounded in count and
time. Per N: throughput in images/s, latency p50/p95/p99, the mean batch the worker formed (from
GET /metrics), and the throughput as a fraction of the engine's own, measured directly in this
process at the same settings with N one-image jobs in one batch (before the service starts, so that
nothing shares the device).

    python -m bench.load                         # on the device: 1, 8, 64, 256 clients
    python -m bench.load --clients 1,4 --steps 3 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
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
    timed_runs,
    worker_accel,
    worker_engine,
    worker_generators,
    write_result,
)
from bench.stack import add_service_arguments, aworker_counters, counters_delta, running_service


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0])
    add_common_arguments(p)
    p.add_argument("--clients", default="1,8,64,256", help="comma-separated concurrency levels (default: 1,8,64,256)")
    p.add_argument("--rounds", type=int, default=4, help="requests per client per level (default: 4)")
    p.add_argument("--min-requests", type=int, default=32, help="at least this many requests per level (default: 32)")
    p.add_argument("--level-seconds", type=float, default=60.0,
                   help="no new request after this many seconds of a level (default: 60)")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps (default: 50)")
    p.add_argument("--guidance-scale", type=float, default=3.0, help="CFG scale (default: 3)")
    p.add_argument("--max-batch-images", type=int, default=None,
                   help="the worker's MAX_BATCH_IMAGES (default: the largest --clients level)")
    p.add_argument("--request-timeout", type=float, default=None,
                   help="seconds a request may take, POST to PNG, before it counts as an error (default: twice "
                        "--wait; on a CPU, 256 one-image jobs in one batch take minutes)")
    p.add_argument("--warmup-requests", type=int, default=8, help="untimed requests first, 8 at a time (default: 8)")
    p.add_argument("--engine-min-seconds", type=float, default=2.0,
                   help="time the direct engine at each level for at least this long (default: 2)")
    add_service_arguments(p)
    return p.parse_args(argv)


def api_request(args: argparse.Namespace, i: int) -> dict[str, Any]:
    return {"class_label": i % 10, "num_images": 1, "sampler": "ddim", "steps": args.steps, "guidance": "cfg",
            "guidance_scale": args.guidance_scale, "seed": 10_000 + i}


def direct_engine(args: argparse.Namespace, device: str, levels: list[int],
                  max_batch: int) -> dict[int, dict[str, Any]]:
    """Images/s of the engine with min(N, max_batch) one-image jobs in one batch, per level N."""
    import torch

    generators = worker_generators(store_root(args.model_store), args.model, device)
    ref = next(iter(generators))
    engine = worker_engine(generators, max_batch)
    jobs = itertools.count()
    out = {}
    for n in levels:
        batch = min(n, max_batch)

        def run(batch: int = batch, engine: Any = engine) -> None:
            base = next(jobs) * batch
            run_jobs(engine, ref, {f"direct-{base + k}": engine_request(
                (base + k) % 10, 1, 10_000 + base + k, steps=args.steps, guidance_scale=args.guidance_scale)
                for k in range(batch)})

        runs = timed_runs(run, device, warmup=1, min_seconds=args.engine_min_seconds)
        median = sorted(runs)[len(runs) // 2]
        out[n] = {"batch": batch, "images_per_s": batch / median, "median_s": median, "runs_s": runs}
        print(f"bench.load: direct engine, batch {batch}: {batch / median:.2f} images/s", flush=True)
    del engine, generators
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


async def one_job(http: httpx.AsyncClient, body: dict[str, Any], args: argparse.Namespace) -> None:
    r = await http.post("/generate", params={"wait": args.wait}, json=body)
    if r.status_code not in (200, 202):
        raise RuntimeError(f"POST /generate answered {r.status_code}: {r.text[:200]}")
    doc = r.json()
    limit = args.request_timeout or 2 * args.wait
    deadline = time.monotonic() + limit
    while doc["status"] not in TERMINAL:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"job {doc['id']} still {doc['status']} after {limit:g} s")
        # a long poll: the answer comes as the job ends (rapid polls would take the CPU from a CPU worker)
        doc = (await http.get(f"/jobs/{doc['id']}", params={"wait": min(args.wait, left)})).json()
    if doc["status"] != "succeeded":
        raise RuntimeError(f"job {doc['id']} ended {doc['status']}: {doc.get('error')}")
    png = await http.get(doc["images"][0]["url"])
    if png.status_code != 200 or not png.content.startswith(PNG_MAGIC):
        raise RuntimeError(f"{doc['images'][0]['url']} answered {png.status_code}, not a PNG")


async def level(url: str, clients: int, total: int, first_id: int, args: argparse.Namespace) -> dict[str, Any]:
    """`clients` concurrent clients sharing `total` requests; no new one after --level-seconds."""
    ids = itertools.count(first_id)
    latencies: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
    async with httpx.AsyncClient(base_url=url, timeout=args.wait + 30, limits=limits) as http:
        before = await aworker_counters(http)
        started = time.perf_counter()
        stop_at = time.monotonic() + args.level_seconds

        async def client() -> None:
            while (i := next(ids)) < first_id + total and time.monotonic() < stop_at:
                t0 = time.perf_counter()
                try:
                    await one_job(http, api_request(args, i), args)
                    latencies.append(time.perf_counter() - t0)
                except Exception as e:  # noqa: BLE001 - counted and shown, the level goes on
                    errors.append(f"{type(e).__name__}: {e}"[:300])

        timed_out = False
        try:
            await asyncio.wait_for(asyncio.gather(*(client() for _ in range(clients))),
                                   timeout=args.level_seconds + (args.request_timeout or 2 * args.wait) + 60)
        except TimeoutError:  # the requests in flight are dropped; what finished still counts
            timed_out = True
        wall = time.perf_counter() - started
        delta = counters_delta(before, await aworker_counters(http))
    return {"clients": clients, "requests_planned": total, "completed": len(latencies), "errors": len(errors),
            "error_examples": errors[:5], "wall_s": wall, "images_per_s": len(latencies) / wall,
            "latency_s": summary(latencies), "mean_batch_images": delta["mean_batch_images"],
            "timed_out": timed_out, "worker": delta}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    device = resolve_device(args.device)
    env = environment(device)
    levels = [int(c) for c in args.clients.split(",") if c.strip()]
    max_batch = args.max_batch_images or max(levels)
    root = store_root(args.model_store)
    engine = direct_engine(args, device, levels, max_batch)

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        workdir = args.workdir or Path(tmp)
        with running_service(root, workdir, device, max_batch, args.log_level, args.ready_timeout) as svc:
            print(f"bench.load: service ready at {svc.url}; worker MAX_BATCH_IMAGES {max_batch}", flush=True)
            if args.warmup_requests:
                asyncio.run(level(svc.url, min(8, args.warmup_requests), args.warmup_requests, 0, args))
            first_id = 1_000_000
            for clients in levels:
                total = max(clients * args.rounds, args.min_requests)
                row = asyncio.run(level(svc.url, clients, total, first_id, args))
                first_id += total
                own = engine[clients]["images_per_s"]
                row["engine_images_per_s"] = own
                row["engine_batch"] = engine[clients]["batch"]
                row["fraction_of_engine"] = row["images_per_s"] / own if own else None
                rows.append(row)
                lat = row["latency_s"]
                print(f"bench.load: {clients:4d} clients: {row['images_per_s']:.2f} images/s "
                      f"({100 * row['fraction_of_engine']:.0f}% of the engine's {own:.2f}), p50 "
                      f"{lat.get('p50', float('nan')) * 1e3:.0f} ms, p99 {lat.get('p99', float('nan')) * 1e3:.0f} ms, "
                      f"mean batch {row['mean_batch_images'] or 0:.1f}, {row['errors']} errors", flush=True)
            svc.children.check_alive()

    result = {
        "benchmark": "load",
        "environment": env,
        "settings": {"model": args.model, "request": api_request(args, 0) | {"class_label": "i % 10", "seed": "i"},
                     "clients": levels, "rounds": args.rounds, "min_requests": args.min_requests,
                     "level_seconds": args.level_seconds, "wait": args.wait,
                     "request_timeout": args.request_timeout or 2 * args.wait,
                     "max_batch_images": max_batch, "workers": 1, "log_level": args.log_level,
                     "accel": worker_accel() and device == "cuda",
                     "client": "httpx.AsyncClient on loopback; per request POST /generate?wait=, long polls of GET "
                               "/jobs/{id}?wait= if the wait ran out, GET of the PNG; latency from POST to the PNG "
                               "read",
                     "engine": "BatchEngine built as the worker builds it, in the benchmark process before the "
                               "service starts: min(N, max_batch_images) one-image jobs added at once, step() "
                               "until all finish"},
        "results": rows,
    }
    write_result("load", result, args.out, args.md, render.load)
    return 0 if all(r["errors"] == 0 and not r["timed_out"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
