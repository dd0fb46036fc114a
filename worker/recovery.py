"""Recovery of the jobs of dead workers, run by the surviving ones.

A worker killed mid-batch (SIGKILL, out of memory, a lost machine) cannot hand its jobs back: their
records stay `running` and RQ keeps them in its StartedJobRegistry. Every few seconds one live worker
(whichever takes a short Redis lock) looks at the running jobs (the `imagegen:running` index, not RQ's
registry: RQ's own cleanup may have moved a job to its FailedJobRegistry already) and at the worker
each record names. A worker is dead when its RQ key is gone, says it died, or its last heartbeat is
older than WORKER_HEARTBEAT_TTL (the test the API's /readyz uses). A worker only paused that long
(a stall, a network partition) is treated as dead too: its jobs run again elsewhere, and it drops
them from its batch when it sees that their records name another worker (at-least-once, never twice
to a different result: an image depends only on its seed). Each job of a dead worker goes
back to the front of its queue with the same id, or fails with a clear error once its workers have
died MAX_ATTEMPTS times: a job that kills its worker (say, out of memory) must not kill every worker
in turn.

Jobs a worker took off the queue but had not started when it died sit in RQ's intermediate queue
with a `queued` record; they are pushed back once seen there for longer than the heartbeat TTL.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from redis.client import Pipeline
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.utils import as_text, now, utcparse

from contract.jobs import PREFIX, JobStatus, job_key
from contract.queues import is_ref, model_queue, queue_model
from contract.settings import Settings

if TYPE_CHECKING:
    from worker.main import BatchWorker

log = logging.getLogger(__name__)

RECOVERY_INTERVAL = 5.0
"""Seconds between two recovery passes (over all workers: the lock makes one worker do each)."""

LOCK_KEY = f"{PREFIX}recovery-lock"
"""Held for one interval by the worker that runs the pass; never released early, which is what
spaces the passes out however many workers there are."""

GENERATE = "worker.tasks.generate"


# a job id from one queue list (KEYS[1]) to the front of another (KEYS[2]), registered in RQ's set of
# queues (KEYS[3]), its RQ job's origin (KEYS[4]) naming the new queue (ARGV[2]); only if it was there
_MOVE = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], KEYS[2])
if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('HSET', KEYS[4], 'origin', ARGV[2]) end
return 1
"""


def _stuck_key(job_id: str) -> str:
    # when a recovery pass first saw the job in an intermediate queue
    return f"{PREFIX}stuck:{job_id}"


@dataclass
class Recovered:
    """What one pass did."""

    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    dead_workers: list[str] = field(default_factory=list)
    unstuck: list[str] = field(default_factory=list)  # pushed back from an intermediate queue
    moved: list[str] = field(default_factory=list)  # from the bare QUEUE_NAME queue to their model's


class Recovery:
    """Finds the jobs of dead workers and requeues or fails them, on behalf of `worker`."""

    def __init__(self, worker: BatchWorker, settings: Settings, max_attempts: int) -> None:
        self.worker = worker
        self.connection = worker.connection
        self.jobs = worker.reporter.jobs
        self.heartbeat_ttl = settings.worker_heartbeat_ttl
        self.settings = settings
        self.max_attempts = max_attempts
        self.interval = min(RECOVERY_INTERVAL, self.heartbeat_ttl / 2)
        self._move = self.connection.register_script(_MOVE)
        self._next = 0.0

    def pause(self, seconds: float) -> None:
        """Run no pass for `seconds`: after this worker's own Redis outage, the others' heartbeats
        are as stale as its own until they reconnect too, and they must not look dead."""
        self._next = max(self._next, time.monotonic() + seconds)

    def maybe_run(self) -> Recovered | None:
        """A pass, if one is due and no other worker is running one."""
        if time.monotonic() < self._next:
            return None
        self._next = time.monotonic() + self.interval
        if not self.connection.set(LOCK_KEY, self.worker.name, nx=True, px=int(self.interval * 1000)):
            return None
        return self.run()

    def run(self) -> Recovered:
        done = Recovered()
        holders = self.jobs.workers_of(self.jobs.running())
        names = sorted({w for w in holders.values() if w and w != self.worker.name})
        dead = self.dead(names)
        done.dead_workers = sorted(dead)
        # ids sort by creation time; pushed to the front newest first, the oldest ends up first in line
        for job_id, holder in reversed(list(holders.items())):
            if holder in dead:
                self._recover(job_id, holder, done)
        self._unstick(done)
        self._move_to_model_queues(done)
        if done.requeued or done.failed or done.unstuck:
            log.warning("recovered the jobs of dead workers %s: %d requeued, %d failed after %d attempts, "
                        "%d taken but never started pushed back", ", ".join(done.dead_workers) or "-",
                        len(done.requeued), len(done.failed), self.max_attempts, len(done.unstuck))
        return done

    def dead(self, names: list[str]) -> set[str]:
        """The workers among `names` that are gone or silent for longer than the heartbeat TTL."""
        if not names:
            return set()
        prefix = self.worker.redis_worker_namespace_prefix
        pipe = self.connection.pipeline(transaction=False)
        for name in names:
            pipe.hmget(prefix + name, "last_heartbeat", "death")
        now = datetime.now(UTC)
        dead = set()
        for name, (beat, death) in zip(names, pipe.execute()):
            if beat is None or death is not None:
                dead.add(name)
            elif (now - utcparse(as_text(beat))).total_seconds() > self.heartbeat_ttl:
                dead.add(name)
        return dead

    def _recover(self, job_id: str, holder: str, done: Recovered) -> None:
        """Requeue or fail one job of the dead worker `holder`."""
        queue, job = self._queue_of(job_id)
        # RQ's side first, while no live worker can hold the job: once `recover` pushes its id, one
        # may take it at once, and its own bookkeeping must not be undone by ours
        job = self._requeue_rq(queue, job, job_id)
        outcome = self.jobs.recover(job_id, holder, self.max_attempts, queue.key)
        if outcome == "requeued":
            done.requeued.append(job_id)
            log.warning("job %s: its worker %s died; back at the front of the queue", job_id, holder)
        elif outcome == "failed":
            self._fail_rq(queue, job, job_id)
            self.worker.reporter.ended(job_id, JobStatus.FAILED)
            done.failed.append(job_id)
            log.error("job %s: its worker %s died, and its workers have now died %d times (MAX_ATTEMPTS); failed",
                      job_id, holder, self.max_attempts)
        elif outcome == "canceled":
            with contextlib.suppress(InvalidJobOperation):  # canceled meanwhile
                job.cancel()
            self.worker.reporter.ended(job_id, JobStatus.CANCELED)
            log.warning("job %s: its worker %s died with its cancel pending; canceled", job_id, holder)
        elif self.jobs.missing([job_id]):
            # deleted (DELETE /jobs/{id}) since this pass read it: RQ's job, which `_requeue_rq` has
            # just saved again, goes too
            with self.connection.pipeline() as pipe:
                self._forget_executions(queue, job_id, pipe)
                pipe.delete(job.key)
                pipe.execute()

    def _queue_of(self, job_id: str) -> tuple[Queue, Job | None]:
        """The job's own queue: the one RQ's job came from, else (its RQ hash expired) its model's."""
        try:
            job = Job.fetch(job_id, connection=self.connection, serializer=JSONSerializer)
        except NoSuchJobError:
            job = None
        name = job.origin if job is not None and job.origin else self._model_queue(job_id)
        return Queue(name, connection=self.connection, serializer=JSONSerializer), job

    def _model_queue(self, job_id: str) -> str:
        model = as_text(self.connection.hget(job_key(job_id), "model") or b"")
        return model_queue(self.settings.queue_name, model) if is_ref(model) else self.settings.queue_name

    def _forget_executions(self, queue: Queue, job_id: str, pipe: Pipeline) -> None:
        # the dead worker's entry would make RQ's own cleanup fail the job while it runs again
        registry = queue.started_job_registry
        for j, execution_id in registry.get_job_and_execution_ids(cleanup=False):
            if j == job_id:
                pipe.zrem(registry.key, f"{j}:{execution_id}")
        pipe.lrem(queue.intermediate_queue_key, 0, job_id)

    def _requeue_rq(self, queue: Queue, job: Job | None, job_id: str) -> Job:
        """RQ's bookkeeping for a job about to go back on its queue (`recover` pushes its id): status
        `queued`, and out of the registries where the dead worker's run left it. (If the job ends
        instead, `_fail_rq` or the cancel moves it on again.)"""
        if job is None:
            # its RQ hash expired (RQ keeps it while it is started, so rarely): the same job anew,
            # saved but not pushed (`recover` pushes its id)
            job = queue.create_job(GENERATE, kwargs={"job": job_id}, job_id=job_id, timeout=self.settings.job_timeout,
                                   result_ttl=self.settings.result_ttl, failure_ttl=self.settings.result_ttl)
        with self.connection.pipeline() as pipe:
            self._forget_executions(queue, job_id, pipe)
            queue.failed_job_registry.remove(job, pipeline=pipe)
            job.origin, job.started_at, job.enqueued_at = queue.name, None, now()
            job.set_status(RQStatus.QUEUED, pipeline=pipe)
            job.save(pipeline=pipe)
            pipe.execute()
        return job

    def _fail_rq(self, queue: Queue, job: Job, job_id: str) -> None:
        """RQ's view agrees: the job in its FailedJobRegistry, with our reason."""
        record = self.jobs.get(job_id) or {}
        reason = (record.get("error") or {}).get("message", "its worker died")
        self.worker.handle_job_failure(job, queue, exc_string=f"worker_died: {reason}")

    def _our_queues(self) -> list[Queue]:
        """Every queue of this deployment that RQ knows: each model's, and the bare QUEUE_NAME one of
        releases before the per-model queues. Not only this worker's: a dead worker may have served
        models this one does not."""
        name = self.settings.queue_name
        return [q for q in Queue.all(connection=self.connection, serializer=JSONSerializer)
                if q.name == name or queue_model(name, q.name) is not None]

    def _unstick(self, done: Recovered) -> None:
        """Jobs taken off a queue by a worker that died before starting them."""
        for queue in self._our_queues():
            for job_id in queue.intermediate_queue.get_job_ids():
                status = self.connection.hget(job_key(job_id), "status")
                if status is None or as_text(status) != JobStatus.QUEUED.value:
                    continue  # not one of ours, or started: the holder's death is handled above
                first_seen = self.connection.get(_stuck_key(job_id))
                if first_seen is None:
                    self.connection.set(_stuck_key(job_id), time.time(), ex=3600)
                    continue
                if time.time() - float(first_seen) < self.heartbeat_ttl:
                    continue
                with self.connection.pipeline() as pipe:
                    pipe.lrem(queue.intermediate_queue_key, 0, job_id)
                    queue.push_job_id(job_id, pipeline=pipe, at_front=True)
                    pipe.delete(_stuck_key(job_id))
                    pipe.execute()
                done.unstuck.append(job_id)

    def _move_to_model_queues(self, done: Recovered) -> None:
        """Jobs queued on the bare QUEUE_NAME queue (by an API of a release before the per-model
        queues, during a rolling upgrade) go to the front of their model's queue, in their order, so
        that the workers, which listen to model queues only, run them."""
        legacy = Queue(self.settings.queue_name, connection=self.connection, serializer=JSONSerializer)
        moved = []
        # newest first, each to the front: the oldest ends up first in line
        for job_id in reversed(legacy.get_job_ids()):
            model = self._model_queue(job_id)
            if model == legacy.name:
                continue  # no record naming a model: not a generation job of ours
            target = Queue(model, connection=self.connection, serializer=JSONSerializer)
            # only if still there: a worker of the older release may have taken it meanwhile
            if not self._move(keys=[legacy.key, target.key, Queue.redis_queues_keys, Job.key_for(job_id)],
                              args=[job_id, target.name]):
                continue
            moved.append(job_id)
            log.info("job %s moved from queue %s to its model's queue %s", job_id, legacy.name, target.name)
        done.moved.extend(reversed(moved))
