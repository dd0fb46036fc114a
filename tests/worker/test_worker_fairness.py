"""Fairness between models (worker.admission), with a real worker process: a burst of one model's jobs
starves no other model. The bound (docs/models.md): once a job is at the head of its model's queue,
at most one job of each other model is admitted before it. Checked on the order the jobs started
in, never on how long anything took."""

from __future__ import annotations

import pytest
from redis import Redis
from worker_process import record, request, submit, wait_ended, wait_for, worker_process

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MODELS = {"WORKER_MODELS": "alpha@1,beta@1", "MAX_BATCH_IMAGES": "1"}
"""Two models loaded (no budget), one image in flight at a time: each admission is one job's turn."""


def start_order(r: Redis, ids: list[str]) -> list[str]:
    """The jobs by the time they started (the worker's clock, milliseconds apart at least: with one
    image in flight, each starts only once the one before it has run all its steps)."""
    return sorted(ids, key=lambda j: record(r, j)["started_at"])


def test_the_queues_take_turns_so_a_burst_of_one_model_does_not_go_first(redis_url, models_store_root, tmp_path):
    r = Redis.from_url(redis_url)
    alpha = [submit(r, request(model="alpha@1", steps=6, seed=i)) for i in range(4)]
    beta = [submit(r, request(model="beta@1", steps=6, seed=10 + i)) for i in range(2)]
    log = tmp_path / "worker.log"
    with worker_process(redis_url, models_store_root, log, "--burst", **MODELS) as proc:
        assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
    assert all(rec["status"] == "succeeded" for rec in wait_ended(r, alpha + beta, 10).values())
    # queued in one burst of alpha then beta's two; served in turns while both queues hold jobs
    assert start_order(r, alpha + beta) == [alpha[0], beta[0], alpha[1], beta[1], alpha[2], alpha[3]]


def test_a_job_of_another_model_submitted_mid_burst_starts_within_the_bound(redis_url, models_store_root, tmp_path):
    r = Redis.from_url(redis_url)
    log = tmp_path / "worker.log"
    with worker_process(redis_url, models_store_root, log, **MODELS) as proc:
        burst = [submit(r, request(model="alpha@1", steps=40, seed=i)) for i in range(6)]
        wait_for(lambda: record(r, burst[1])["status"] == "running", 60, "the burst to be under way", proc)
        short = submit(r, request(model="beta@1", steps=3, seed=99))
        ended = wait_ended(r, [*burst, short], 120, proc)
    assert all(rec["status"] == "succeeded" for rec in ended.values()), log.read_text()[-3000:]
    queued_at, started_at = ended[short]["created_at"], ended[short]["started_at"]
    ahead = [j for j in burst if queued_at < ended[j]["started_at"] < started_at]
    # the bound: at most one job of alpha admitted after beta's job was first in its queue (here none:
    # the turn had passed to beta's queue when alpha's running job ended)
    assert len(ahead) <= 1, (ahead, log.read_text()[-3000:])
    order = start_order(r, [*burst, short])
    assert order.index(short) <= order.index(burst[1]) + 2 < len(burst)  # far ahead of the burst's tail
