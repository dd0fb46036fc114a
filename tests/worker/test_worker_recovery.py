"""Recovery of a dead worker's jobs, in-process against a real Redis: a "ghost" BatchWorker takes jobs
into its batch exactly as a live one does (records `running`, RQ executions in the StartedJobRegistry),
then stops beating; a survivor's recovery pass requeues them (same ids, front of the queue) or,
once their workers have died MAX_ATTEMPTS times, fails them with a clear error. The process-level
version (a real SIGKILL) is test_worker_death.py."""

from __future__ import annotations

import numpy as np
import pytest
from redis import Redis
from rq import Queue
from rq.job import JobStatus as RQStatus
from rq.serializers import JSONSerializer
from worker_process import (
    lone_png,
    own_signal_handlers,
    png_pixels,
    queue_of,
    queues,
    record,
    request,
    rq_job,
    rq_status,
    submit,
)

from contract.jobs import RUNNING_KEY, JobStore
from contract.settings import Settings
from worker.engine import BatchEngine
from worker.main import BatchWorker
from worker.recovery import LOCK_KEY


def make_worker(r: Redis, generators, name: str, max_attempts: int = 3) -> BatchWorker:
    return BatchWorker(queues(), BatchEngine(generators), Settings(), connection=r, name=name,
                       max_attempts=max_attempts)


def ghost_takes_jobs(r: Redis, generators, name: str) -> BatchWorker:
    """A worker that registers, admits every queued job into its batch, makes one step, then dies
    without a word (as after SIGKILL: no hand-back, no death registered)."""
    ghost = make_worker(r, generators, name)
    ghost.register_birth()
    ghost._take_jobs(burst=True)
    ghost._step()
    # silent for longer than WORKER_HEARTBEAT_TTL
    r.hset(ghost.key, "last_heartbeat", "2000-01-01T00:00:00.000000Z")
    return ghost


def queue(r: Redis) -> Queue:
    return queue_of(r)


def run_survivor(r: Redis, survivor: BatchWorker) -> None:
    with own_signal_handlers():
        survivor.work(burst=True)


def test_a_dead_workers_jobs_go_back_to_the_front_and_run_again_to_the_same_images(redis_url, generators):
    r = Redis.from_url(redis_url)
    reqs = [request(steps=6, seed=10 + i, class_label=i) for i in range(3)]
    jobs = [submit(r, q) for q in reqs]
    ghost = ghost_takes_jobs(r, generators, "ghost")
    assert {record(r, j)["status"] for j in jobs} == {"running"} and set(JobStore(r).running()) == set(jobs)
    assert len(queue(r).started_job_registry.get_job_ids(cleanup=False)) == 3
    later = submit(r, request(steps=2, seed=99))  # queued after the dead worker's jobs: runs after them

    survivor = make_worker(r, generators, "survivor")
    done = survivor.recovery.run()
    assert sorted(done.requeued) == sorted(jobs) and done.failed == [] and done.dead_workers == ["ghost"]
    for j in jobs:
        rec = record(r, j)
        assert rec["status"] == "queued" and rec["worker"] == "" and rec["progress"] is None
        assert rec["deaths"] == "1" and rec["attempts"] == "1"
        assert rq_status(r, j) == RQStatus.QUEUED
    # the same RQ jobs (same ids), ahead of the job queued meanwhile; no stale execution left for
    # RQ's own cleanup to fail them with later
    assert set(queue(r).get_job_ids()[:3]) == set(jobs) and queue(r).get_job_ids()[3] == later
    assert queue(r).started_job_registry.get_job_ids(cleanup=False) == []
    assert r.scard(RUNNING_KEY) == 0

    run_survivor(r, survivor)
    for j, q in zip(jobs, reqs):
        rec = record(r, j)
        assert rec["status"] == "succeeded" and rec["attempts"] == "2" and rec["worker"] == "survivor"
        assert np.abs(png_pixels(r, j, "0.png") - lone_png(generators, q)).max() <= 1
        assert rq_status(r, j) == RQStatus.FINISHED
    assert record(r, later)["status"] == "succeeded"
    assert queue(r).started_job_registry.get_job_ids() == [] and r.scard(RUNNING_KEY) == 0

    # the ghost comes back to life (it had only stalled): its jobs are no longer its own, it drops
    # them without touching their records
    ghost._end_canceled_and_timed_out()
    assert ghost.running == {} and ghost.engine.jobs() == []
    assert all(record(r, j)["status"] == "succeeded" for j in jobs)


def test_retries_are_bounded_a_job_whose_workers_keep_dying_fails_with_a_clear_error(redis_url, generators):
    r = Redis.from_url(redis_url)
    job = submit(r, request(steps=50, seed=3))
    for death in (1, 2, 3):
        ghost_takes_jobs(r, generators, f"ghost-{death}")
        done = make_worker(r, generators, f"survivor-{death}", max_attempts=3).recovery.run()
        if death < 3:
            assert done.requeued == [job] and record(r, job)["status"] == "queued"
    assert done.failed == [job]
    rec = record(r, job)
    assert rec["status"] == "failed" and rec["attempts"] == "3" and rec["deaths"] == "3"
    assert rec["error"] == {"code": "worker_died", "message": "worker died 3 times while running this job "
                                                             "(MAX_ATTEMPTS=3); it was not retried again"}
    assert rec["finished_at"] and r.ttl(f"imagegen:job:{job}") > 0
    assert rq_status(r, job) == RQStatus.FAILED and job in queue(r).failed_job_registry.get_job_ids()
    assert queue(r).count == 0 and queue(r).started_job_registry.get_job_ids(cleanup=False) == []


def test_max_attempts_1_fails_at_the_first_death_and_a_pending_cancel_is_honoured(redis_url, generators):
    r = Redis.from_url(redis_url)
    doomed, canceled = submit(r, request(steps=50, seed=1)), submit(r, request(steps=50, seed=2))
    ghost_takes_jobs(r, generators, "ghost")
    assert JobStore(r).cancel(canceled) == "running"  # the cancel flag the dead worker never read
    done = make_worker(r, generators, "survivor", max_attempts=1).recovery.run()
    assert done.failed == [doomed] and done.requeued == []
    assert record(r, doomed)["error"]["message"].startswith("worker died 1 time while running this job")
    assert record(r, canceled)["status"] == "canceled" and rq_status(r, canceled) == RQStatus.CANCELED


def test_live_workers_are_left_alone_and_one_worker_at_a_time_runs_recovery(redis_url, generators):
    r = Redis.from_url(redis_url)
    job = submit(r, request(steps=50, seed=1))
    alive = make_worker(r, generators, "alive")
    alive.register_birth()
    alive._take_jobs(burst=True)
    survivor = make_worker(r, generators, "survivor")
    assert survivor.recovery.run().requeued == [] and record(r, job)["status"] == "running"
    # the lock spaces passes out across workers
    assert survivor.recovery.maybe_run() is not None and r.get(LOCK_KEY) == b"survivor"
    other = make_worker(r, generators, "other")
    assert other.recovery.maybe_run() is None


@pytest.mark.parametrize("started", [False, True])
def test_a_job_taken_off_the_queue_by_a_worker_that_died_before_starting_it_runs(redis_url, generators, started):
    """The worker died between taking the job (RQ's intermediate queue) and starting it, or just
    after starting its record but before RQ's bookkeeping."""
    r = Redis.from_url(redis_url)
    job = submit(r, request(steps=2, seed=5))
    q = queue(r)
    r.lmove(q.key, q.intermediate_queue_key, "LEFT", "RIGHT")  # what dequeue does first
    if started:
        assert JobStore(r).start(job, "ghost")
    survivor = make_worker(r, generators, "survivor")
    done = survivor.recovery.run()
    if not started:
        assert done.unstuck == [] and r.llen(q.intermediate_queue_key) == 1  # first sighting
        survivor.recovery.heartbeat_ttl = 0
        done = survivor.recovery.run()
        assert done.unstuck == [job]
    else:
        assert done.requeued == [job]
    assert r.llen(q.intermediate_queue_key) == 0 and q.get_job_ids() == [job]
    run_survivor(r, survivor)
    assert record(r, job)["status"] == "succeeded"


def test_each_job_of_a_dead_worker_goes_back_to_its_own_models_queue(redis_url, models_generators):
    """Two models: the dead worker's jobs go back each to its model's queue, and a job it had taken
    off a queue of a model the survivor does not serve goes back too (every model queue is looked at,
    not only the survivor's)."""
    r = Redis.from_url(redis_url)
    reqs = {ref: request(model=ref, steps=6, seed=70 + i) for i, ref in enumerate(("alpha@1", "beta@1"))}
    jobs = {ref: submit(r, q) for ref, q in reqs.items()}
    ghost = BatchWorker(queues("alpha@1", "beta@1"), BatchEngine(models_generators), Settings(), connection=r,
                        name="ghost")
    ghost.register_birth()
    ghost._take_jobs(burst=True)
    ghost._step()
    r.hset(ghost.key, "last_heartbeat", "2000-01-01T00:00:00.000000Z")
    taken = submit(r, request(model="gamma@1", steps=2, seed=5))
    gamma = queue_of(r, "gamma@1")
    r.lmove(gamma.key, gamma.intermediate_queue_key, "LEFT", "RIGHT")  # taken, never started

    survivor = BatchWorker(queues("alpha@1", "beta@1"), BatchEngine(models_generators), Settings(), connection=r,
                           name="survivor")
    done = survivor.recovery.run()
    assert sorted(done.requeued) == sorted(jobs.values()) and done.dead_workers == ["ghost"]
    for ref, job_id in jobs.items():
        assert queue_of(r, ref).job_ids == [job_id] and rq_status(r, job_id) == RQStatus.QUEUED
        assert queue_of(r, ref).started_job_registry.get_job_ids(cleanup=False) == []
    survivor.recovery.heartbeat_ttl = 0  # seen once already: stuck for longer than the TTL now
    assert survivor.recovery.run().unstuck == [taken] and gamma.job_ids == [taken]

    run_survivor(r, survivor)
    for ref, job_id in jobs.items():
        assert record(r, job_id)["status"] == "succeeded" and rq_status(r, job_id) == RQStatus.FINISHED
        assert np.abs(png_pixels(r, job_id, "0.png") - lone_png(models_generators, reqs[ref])).max() <= 1
    assert record(r, taken)["status"] == "queued"  # gamma's job waits for a worker that serves gamma


def test_jobs_on_the_bare_queue_of_an_older_release_move_to_their_models_queues(redis_url, generators):
    """An API of the release before the per-model queues (a rolling upgrade) enqueued on QUEUE_NAME
    itself: the recovery pass moves those jobs, in order, to the front of their models' queues."""
    r = Redis.from_url(redis_url)
    settings = Settings()
    old = Queue(settings.queue_name, connection=r, serializer=JSONSerializer)
    reqs = [request(seed=80 + i, model=("fashion-mnist@1", "plain@1", "fashion-mnist@1")[i]) for i in range(3)]
    ids = []
    for q in reqs:
        job_id = submit(r, q)
        queue_of(r, q["model"]).remove(job_id)
        old.enqueue_call(func="worker.tasks.generate", kwargs={"job": job_id}, job_id=job_id)
        ids.append(job_id)
    newer = submit(r, request(seed=90))  # queued by an upgraded API meanwhile: runs after the older ones
    survivor = make_worker(r, generators, "survivor")
    assert survivor.recovery.run().moved == ids
    assert old.count == 0 and queue_of(r, "plain@1").job_ids == [ids[1]]
    assert queue_of(r).job_ids == [ids[0], ids[2], newer]
    assert rq_job(r, ids[1]).origin == "imagegen:plain@1"
    run_survivor(r, survivor)
    assert [record(r, j)["status"] for j in [*ids, newer]] == ["succeeded"] * 4
    assert set(queue_of(r, "plain@1").finished_job_registry.get_job_ids()) == {ids[1]}
