"""A worker started before its Redis (a compose stack coming up, a reboot) waits for it rather than
exiting, then works the queue; a worker asked to stop while Redis is away does not wait for it past
its grace. (A Redis that goes away under a running worker: tests/e2e/test_e2e_faults.py; SIGTERM and
then Redis gone, with a real worker process: test_worker_lifecycle.py.)"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from redis import Redis
from worker_process import queues, record, request, submit, wait_for

from contract.settings import Settings
from service.redis_local import LocalRedis
from worker.engine import BatchEngine
from worker.main import BatchWorker, StoppedWithoutRedis


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
        worker = BatchWorker(queues(), BatchEngine(generators), Settings(redis_url=server.url),
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


@pytest.mark.parametrize("busy", [True, False], ids=["with a job running", "idle"])
def test_a_worker_asked_to_stop_while_redis_is_away_exits_once_the_stop_is_due(tmp_path, generators, caplog, busy):
    server = LocalRedis(tmp_path / "redis").start()
    r = Redis.from_url(server.url)
    grace = 2.0
    job = submit(r, request(steps=1000, seed=6)) if busy else None
    signaled: list[float] = []

    def redis_goes_then_a_stop_comes() -> None:
        if job is not None:
            wait_for(lambda: record(r, job)["status"] == "running", 30, "the job to run")
        else:
            time.sleep(1.0)  # the worker idles, waiting for jobs
        server.stop()
        time.sleep(0.5)  # the worker is now retrying
        signaled.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGTERM)

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    thread = threading.Thread(target=redis_goes_then_a_stop_comes, daemon=True)
    try:
        worker = BatchWorker(queues(), BatchEngine(generators), Settings(redis_url=server.url),
                             connection=Redis.from_url(server.url), name="stopped-in-an-outage",
                             shutdown_grace=grace)
        thread.start()
        with pytest.raises(StoppedWithoutRedis):
            worker.work()
        took = time.monotonic() - signaled[0]
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
        server.stop()
    thread.join(timeout=10)
    lines = [rec.getMessage() for rec in caplog.records if "stopping without Redis" in rec.getMessage()]
    assert len(lines) == 1, lines
    if busy:
        # it waited its grace for Redis to come back, and no longer
        assert grace <= took <= grace + 1.5, took
        assert "grace ran out" in lines[0] and "1 jobs in flight are not handed back" in lines[0]
    else:
        assert took <= 1.5, took  # nothing to wait for
        assert "no job was in flight" in lines[0]
