"""A real, long-running `python -m worker`: it registers with RQ, lets a short job overtake a long
one, cancels a running job at its next step, and on SIGTERM finishes or hands back its jobs and
exits 0; asked to stop while Redis is away, it exits (1) once its grace has run out, and its job
runs again on another worker once Redis is back."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from redis import Redis
from rq import Worker
from rq.job import JobStatus as RQStatus
from worker_process import queue_of, queues, record, request, rq_status, submit, wait_ended, wait_for, worker_process

from contract.jobs import JobStore
from service.redis_local import LocalRedis

# a worker process each (torch import and model load: several seconds on the busy 2-core machine)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def running_at_step(r: Redis, job_id: str, step: int):
    def check():
        rec = record(r, job_id)
        return rec["status"] == "running" and (rec["progress"] or {}).get("step", 0) >= step and rec
    return check


def test_a_short_job_overtakes_a_long_one_and_a_cancel_stops_it_at_the_next_step(redis_url, tiny_store_root,
                                                                                 tmp_path):
    r = Redis.from_url(redis_url)
    with worker_process(redis_url, tiny_store_root, tmp_path / "worker.log") as proc:
        # registered: what the API's /readyz and `rq info` look for
        workers = wait_for(lambda: Worker.all(connection=r), 60, "the worker to register", proc)
        # one queue per generator of the store, in its order
        assert workers[0].queue_names() == queues()

        long = submit(r, request(steps=1000, seed=1))
        wait_for(running_at_step(r, long, 1), 30, "the long job to run", proc)
        short = submit(r, request(steps=5, seed=2, class_label=4))
        ended = wait_ended(r, [short], 30, proc)[short]
        assert ended["status"] == "succeeded" and ended["progress"] == {"step": 5, "total": 5}
        long_now = record(r, long)
        assert long_now["status"] == "running" and long_now["progress"]["step"] < 1000
        # the worker writes the job's record first and RQ's view right after (worker.main._end):
        # a poll can land between the two
        wait_for(lambda: rq_status(r, short) == RQStatus.FINISHED, 10, "RQ to mark the short job finished", proc)
        assert rq_status(r, long) == RQStatus.STARTED

        step_at_cancel = record(r, long)["progress"]["step"]
        assert JobStore(r).cancel(long) == "running"
        canceled = wait_ended(r, [long], 10, proc)[long]
        assert canceled["status"] == "canceled"
        # one step takes about 10 ms here, and progress is written every 0.5 s at most, so the
        # job stopped well before its end, within a few steps of the cancel
        assert step_at_cancel <= canceled["progress"]["step"] < 1000
        queue = queue_of(r)
        wait_for(lambda: rq_status(r, long) == RQStatus.CANCELED, 10, "RQ to mark the long job canceled", proc)
        assert queue.canceled_job_registry.get_job_ids() == [long]
        assert queue.started_job_registry.get_job_ids() == []

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert Worker.all(connection=r) == []


def test_sigterm_finishes_what_it_can_hands_back_the_rest_and_exits_0(redis_url, tiny_store_root, tmp_path):
    r = Redis.from_url(redis_url)
    with worker_process(redis_url, tiny_store_root, tmp_path / "worker.log", WORKER_SHUTDOWN_GRACE="5") as proc:
        # Heun makes two model evaluations a step: 1,999 in all, well past the grace even where
        # a step takes only a few ms (500 DDIM steps once ended within it on a fast machine)
        long = submit(r, request(sampler="heun", steps=1000, seed=1))
        short = submit(r, request(steps=60, seed=2))
        wait_for(running_at_step(r, long, 0), 60, "the long job to run", proc)
        wait_for(running_at_step(r, short, 0), 30, "the short job to run", proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, (tmp_path / "worker.log").read_text()[-3000:]

    queue = queue_of(r)
    # handed back, first in line for the next worker
    handed_back = record(r, long)
    assert handed_back["status"] == "queued" and handed_back["progress"] is None
    assert rq_status(r, long) == RQStatus.QUEUED and queue.get_job_ids()[0] == long
    # 60 steps (about 2 s here) finish within the grace; on a very busy machine they go back too
    ended = record(r, short)
    assert ended["status"] in ("succeeded", "queued")
    assert rq_status(r, short) == {"succeeded": RQStatus.FINISHED, "queued": RQStatus.QUEUED}[ended["status"]]
    assert queue.started_job_registry.get_job_ids() == []
    assert Worker.all(connection=r) == []


def test_a_stop_wins_over_a_redis_that_went_away_and_the_job_runs_again_elsewhere(tmp_path, tiny_store_root):
    # what `docker compose down` or a scale-down during a Redis failover do: SIGTERM, then Redis gone.
    # Append-only persistence keeps the job across the Redis restart, as a deployment's volume does.
    server = LocalRedis(tmp_path / "redis", appendonly=True).start()
    grace, env = 8.0, {"WORKER_SHUTDOWN_GRACE": "8", "WORKER_HEARTBEAT_TTL": "5"}
    try:
        r = Redis.from_url(server.url)
        with worker_process(server.url, tiny_store_root, tmp_path / "first.log", "--name", "first", **env) as first:
            # 300 steps take about 3 s here: signaled halfway, the job can finish within the grace, so
            # the worker keeps it rather than handing it back at once; Redis goes before it ends
            job = submit(r, request(steps=300, seed=5))
            wait_for(running_at_step(r, job, 150), 60, "the job to be halfway", first)
            first.send_signal(signal.SIGTERM)
            signaled = time.monotonic()
            server.stop()
            try:
                code = first.wait(timeout=grace + 30)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"the worker did not stop:\n{(tmp_path / 'first.log').read_text()[-3000:]}") \
                    from None
            took = time.monotonic() - signaled
        log = (tmp_path / "first.log").read_text()
        assert code == 1, log[-3000:]
        assert grace <= took <= grace + 5, f"exited {took:.1f} s after SIGTERM\n{log[-3000:]}"
        # one line says why it stopped and what becomes of its job; no traceback, no "stopped" line
        assert log.count("stopping without Redis") == 1 and "grace ran out" in log, log[-3000:]
        assert "Traceback" not in log and "worker first: stopped" not in log

        server.start()  # same port, same data directory: the append-only file is read back
        held = record(r, job)
        assert held["status"] == "running" and held["worker"] == "first"
        with worker_process(server.url, tiny_store_root, tmp_path / "second.log", "--name", "second",
                            **env) as second:
            ended = wait_ended(r, [job], 120, second)[job]
            assert ended["status"] == "succeeded", ended
            assert ended["worker"] == "second" and ended["deaths"] == "1" and ended["attempts"] == "2"
            wait_for(lambda: rq_status(r, job) == RQStatus.FINISHED, 10, "RQ to mark the job finished", second)
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=30) == 0
        recovered = (tmp_path / "second.log").read_text()
        assert "its worker first died" in recovered, recovered[-3000:]
        print(f"\nthe worker exited {took:.1f} s after SIGTERM (grace {grace:g} s, Redis stopped just after the "
              f"signal); its job succeeded on the second worker")
    finally:
        server.stop()
