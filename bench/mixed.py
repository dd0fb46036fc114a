"""Benchmark 4, mixed load: continuous (step-level) against static batching, on one seeded trace of
Poisson arrivals, 80% short requests (DDIM 20 steps) and 20% long ones (DDPM 250 steps): latency
p50/p95 of the short requests (and of the long ones) under each.

The worker has no static mode to switch to, so both policies drive the engine the worker runs
(`BatchEngine`, real model evaluations) directly, against a real wall clock: a request counts as
arrived once the clock passes its arrival time, and its latency runs from then until the step that
finishes it. Continuous: every arrived request joins at the next step (as the worker does). Static:
arrived requests join only when the engine is empty, and then all together (a new batch only when
the previous one is done). The arrival rate is set from the engine's measured step time
(--arrivals-per-step), unless --rate gives it.

    python -m bench.mixed                          # on the device
    python -m bench.mixed --requests 12 --short-steps 2 --long-steps 6
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import deque
from typing import Any

from bench import render
from bench.common import (
    add_common_arguments,
    engine_request,
    environment,
    resolve_device,
    run_jobs,
    store_root,
    summary,
    sync,
    worker_engine,
    worker_generators,
    write_result,
)

MODES = ("continuous", "static")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.mixed", description=__doc__.splitlines()[0])
    add_common_arguments(p)
    p.add_argument("--requests", type=int, default=300, help="requests in the trace (default: 300)")
    p.add_argument("--short-fraction", type=float, default=0.8, help="share of short requests (default: 0.8)")
    p.add_argument("--short-steps", type=int, default=20, help="DDIM steps of a short request (default: 20)")
    p.add_argument("--long-steps", type=int, default=250, help="DDPM steps of a long request (default: 250)")
    p.add_argument("--guidance-scale", type=float, default=3.0, help="CFG scale of every request (default: 3)")
    p.add_argument("--rate", type=float, default=None, help="arrivals per second (default: from --arrivals-per-step)")
    p.add_argument("--arrivals-per-step", type=float, default=0.1,
                   help="mean arrivals per engine step time measured at --calibration-batch (default: 0.1)")
    p.add_argument("--calibration-batch", type=int, default=8,
                   help="images of the step-time measurement, about the mean number in flight (default: 8)")
    p.add_argument("--max-batch-images", type=int, default=256, help="the engine's MAX_BATCH_IMAGES (default: 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the arrival trace (default: 0)")
    p.add_argument("--timeout", type=float, default=240.0,
                   help="most seconds per policy; requests unfinished by then are reported as such (default: 240)")
    return p.parse_args(argv)


def make_trace(n: int, rate: float, short_fraction: float, seed: int) -> list[dict[str, Any]]:
    """Poisson arrivals: exponential gaps of mean 1/rate; each request short with probability short_fraction."""
    rng = random.Random(seed)
    t, trace = 0.0, []
    for i in range(n):
        t += rng.expovariate(rate)
        trace.append({"id": i, "arrival": t, "kind": "short" if rng.random() < short_fraction else "long",
                      "class_label": rng.randrange(10)})
    return trace


def request_of(args: argparse.Namespace, item: dict[str, Any]) -> dict[str, Any]:
    short = item["kind"] == "short"
    return engine_request(item["class_label"], 1, 20_000 + item["id"], sampler="ddim" if short else "ddpm",
                          steps=args.short_steps if short else args.long_steps, guidance_scale=args.guidance_scale)


def step_time(engine: Any, ref: str, batch: int, guidance_scale: float, device: str) -> float:
    """Seconds per engine step over `batch` DDIM images with CFG: the wall time of a whole job over its
    steps (on CUDA the engine does not wait for the device after each step, so a single step's
    time would be the host's alone)."""
    request = engine_request(0, batch, 7, steps=12, guidance_scale=guidance_scale)
    run_jobs(engine, ref, {"calibrate-warm": request})
    sync(device)
    t0 = time.perf_counter()
    _, reports = run_jobs(engine, ref, {"calibrate": request})
    sync(device)
    return (time.perf_counter() - t0) / len(reports)


def simulate(engine: Any, ref: str, trace: list[dict[str, Any]], mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run the trace through the engine under one batching policy against the wall clock."""
    waiting = deque(trace)
    kinds = {f"{mode}-{item['id']}": item for item in trace}
    latency: dict[str, list[float]] = {"short": [], "long": []}
    batch_images: list[int] = []
    steps = 0
    start = time.perf_counter()
    while waiting or engine.jobs():
        now = time.perf_counter() - start
        if now > args.timeout:
            break
        if mode == "continuous" or not engine.jobs():
            while waiting and waiting[0]["arrival"] <= now and engine.capacity() >= 1:
                item = waiting.popleft()
                engine.add(f"{mode}-{item['id']}", ref, request_of(args, item))
        if not engine.jobs():
            time.sleep(max(0.0, min(waiting[0]["arrival"] - now, args.timeout - now)))
            continue
        report = engine.step()
        steps += 1
        batch_images.extend(report.batch_images)
        done = time.perf_counter() - start
        for job_id in report.finished:
            item = kinds[job_id]
            latency[item["kind"]].append(done - item["arrival"])
    unfinished = engine.jobs()
    engine.cancel(unfinished)
    return {"mode": mode, "wall_s": time.perf_counter() - start, "steps": steps,
            "mean_batch_images": sum(batch_images) / len(batch_images) if batch_images else None,
            "completed": {k: len(v) for k, v in latency.items()}, "unfinished": len(unfinished) + len(waiting),
            "short_latency_s": summary(latency["short"]), "long_latency_s": summary(latency["long"]),
            "samples_s": latency}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    env = environment(device)
    generators = worker_generators(store_root(args.model_store), args.model, device)
    ref = next(iter(generators))
    engine = worker_engine(generators, args.max_batch_images)
    t_step = step_time(engine, ref, args.calibration_batch, args.guidance_scale, device)
    rate = args.rate or args.arrivals_per_step / t_step
    trace = make_trace(args.requests, rate, args.short_fraction, args.seed)
    print(f"bench.mixed: {ref} on {device}; step {t_step * 1e3:.1f} ms at batch {args.calibration_batch}; "
          f"{rate:.2f} arrivals/s over {trace[-1]['arrival']:.1f} s", flush=True)
    runs = {}
    for mode in MODES:
        runs[mode] = simulate(engine, ref, trace, mode, args)
        s = runs[mode]["short_latency_s"]
        print(f"bench.mixed: {mode:10s} short p50 {s.get('p50', float('nan')) * 1e3:.0f} ms, p95 "
              f"{s.get('p95', float('nan')) * 1e3:.0f} ms; mean batch {runs[mode]['mean_batch_images'] or 0:.1f}; "
              f"{runs[mode]['unfinished']} unfinished", flush=True)
    c, s = runs["continuous"]["short_latency_s"], runs["static"]["short_latency_s"]
    ratio = {q: s[q] / c[q] if c.get(q) and s.get(q) else None for q in ("p50", "p95")}
    result = {
        "benchmark": "mixed",
        "environment": env,
        "settings": {"model": ref, "requests": args.requests, "short_fraction": args.short_fraction,
                     "short": f"ddim {args.short_steps} steps", "long": f"ddpm {args.long_steps} steps",
                     "guidance_scale": args.guidance_scale, "images_per_request": 1,
                     "rate_per_s": rate, "arrivals_per_step": None if args.rate else args.arrivals_per_step,
                     "step_s_at_calibration_batch": t_step, "calibration_batch": args.calibration_batch,
                     "max_batch_images": args.max_batch_images, "trace_seed": args.seed,
                     "accel": engine.accel and device == "cuda",
                     "trace_span_s": trace[-1]["arrival"], "timeout_s": args.timeout,
                     "method": "engine-level simulation: BatchEngine as the worker builds it, real model "
                               "evaluations, real wall clock; arrivals admitted once the clock passes them. "
                               "continuous: every arrived request joins at the next step; static: arrived "
                               "requests join only when the engine is empty. The worker has no static mode, so "
                               "the service itself is not in this measurement."},
        "runs": runs,
        "static_over_continuous_short": ratio,
    }
    write_result("mixed", result, args.out, args.md, render.mixed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
