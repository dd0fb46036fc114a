"""A real, long-running `python -m worker`: it registers with RQ, lets a short job overtake a long
one, cancels a running job at its next step, and on SIGTERM finishes or hands back its jobs and
exits 0."""

from __future__ import annotations

import signal

import pytest
from redis import Redis
from rq import Queue, Worker
from rq.job import JobStatus as RQStatus
from rq.serializers import JSONSerializer
from worker_process import record, request, rq_status, submit, wait_ended, wait_for, worker_process

from contract.jobs import JobStore

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
        assert workers[0].queue_names() == ["imagegen"]

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
        queue = Queue("imagegen", connection=r, serializer=JSONSerializer)
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

    queue = Queue("imagegen", connection=r, serializer=JSONSerializer)
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
