"""What the worker spends per job outside the engine: taking it off the queue, starting its record,
progress, PNGs, the terminal transition, RQ's registries. On a GPU the engine's step for 256
one-image jobs takes a fraction of a second, so a few milliseconds of Redis round trips per job
decide whether the service keeps up with its engine (benchmark 3's 80% target).

N one-image jobs are submitted through the API's own submit path (in process, no HTTP, so that no
client competes for the CPU), then one batching worker, built as `python -m worker` builds it,
works the queue in burst mode. Per job: the wall time not spent in engine steps (the worker's own
sampling_seconds_total counter) and the Redis commands the whole run took (INFO's
total_commands_processed), which no machine's speed changes.

    python -m bench.bookkeeping --device cpu --jobs 512 --steps 1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import render
from bench.common import (
    REPO,
    add_common_arguments,
    environment,
    exit_on_sigterm,
    resolve_device,
    store_root,
    worker_engine,
    worker_generators,
    write_result,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.bookkeeping", description=__doc__.splitlines()[0])
    add_common_arguments(p)
    p.add_argument("--jobs", type=int, default=512, help="one-image jobs to run (default: 512)")
    p.add_argument("--steps", type=int, default=1,
                   help="DDIM steps per job (default: 1, so that the engine's share is small)")
    p.add_argument("--guidance-scale", type=float, default=3.0, help="CFG scale (default: 3)")
    p.add_argument("--max-batch-images", type=int, default=256, help="the worker's MAX_BATCH_IMAGES (default: 256)")
    return p.parse_args(argv)


def _shown(path: Path) -> str:
    """`path` relative to the checkout where it is inside it (the shipped store), else as it is."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _commands(redis: Any) -> int:
    return int(redis.info("stats")["total_commands_processed"])


def measure(args: argparse.Namespace, device: str, redis_url: str) -> dict[str, Any]:
    """Submit the jobs, run the worker until the queue is empty; the figures."""
    from redis import Redis

    from contract.jobs import JobStore
    from contract.queues import model_queue
    from contract.schema import GenerateRequest
    from contract.settings import Settings
    from service.deps import Backend
    from service.routers.jobs import submit
    from worker.main import BatchWorker
    from worker.metrics import METRICS_KEY

    root = store_root(args.model_store)
    settings = Settings(redis_url=redis_url, model_store=str(root), log_level="warning")
    generators = worker_generators(root, args.model, device)
    engine = worker_engine(generators, args.max_batch_images)
    ref, gen = next(iter(generators.items()))
    backend = Backend.open(settings)
    redis = Redis.from_url(redis_url)
    ids = [submit(backend, GenerateRequest(class_label=i % 10, num_images=1, sampler="ddim", steps=args.steps,
                                           guidance_scale=args.guidance_scale, seed=i, model=args.model),
                  None)["id"] for i in range(args.jobs)]
    worker = BatchWorker([model_queue(settings.queue_name, r) for r in generators], engine, settings,
                         name="bench-bookkeeping",
                         connection=Redis.from_url(redis_url), default_result_ttl=settings.result_ttl)
    commands = _commands(redis)
    started = time.perf_counter()
    worker.work(burst=True, logging_level="WARNING")
    wall = time.perf_counter() - started
    commands = _commands(redis) - commands - 1  # the INFO itself
    engine_s = float(redis.hget(METRICS_KEY, "sampling_seconds_total") or 0)
    statuses = [r["status"] if r else None for r in JobStore(redis, settings.result_ttl).get_many(ids)]
    done = statuses.count("succeeded")
    if done != args.jobs:
        raise SystemExit(f"bench.bookkeeping: {done} of {args.jobs} jobs succeeded: {sorted(set(map(str, statuses)))}")
    outside = wall - engine_s
    print(f"bench.bookkeeping: {args.jobs} jobs in {wall:.2f} s, {engine_s:.2f} s in engine steps: "
          f"{1e3 * outside / args.jobs:.2f} ms and {commands / args.jobs:.1f} Redis commands per job outside "
          "the engine", flush=True)
    return {"model": ref, "parameters": sum(p.numel() for p in gen.model.parameters()),
            "accel": bool(getattr(engine, "accel", False)) and device == "cuda", "jobs": args.jobs, "wall_s": wall,
            "engine_s": engine_s, "outside_engine_s": outside,
            "outside_engine_ms_per_job": 1e3 * outside / args.jobs, "redis_commands": commands,
            "redis_commands_per_job": commands / args.jobs, "jobs_per_s": args.jobs / wall}


def main(argv: list[str] | None = None) -> int:
    from service.redis_local import LocalRedis

    args = parse_args(argv)
    exit_on_sigterm()
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="bench-bookkeeping-") as tmp, LocalRedis(Path(tmp) / "redis") as redis:
        figures = measure(args, device, redis.url)
    result = {"benchmark": "bookkeeping", "environment": environment(device),
              "settings": {"model": figures.pop("model"), "parameters": figures.pop("parameters"),
                           "model_store": _shown(store_root(args.model_store)), "accel": figures.pop("accel"),
                           "steps": args.steps, "guidance_scale": args.guidance_scale,
                           "max_batch_images": args.max_batch_images,
                           "jobs": "one-image DDIM jobs, submitted in process through the API's submit, then one "
                                   "batching worker in burst mode"},
              "results": figures}
    write_result("bookkeeping", result, args.out, args.md, render.bookkeeping)
    return 0


if __name__ == "__main__":
    sys.exit(main())
