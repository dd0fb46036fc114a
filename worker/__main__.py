"""`python -m worker`: load the models, then serve the RQ queue with a batching worker.

Reads REDIS_URL (required) and the other settings from the environment (contract.settings for the
shared ones, worker.settings for WORKER_DEVICE, WORKER_MODELS, MAX_BATCH_IMAGES, WORKER_NAME,
WORKER_SHUTDOWN_GRACE, MAX_ATTEMPTS); flags override the worker's own.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time

from contract.settings import Settings
from model_store import ModelStore, ModelStoreError
from worker.settings import WorkerSettings

log = logging.getLogger("worker")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `python -m worker` (and of `imagegen worker`)."""
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                   help="where the models run; auto picks cuda when available (default: $WORKER_DEVICE, else auto)")
    p.add_argument("--models", nargs="+", metavar="M", default=None,
                   help="model refs (name or name@version) to load (default: $WORKER_MODELS, else every "
                        "generator in the store)")
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

    store = ModelStore(settings.model_store)
    try:
        device = resolve_device(args.device or worker_settings.worker_device)
        refs = generator_refs(store, args.models or worker_settings.models)
    except (ValueError, ModelStoreError) as e:
        print(f"python -m worker: error: {e}", file=sys.stderr)
        return 2
    generators = load_generators(store, refs, device)
    max_images = args.max_batch_images or worker_settings.max_batch_images
    engine = BatchEngine(generators, max_images, accel=accel_from_settings(worker_settings))
    started = time.perf_counter()
    engine.warm_up()
    log.info("warm-up (graph capture and a first step per model) took %.1f s", time.perf_counter() - started)
    name = args.name or worker_settings.worker_name or f"{socket.gethostname()}.{os.getpid()}"
    log.info("worker %s: loaded %s from %s onto %s; up to %d images per batch; queue %r", name,
             ", ".join(refs), store.root, device, max_images, settings.queue_name)
    worker = BatchWorker([settings.queue_name], engine, settings,
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
