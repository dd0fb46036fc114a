"""`python -m worker`: serve the queues of its models with a batching worker.

Reads REDIS_URL (required) and the other settings from the environment (contract.settings for the
shared ones, worker.settings for WORKER_DEVICE, WORKER_MODELS, WORKER_MODEL_BUDGET_MB,
MAX_BATCH_IMAGES, WORKER_NAME, WORKER_SHUTDOWN_GRACE, MAX_ATTEMPTS); flags override the worker's own.
Without a budget every model is loaded before the first job, as before; with one, none is: each
loads when a job needs it (worker.pool).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time

from contract.queues import model_queue
from contract.settings import Settings
from model_store import ModelStore, ModelStoreError
from worker.settings import WorkerSettings

log = logging.getLogger("worker")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `python -m worker` (and of `imagegen worker`)."""
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                   help="where the models run; auto picks cuda when available (default: $WORKER_DEVICE, else auto)")
    p.add_argument("--models", nargs="+", metavar="M", default=None,
                   help="model refs (name or name@version) it may serve (default: $WORKER_MODELS, else every "
                        "generator in the store)")
    p.add_argument("--model-budget-mb", type=float, default=None, metavar="MIB",
                   help="MiB of device memory its loaded models may take; they then load on demand, least recently "
                        "used evicted (default: $WORKER_MODEL_BUDGET_MB, else 0: no limit, all loaded at start)")
    p.add_argument("--max-batch-images", type=int, default=None, metavar="N",
                   help="most images in flight at once (default: $MAX_BATCH_IMAGES, else 64)")
    p.add_argument("--name", default=None, help="RQ worker name (default: $WORKER_NAME, else hostname.pid)")
    p.add_argument("--burst", action="store_true",
                   help="exit once the queue is empty and no job runs, instead of waiting for more")


def run(args: argparse.Namespace) -> int:
    """Load the models and work the queue until stopped; the exit status."""
    settings, worker_settings = Settings(), WorkerSettings()
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from redis import Redis

    from worker.accel import accel_from_settings
    from worker.engine import BatchEngine
    from worker.main import BatchWorker, StoppedWithoutRedis
    from worker.models import generator_refs, load_generators, resolve_device
    from worker.pool import ModelPool

    store = ModelStore(settings.model_store)
    try:
        device = resolve_device(args.device or worker_settings.worker_device)
        refs = generator_refs(store, args.models or worker_settings.models)
    except (ValueError, ModelStoreError) as e:
        print(f"python -m worker: error: {e}", file=sys.stderr)
        return 2
    max_images = args.max_batch_images or worker_settings.max_batch_images
    budget_mb = worker_settings.worker_model_budget_mb if args.model_budget_mb is None else args.model_budget_mb
    budget = int(budget_mb * 2**20) if budget_mb > 0 else None
    engine = BatchEngine(load_generators(store, refs, device) if budget is None else {}, max_images,
                         accel=accel_from_settings(worker_settings))
    started = time.perf_counter()
    engine.warm_up()
    if budget is None:
        log.info("warm-up (graph capture and a first step per model) took %.1f s", time.perf_counter() - started)
    pool = ModelPool(engine, store, device, budget)
    name = args.name or worker_settings.worker_name or f"{socket.gethostname()}.{os.getpid()}"
    log.info("worker %s: %s %s from %s onto %s; up to %d images per batch; queues %s", name,
             "loaded" if budget is None else f"serves on demand, within {budget_mb:g} MiB,", ", ".join(refs),
             store.root, device, max_images, ", ".join(model_queue(settings.queue_name, ref) for ref in refs))
    _warn_too_large(pool, refs)
    worker = BatchWorker([model_queue(settings.queue_name, ref) for ref in refs], engine, settings, pool=pool,
                         shutdown_grace=worker_settings.worker_shutdown_grace,
                         max_attempts=worker_settings.max_attempts, name=name,
                         connection=Redis.from_url(settings.redis_url, socket_connect_timeout=5),
                         default_result_ttl=settings.result_ttl)
    try:
        worker.work(burst=args.burst, logging_level=settings.log_level.upper())
    except StoppedWithoutRedis:  # said in one line by the worker; its jobs are left for the recovery
        return 1
    log.info("worker %s: stopped", name)
    return 0


def _warn_too_large(pool, refs: list[str]) -> None:  # noqa: ANN001 - a worker.pool.ModelPool (torch, imported late)
    """Say at start which models this worker will refuse: their jobs fail at once here."""
    if pool.budget_bytes is None:
        return
    for ref in refs:
        try:
            size = pool.size(ref)
        except Exception as e:  # noqa: BLE001 - the first job of it says so again, and fails
            log.warning("%s: cannot tell its size (%s); its jobs will fail here", ref, e)
            continue
        if size > pool.budget_bytes:
            log.warning("%s needs %.1f MiB, more than WORKER_MODEL_BUDGET_MB (%.1f MiB): its jobs will fail here; "
                        "leave it out of WORKER_MODELS, or raise the budget", ref, size / 2**20,
                        pool.budget_bytes / 2**20)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
