"""Many models on one worker: how long a short job of one model waits behind a burst of another's, and
what a model swap costs under a memory budget (docs/models.md).

Two measurements, each with one batching worker built as `python -m worker` builds it (in process,
in burst mode) and jobs submitted through the API's own submit path, on a private Redis:

1. Burst: both models loaded. --burst-jobs one-image jobs of model A (--burst-steps DDIM steps) are
   queued; once the worker has started them, one short job of model B (--short-steps) arrives. Its
   wait (queued to started) and latency (queued to finished), beside the burst's span and the wait a
   single first-in-first-out queue would have given it (until the last of A's jobs started).
2. Swap: --swap-jobs one-image jobs alternating between A and B, run with a budget that holds one
   of them (each job then loads its model in place of the other) and without one (both loaded): the
   wall time of each run, the loads and evictions the worker counted, the seconds its loads took,
   and the cost of one swap, (wall with the budget - wall without) / loads.

    python -m bench.models --device cpu --out docs/benchmarks/models-cpu.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import render
from bench.common import (
    add_common_arguments,
    environment,
    exit_on_sigterm,
    resolve_device,
    store_root,
    summary,
    worker_engine,
    worker_generators,
    write_result,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.models", description=__doc__.splitlines()[0])
    add_common_arguments(p)
    p.set_defaults(model="fashion-mnist@2")
    p.add_argument("--other-model", default="fashion-mnist@1",
                   help="model B, whose short job arrives during A's burst (default: fashion-mnist@1)")
    p.add_argument("--burst-jobs", type=int, default=16, help="one-image jobs of model A in the burst (default: 16)")
    p.add_argument("--burst-steps", type=int, default=50, help="DDIM steps of each burst job (default: 50)")
    p.add_argument("--short-steps", type=int, default=10, help="DDIM steps of B's short job (default: 10)")
    p.add_argument("--swap-jobs", type=int, default=8, help="jobs alternating between A and B (default: 8)")
    p.add_argument("--swap-steps", type=int, default=10, help="DDIM steps of each alternating job (default: 10)")
    p.add_argument("--max-batch-images", type=int, default=4, help="the worker's MAX_BATCH_IMAGES (default: 4)")
    return p.parse_args(argv)


def _when(record: dict[str, Any], field: str) -> float:
    return datetime.fromisoformat(record[field].replace("Z", "+00:00")).timestamp()


class Stack:
    """A private Redis, the API's submit path and a worker built as `python -m worker` builds it."""

    def __init__(self, args: argparse.Namespace, device: str, redis_url: str) -> None:
        from redis import Redis

        from contract.settings import Settings
        from service.deps import Backend

        self.args, self.device = args, device
        self.root = store_root(args.model_store)
        self.settings = Settings(redis_url=redis_url, model_store=str(self.root), log_level="warning")
        self.backend = Backend.open(self.settings)
        self.redis = Redis.from_url(redis_url)
        self.refs = [self.backend.store.resolve(m).ref for m in (args.model, args.other_model)]

    def submit(self, ref: str, steps: int, seed: int) -> str:
        from contract.schema import GenerateRequest
        from service.routers.jobs import submit

        return submit(self.backend, GenerateRequest(class_label=seed % 10, num_images=1, sampler="ddim", steps=steps,
                                                    guidance_scale=3.0, seed=seed, model=ref), None)["id"]

    def records(self, ids: list[str]) -> list[dict[str, Any]]:
        return self.backend.jobs.get_many(ids)

    def work(self, budget_bytes: int | None) -> float:
        """One worker serving both models works the queues until they are empty; its wall seconds."""
        from redis import Redis

        from contract.queues import model_queue
        from model_store import ModelStore
        from worker.accel import AccelConfig
        from worker.engine import BatchEngine
        from worker.main import BatchWorker
        from worker.pool import ModelPool

        store = ModelStore(self.root)
        if budget_bytes is None:
            engine = worker_engine(worker_generators(self.root, self.refs[0], self.device)
                                   | worker_generators(self.root, self.refs[1], self.device),
                                   self.args.max_batch_images)
        else:
            accel = AccelConfig() if self.device == "cuda" else None
            engine = BatchEngine({}, self.args.max_batch_images, accel=accel)
        worker = BatchWorker([model_queue(self.settings.queue_name, ref) for ref in self.refs], engine, self.settings,
                             pool=ModelPool(engine, store, self.device, budget_bytes), name="bench-models",
                             connection=Redis.from_url(self.settings.redis_url),
                             default_result_ttl=self.settings.result_ttl)
        started = time.perf_counter()
        worker.work(burst=True, logging_level="WARNING")
        return time.perf_counter() - started

    def counters(self) -> dict[str, float]:
        from worker.metrics import METRICS_KEY

        return {k.decode(): float(v) for k, v in self.redis.hgetall(METRICS_KEY).items()}


def measure_burst(stack: Stack) -> dict[str, Any]:
    """A's burst queued, the worker started, B's short job submitted once A's first jobs run."""
    args = stack.args
    a, b = stack.refs
    burst = [stack.submit(a, args.burst_steps, seed=i) for i in range(args.burst_jobs)]
    short: list[str] = []

    def short_job_arrives() -> None:
        # mid-burst: once the worker has started its first batch of A's jobs
        while sum(r["status"] != "queued" for r in stack.records(burst)) < min(args.max_batch_images, len(burst)):
            time.sleep(0.01)
        short.append(stack.submit(b, args.short_steps, seed=10_000))

    arrival = threading.Thread(target=short_job_arrives, daemon=True)
    arrival.start()
    wall = stack.work(None)
    arrival.join(timeout=60)
    records = stack.records(burst + short)
    if any(r["status"] != "succeeded" for r in records):
        raise SystemExit(f"bench.models: burst run: {sorted({r['status'] for r in records})}")
    *a_records, b_record = records
    queued, started = _when(b_record, "created_at"), _when(b_record, "started_at")
    a_starts = [_when(r, "started_at") for r in a_records]
    return {"wall_s": wall, "short_wait_s": started - queued,
            "short_latency_s": _when(b_record, "finished_at") - queued,
            "fifo_wait_estimate_s": max(a_starts) - queued,
            "burst_span_s": max(_when(r, "finished_at") for r in a_records) - min(a_starts),
            "burst_jobs_started_after_short_queued_before_it": sum(queued < t < started for t in a_starts)}


def measure_swap(stack: Stack, budget_bytes: int | None) -> dict[str, Any]:
    """Jobs alternating between A and B, queued at once, then one worker in burst mode."""
    args = stack.args
    stack.redis.flushall()
    ids = [stack.submit(stack.refs[i % 2], args.swap_steps, seed=100 + i) for i in range(args.swap_jobs)]
    wall = stack.work(budget_bytes)
    records = stack.records(ids)
    if any(r["status"] != "succeeded" for r in records):
        raise SystemExit(f"bench.models: swap run: {sorted({r['status'] for r in records})}")
    counters = stack.counters()

    def per_model(what: str) -> dict[str, float]:
        return {ref: counters.get(f"model_{what}_total:{ref}", 0.0) for ref in stack.refs}

    latencies = [_when(r, "finished_at") - _when(r, "created_at") for r in records]
    return {"budget_bytes": budget_bytes, "wall_s": wall, "latency_s": summary(latencies),
            "loads": per_model("loads"), "evictions": per_model("evictions"),
            "load_seconds": per_model("load_seconds")}


def measure(args: argparse.Namespace, device: str, redis_url: str) -> dict[str, Any]:
    from worker.models import estimated_bytes
    from worker.pool import size_with_reserve

    stack = Stack(args, device, redis_url)
    sizes = {ref: size_with_reserve(estimated_bytes(stack.backend.store, ref)) for ref in stack.refs}
    burst = measure_burst(stack)
    print(f"bench.models: B's short job waited {burst['short_wait_s']:.2f} s behind A's burst of {args.burst_jobs} "
          f"(a FIFO queue: about {burst['fifo_wait_estimate_s']:.2f} s)", flush=True)
    budget = int(1.5 * max(sizes.values()))  # room for one of the two
    both = measure_swap(stack, None)
    one = measure_swap(stack, budget)
    loads = sum(one["loads"].values())
    swap_cost = (one["wall_s"] - both["wall_s"]) / loads if loads else None
    print(f"bench.models: {args.swap_jobs} alternating jobs in {both['wall_s']:.2f} s with both loaded, "
          f"{one['wall_s']:.2f} s with room for one ({loads:.0f} loads)", flush=True)
    return {"models": stack.refs, "sizes_bytes": sizes, "burst": burst,
            "swap": {"both_loaded": both, "room_for_one": one, "seconds_per_swap": swap_cost,
                     "mean_load_s": sum(one["load_seconds"].values()) / loads if loads else None}}


def main(argv: list[str] | None = None) -> int:
    from service.redis_local import LocalRedis

    args = parse_args(argv)
    exit_on_sigterm()
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp, LocalRedis(Path(tmp) / "redis") as redis:
        figures = measure(args, device, redis.url)
    result = {"benchmark": "models", "environment": environment(device),
              "settings": {"models": figures.pop("models"), "sizes_bytes": figures.pop("sizes_bytes"),
                           "burst_jobs": args.burst_jobs, "burst_steps": args.burst_steps,
                           "short_steps": args.short_steps, "swap_jobs": args.swap_jobs,
                           "swap_steps": args.swap_steps, "max_batch_images": args.max_batch_images,
                           "jobs": "one-image DDIM jobs with CFG 3, submitted in process through the API's submit, "
                                   "then one batching worker serving both models, in burst mode"},
              "results": figures}
    write_result("models", result, args.out, args.md, render.models)
    return 0


if __name__ == "__main__":
    sys.exit(main())
