"""Which queued job joins the batch next: the worker's model queues in turn, each job's model loaded
first, so that a burst of one model's jobs starves no other model.

A worker listens to one queue per model it may serve (contract.queues). Admission goes round them:
the queue after the one that gave the last job comes first, and the first queue in that order that
holds a job has the turn. Its head job joins the batch when its model is loaded and the job fits
beside the images in flight. Otherwise the turn HOLDS, and no job of another model overtakes it,
while its model loads (worker.pool: off the loop), while idle models are evicted to make room for
it, or while the images in flight finish and leave room. The batches already running keep
stepping meanwhile.

The bound (docs/models.md; tests/worker/test_worker_fairness.py): once a job is at the head of its
model's queue, at most one job of each other model is admitted before it; it then joins as soon as
its model is loaded and the images in flight leave room for it. With one-image jobs and a full batch
of model A, a job of model B starts when the first of A's running jobs ends.

A mixin of `worker.main.BatchWorker`: it reads the worker's queues, engine, connection and pool,
and calls its `_admit`.
"""

from __future__ import annotations

import json
import logging
import time

from rq.exceptions import DequeueTimeout
from rq.job import Job
from rq.queue import Queue
from rq.utils import as_text

from contract.jobs import job_key
from contract.queues import queue_model
from contract.workers import WorkerModels, advertise, withdraw
from worker.metrics import record_model_event
from worker.pool import ModelPool, Readiness

log = logging.getLogger("worker.main")

IDLE_WAIT = 1
"""Seconds an idle worker with one queue blocks waiting for a job: the longest a SIGTERM waits to be noticed."""

IDLE_POLL = 0.1
"""Seconds between two looks at the queues of an idle worker with several (a blocking wait on several
queues at once would pop a job with no trace of it in Redis until it starts: a crash in between would
lose it), and between two looks at a load under way when nothing else runs."""

HOLD = "hold"
"""`_next_job`'s answer when the job whose turn it is must wait (for its model, or for room)."""


class TakesJobsInTurn:
    """How a batching worker takes jobs off its model queues (see the module docstring)."""

    def _init_admission(self, pool: ModelPool | None, queue_name: str, models_ttl: int) -> None:
        self.pool = pool or ModelPool(self.engine)
        self._refs = [queue_model(queue_name, q.name) for q in self.queues]  # None: not a model queue
        self._turn = 0  # index of the queue that comes first in the next look
        self._models_ttl = models_ttl

    def _take_jobs(self, burst: bool) -> int:
        """Admit queued jobs in turn while they fit; when nothing runs and nothing is queued, wait
        briefly for a job. The number of jobs taken off the queues."""
        self._poll_pool()
        taken = 0
        while self._stop_at is None:
            result = self._next_job()
            if result == HOLD:
                if not self.engine.jobs():
                    self.pool.wait(IDLE_POLL)  # nothing to step: wait for the load rather than spin
                break
            if result is None:
                if taken or burst or not self._idle():
                    break
                result = self._wait_for_job()
                if result is None:
                    break
            taken += 1
            names = [q.name for q in self.queues]
            self._turn = (names.index(result[1].name) + 1) % len(self.queues)
            if not self._admit(*result):
                break
        return taken

    def _next_job(self) -> tuple[Job, Queue] | str | None:
        """The job whose turn it is, taken off its queue; None if no queue holds one; HOLD if it must
        wait for its model or for room."""
        while True:
            at = self._queue_in_turn()
            if at is None:
                return None
            readiness = self._readiness(at)
            if readiness in (Readiness.LOADING, Readiness.NO_ROOM):
                return HOLD
            queue = self.queues[at]
            if readiness == Readiness.READY and self.engine.jobs() and not self._head_fits(queue):
                return HOLD
            result = self._dequeue(queue, None)
            if result is not None or len(self.queues) == 1:
                return result
            # another worker took it between the look and the take: look again

    def _queue_in_turn(self) -> int | None:
        """The index of the first queue, from the turn on, that holds a job (None: all are empty)."""
        ref = self._refs[0]
        if len(self.queues) == 1 and (ref is None or ref in self.engine.models()):
            return 0  # no look needed: a dequeue finds out (and a look would cost a round trip per job)
        with self.connection.pipeline(transaction=False) as pipe:
            for queue in self.queues:
                pipe.llen(queue.key)
            lengths = pipe.execute()
        n = len(self.queues)
        return next(((self._turn + k) % n for k in range(n) if lengths[(self._turn + k) % n]), None)

    def _readiness(self, at: int) -> Readiness:
        ref = self._refs[at]
        if ref is None:
            return Readiness.READY  # not a model queue: the engine says whether it can run the job
        readiness = self.pool.prepare(ref)
        self._publish_pool_events()
        return readiness

    def _idle(self) -> bool:
        return not self.engine.jobs() and self.pool.loading() is None

    def _wait_for_job(self) -> tuple[Job, Queue] | None:
        """Nothing runs and nothing is queued: block on the one queue whose model is loaded, else
        sleep for one look's interval."""
        ref = self._refs[0]
        if len(self.queues) == 1 and (ref is None or ref in self.engine.models()):
            return self._dequeue(self.queues[0], IDLE_WAIT)
        time.sleep(IDLE_POLL)
        return None

    def _dequeue(self, queue: Queue, timeout: int | None) -> tuple[Job, Queue] | None:
        # one queue per call: rq then moves the id into the queue's intermediate list (LMOVE), which
        # the recovery of dead workers reads; with several queues it would pop it (LPOP) instead
        try:
            return self.queue_class.dequeue_any([queue], timeout, connection=self.connection,
                                                job_class=self.job_class, serializer=self.serializer,
                                                death_penalty_class=self.death_penalty_class)
        except DequeueTimeout:
            return None

    def _images_of(self, job_id: str) -> int:
        raw = self.connection.hget(job_key(job_id), "request")
        try:
            return int(json.loads(raw).get("num_images", 1))
        except (TypeError, ValueError, AttributeError):
            return 1  # no readable record: admission fails it, at the cost of one image slot

    def _head_fits(self, queue: Queue) -> bool:
        """Whether the head of `queue` fits beside the running jobs (peeked, so that a job too big for
        now keeps its place). With room for the largest job the API takes, any job fits: no peek,
        which saves two round trips per job admitted (_admit checks the job itself again)."""
        if self.engine.capacity() >= self.max_images_per_job:
            return True
        head = self.connection.lindex(queue.key, 0)
        return head is None or self._images_of(as_text(head)) <= self.engine.capacity()

    def _ref_of(self, queue: Queue) -> str | None:
        names = [q.name for q in self.queues]
        return self._refs[names.index(queue.name)] if queue.name in names else None

    # --- the pool's news, in Redis ---------------------------------------------------------------

    def _poll_pool(self) -> None:
        """Install a finished load (between two steps), then say so."""
        self.pool.poll()
        self._publish_pool_events()

    def _publish_pool_events(self) -> None:
        events, self.pool.events = self.pool.events, []
        if not events:
            return
        with self.connection.pipeline(transaction=False) as pipe:
            for event in events:
                record_model_event(pipe, event.kind, event.ref, event.seconds)
            self._advertise(pipe)
            pipe.execute()

    def _advertise(self, pipe) -> None:  # noqa: ANN001 - a redis pipeline
        """What this worker holds, in Redis until its heartbeat lapses (contract.workers)."""
        advertise(pipe, WorkerModels(self.name, self.pool.loaded_bytes(), self.pool.loading(), self.pool.budget_bytes),
                  self._models_ttl)

    def _withdraw(self) -> None:
        withdraw(self.connection, self.name)
