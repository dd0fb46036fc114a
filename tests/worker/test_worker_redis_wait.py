"""A worker started before its Redis (a compose stack coming up, a reboot) waits for it rather than
exiting, then works the queue. (A Redis that goes away under a running worker: tests/e2e/test_e2e_faults.py.)"""

from __future__ import annotations

import signal
import threading
import time

from redis import Redis
from worker_process import record, request, submit

from contract.settings import Settings
from service.redis_local import LocalRedis
from worker.engine import BatchEngine
from worker.main import BatchWorker


def test_a_worker_started_before_redis_waits_for_it_then_runs_the_queue(tmp_path, generators):
    server = LocalRedis(tmp_path / "redis")  # a port, nothing listening yet
    job: list[str] = []

    def redis_comes_up() -> None:
        time.sleep(1.5)  # between the worker's first tries (backoff 1 s, then 2 s)
        server.start()
        job.append(submit(Redis.from_url(server.url), request(steps=3, seed=4)))

    thread = threading.Thread(target=redis_comes_up, daemon=True)
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        thread.start()
        worker = BatchWorker(["imagegen"], BatchEngine(generators), Settings(redis_url=server.url),
                             connection=Redis.from_url(server.url), name="early-bird")
        started = time.monotonic()
        assert worker.work(burst=True)
        assert time.monotonic() - started >= 1.5
        thread.join(timeout=10)
        assert record(Redis.from_url(server.url), job[0])["status"] == "succeeded"
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
        server.stop()
