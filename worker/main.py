"""The batching RQ worker: one process, its models loaded once (or on demand within a memory budget),
every queued job sampled in one batch per model.

`BatchWorker` is an rq `SimpleWorker` (no fork: a forked child could not reuse the CUDA context, and
reloading models per job is what makes naive RQ workers slow) whose loop is replaced: instead of
one job start to end, it keeps many jobs in a `BatchEngine` and, between two sampler steps, takes
the queued jobs that fit from its model queues in turn (worker.admission; models load and are
evicted in worker.pool), writes progress, ends finished, failed, canceled and timed-out jobs.

RQ's bookkeeping goes through rq's public API, called per job where SimpleWorker calls it:
`prepare_execution` and `prepare_job_execution` when a job joins (StartedJobRegistry, status
`started`, the worker's executions); when it ends, `worker.rq_jobs` (rq's failure path, and a success
written from public pieces, since rq has no public call for a success whose value came from outside
`job.perform()`); `register_birth`, `heartbeat` and `teardown` keep `Worker.all()` (the API's /readyz,
`rq info`) right.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from rq.exceptions import DeserializationError, StopRequested
from rq.executions import Execution
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.utils import now
from rq.worker import SimpleWorker, WorkerStatus
from torch import Tensor

from contract.jobs import JobStatus, record_inputs
from contract.settings import Settings
from worker.admission import TakesJobsInTurn
from worker.engine import BatchEngine, JobError, JobFailed, UnknownModel
from worker.pool import ModelPool
from worker.recovery import Recovery
from worker.redis_wait import REDIS_BACKOFF_MAX, REDIS_DOWN, WaitsForRedis
from worker.reporting import JobReporter, result_value
from worker.rq_jobs import record_failure, record_success
from worker.stopping import GracefulStop, StoppedWithoutRedis  # noqa: F401 - python -m worker catches it
from worker.webhooks import WebhookSender

log = logging.getLogger(__name__)

GENERATE = "worker.tasks.generate"
"""The dotted path the API enqueues; jobs of any other function run one at a time, as SimpleWorker would."""

WEBHOOK_DRAIN = 10.0
"""Seconds a stopping worker waits for webhook deliveries under way."""

@dataclass
class _Running:
    id: str  # the job record's id (the RQ job id, by the API's contract)
    job: Job
    queue: Queue
    execution: Execution
    request: dict[str, Any]
    started: float  # time.monotonic()
    timeout: float | None  # seconds; None: no limit


class BatchWorker(TakesJobsInTurn, GracefulStop, WaitsForRedis, SimpleWorker):
    """An RQ worker that batches generation jobs step by step (see the module docstring)."""

    log_result_lifespan = False  # one line per job end is ours; rq adds its own two

    def __init__(self, queues: list[Queue] | list[str], engine: BatchEngine, settings: Settings, *,
                 shutdown_grace: float = 30.0, webhooks: WebhookSender | None = None, max_attempts: int = 3,
                 pool: ModelPool | None = None, **kwargs: Any) -> None:
        """`queues`: one per model it may serve (contract.queues.model_queue); `pool`: the models it
        loads on demand within its budget (default: only those `engine` holds, no budget)."""
        kwargs.setdefault("serializer", JSONSerializer)
        kwargs.setdefault("worker_ttl", settings.worker_heartbeat_ttl)
        # prepare_for_work asks Redis for this worker's address while constructing it; the address is
        # asked for at bootstrap instead (WaitsForRedis), so that a worker can be made before its Redis
        super().__init__(queues, prepare_for_work=False, **kwargs)
        self.hostname, self.pid = socket.gethostname(), os.getpid()
        self.engine = engine
        self.reporter = JobReporter(self.connection, settings, webhooks)
        self.max_images_per_job = settings.max_images_per_job
        self.shutdown_grace = shutdown_grace
        self.running: dict[str, _Running] = {}
        self._stop_at: float | None = None  # monotonic deadline of a warm shutdown
        self._force_stop = False
        self._step_seconds: float | None = None  # moving average, to judge what can finish in the grace
        self._last_beat = 0.0
        self._beat_interval = max(1.0, min(10.0, self.worker_ttl / 3))
        self.recovery = Recovery(self, settings, max_attempts)
        self._init_admission(pool, settings.queue_name, settings.worker_heartbeat_ttl)
        # jobs that left the engine but whose end could not be written (Redis went down): retried
        self._unended: dict[str, tuple[_Running, JobStatus, Tensor | None, JobError | None]] = {}

    # --- the loop --------------------------------------------------------------------------------

    def work(self, burst: bool = False, logging_level: str | None = None, **_: Any) -> bool:  # type: ignore[override]
        """Run until SIGTERM/SIGINT (or, with `burst`, until the queue is empty and nothing runs)."""
        self.bootstrap_when_redis_answers(logging_level)
        self.install_stop_handlers()
        worked, backoff, abandoned = False, 1.0, False
        try:
            while True:
                try:
                    self._retry_ends()
                    if not self.running:
                        self.check_for_suspension(burst)
                        if self.should_run_maintenance_tasks:
                            self.run_maintenance_tasks()
                    taken = self._take_jobs(burst) if self._stop_at is None else 0
                    worked = worked or taken > 0
                    if self._force_stop:
                        self._hand_back(list(self.running))
                        break
                    if self.engine.jobs():
                        self._step()
                        self._end_canceled_and_timed_out()
                        if self._stop_at is not None:
                            self._hand_back_what_cannot_finish()
                    elif self._stop_at is not None or (burst and not taken and self.pool.loading() is None):
                        break
                    self._heartbeat()
                    self.recovery.maybe_run()
                    backoff = 1.0
                except REDIS_DOWN as e:
                    self._give_up_if_stopped(e)
                    # keep the batch: the jobs go on once Redis answers again
                    log.error("Redis unreachable (%s); retrying in %.0f s", e, backoff)
                    self._wait_for_redis(backoff)
                    backoff = min(backoff * 2, REDIS_BACKOFF_MAX)
                    self._last_beat = 0.0  # a heartbeat first thing once Redis is back
                    self.recovery.pause(self.recovery.heartbeat_ttl)
        except StopRequested:
            pass
        except StoppedWithoutRedis as e:
            abandoned = True
            log.error("%s", e)
            raise
        except Exception:
            # a bug (or a lost device) must not strand the jobs in flight: they go back to the queue
            log.exception("the worker loop failed; handing %d running jobs back", len(self.running))
            with contextlib.suppress(Exception):
                self._hand_back(list(self.running))
            raise
        finally:
            if abandoned:
                # no Redis to register a death with (its key expires with its last heartbeat), and
                # rq's pub/sub thread would go on logging its own reconnect attempts until exit
                self.stop_listening()
            else:
                try:
                    self._withdraw()
                    self.teardown()
                except REDIS_DOWN as e:  # stopping while Redis is down: its key expires on its own
                    log.warning("could not register this worker's death: Redis unreachable (%s)", e)
            if not self.reporter.webhooks.drain(WEBHOOK_DRAIN):
                log.warning("%d webhook deliveries still under way at exit", self.reporter.webhooks.pending())
        return worked

    def _heartbeat(self) -> None:
        """Keep the worker, its executions and its jobs alive in RQ's eyes."""
        if time.monotonic() - self._last_beat < self._beat_interval:
            return
        self._last_beat = time.monotonic()
        with self.connection.pipeline() as pipe:
            self.heartbeat(pipeline=pipe)
            self._advertise(pipe)
            for run in self.running.values():
                ttl = self.get_heartbeat_ttl(run.job)
                run.execution.heartbeat(run.job.started_job_registry, ttl, pipeline=pipe)
                run.job.heartbeat(now(), ttl, pipeline=pipe, xx=True)
            pipe.execute()

    # --- taking jobs (the turn among model queues: worker.admission) ------------------------------

    def _admit(self, job: Job, queue: Queue) -> bool:
        """Start `job` in the batch (or end it at once); False if it went back to the queue."""
        try:
            func_name = job.func_name
        except DeserializationError as e:
            queue.intermediate_queue.remove(job.id)
            self.handle_job_failure(job, queue, exc_string=f"cannot read job {job.id} ({e.__cause__ or e}): "
                                                           "jobs on this queue must use the JSON serializer")
            return True
        if func_name != GENERATE:
            log.info("job %s runs %s, not %s: running it on its own", job.id, func_name, GENERATE)
            self.execute_job(job, queue)
            # rq takes it out of the intermediate list only for a one-queue worker, since a worker
            # with several pops them (LPOP); this one moves every job there (worker.admission)
            queue.intermediate_queue.remove(job.id)
            self.set_state(WorkerStatus.BUSY if self.running else WorkerStatus.IDLE)
            return True
        job_id = str(job.kwargs.get("job", job.id))
        record = self.reporter.jobs.get(job_id)
        images = int((record or {}).get("request", {}).get("num_images", 1))
        model = (record or {}).get("model") or (record or {}).get("request", {}).get("model")
        refusal = self.pool.refusal(self._ref_of(queue) or model)  # too large for the budget, or unloadable
        if record is not None and refusal is None and self.engine.jobs() and images > self.engine.capacity():
            # another worker took the head we measured, and this one does not fit: back to the front
            with self.connection.pipeline() as pipe:
                queue.push_job_id(job.id, pipeline=pipe, at_front=True)
                pipe.lrem(queue.intermediate_queue_key, 1, job.id)
                pipe.execute()
            return False
        if record is None or not self.reporter.jobs.start(job_id, self.name):
            # read again: it may have been canceled or deleted since it was read
            self._skip(job, queue, job_id, record and self.reporter.jobs.get(job_id))
            return True
        execution = self.prepare_execution(job)
        self.prepare_job_execution(job, remove_from_intermediate_queue=True)
        timeout = job.timeout if job.timeout is not None else Queue.DEFAULT_TIMEOUT
        run = _Running(job_id, job, queue, execution, record["request"], time.monotonic(),
                       None if timeout == -1 else float(timeout))
        self.running[job_id] = run
        if refusal is not None:
            self._end(run, JobStatus.FAILED, error=refusal)
            return True
        try:
            self.engine.add(job_id, model, record["request"], record_inputs(record))
        except ValueError as e:
            self._end(run, JobStatus.FAILED, error=JobError(
                "unknown_model" if isinstance(e, UnknownModel) else "invalid_request", str(e)))
            return True
        except Exception as e:  # noqa: BLE001 - e.g. out of device memory for its x_T: this job fails alone
            self._end(run, JobStatus.FAILED, error=JobError("internal_error", f"{type(e).__name__}: {e}"))
            return True
        self.reporter.started(job_id, self.engine.progress(job_id)[1])
        log.info("job %s started: %d images of %s, %s; %d images in flight", job_id, images, model,
                 {k: record["request"].get(k) for k in ("sampler", "steps", "class_label", "guidance_scale")},
                 self.engine.max_batch_images - self.engine.capacity())
        return True

    def _skip(self, job: Job, queue: Queue, job_id: str, record: dict | None) -> None:
        """A dequeued job that must not run: canceled while queued, deleted, or without a record."""
        queue.intermediate_queue.remove(job.id)
        if record is None and not Job.exists(job.id, connection=self.connection):
            # DELETE /jobs/{id} removed the record and RQ's job after this worker took it: nothing to
            # record, and RQ's job must not be written back as failed
            log.info("job %s was deleted while queued; skipped", job_id)
        elif record is None:
            self.handle_job_failure(job, queue, exc_string=f"job record {job_id} not found: expired or never created")
        elif record.get("status") == JobStatus.CANCELED.value:
            if job.get_status() != RQStatus.CANCELED:
                job.cancel()
            log.info("job %s was canceled while queued; skipped", job_id)
        else:
            log.warning("job %s is %s, not queued; skipped", job_id, record.get("status"))

    # --- stepping and ending ---------------------------------------------------------------------

    def _step(self) -> None:
        report = self.engine.step()
        # the ended jobs have left the engine: keep them until their ends are written, whatever fails
        for job_id, images in report.finished.items():
            self._unended[job_id] = (self.running.pop(job_id), JobStatus.SUCCEEDED, images, None)
        for job_id, error in report.failed.items():
            self._unended[job_id] = (self.running.pop(job_id), JobStatus.FAILED, None, error)
        s = report.seconds
        self._step_seconds = s if self._step_seconds is None else 0.8 * self._step_seconds + 0.2 * s
        self.reporter.step(report)
        self.reporter.progress(report.progress, report.previews)
        self._retry_ends()

    def _end_canceled_and_timed_out(self) -> None:
        if not self.running:
            return
        canceled, lost = self.reporter.jobs.check_running(list(self.running), self.name)
        for job_id in canceled:
            self.engine.cancel([job_id])
            self._end(self.running[job_id], JobStatus.CANCELED)
        for job_id in lost:
            # this worker was taken for dead (stalled past WORKER_HEARTBEAT_TTL) and the job was
            # requeued: whoever holds it now ends it; leave it alone but for our own execution
            run = self.running.pop(job_id)
            self.engine.cancel([job_id])
            self.cleanup_execution(run.job, pipeline=self.connection, execution=run.execution)
            log.warning("job %s is no longer this worker's (requeued while it looked dead); dropped", job_id)
        for run in list(self.running.values()):
            if run.timeout is not None and time.monotonic() - run.started > run.timeout:
                step, total = self.engine.progress(run.id)
                self.engine.cancel([run.id])
                self._end(run, JobStatus.FAILED, error=JobError(
                    "timeout", f"the job ran longer than its timeout of {run.timeout:g} s and was stopped at "
                               f"step {step} of {total}"))

    def _end(self, run: _Running, status: JobStatus, images: Tensor | None = None,
             error: JobError | None = None) -> None:
        """End a job that has left the engine: its record, PNGs, metrics, webhook, then RQ's view."""
        self.running.pop(run.id, None)
        self._unended[run.id] = (run, status, images, error)  # until written: Redis may be down
        try:
            if status == JobStatus.SUCCEEDED:
                moved = self.reporter.succeeded(run.id, images, run.request)
            elif status == JobStatus.FAILED:
                moved = self.reporter.failed(run.id, error)
            else:
                moved = self.reporter.canceled(run.id)
        except REDIS_DOWN:
            raise
        except Exception as e:  # noqa: BLE001 - e.g. a PNG that cannot be encoded: this job fails alone
            log.exception("job %s: writing its end failed", run.id)
            status, error = JobStatus.FAILED, JobError("internal_error", f"{type(e).__name__}: {e}")
            moved = self.reporter.failed(run.id, error)
        self._close(run, status, images, error, deleted=not moved and bool(self.reporter.jobs.missing([run.id])))

    def _close(self, run: _Running, status: JobStatus, images: Tensor | None, error: JobError | None,
               deleted: bool = False) -> None:
        """RQ's side of an end whose record is written (or whose record was deleted while it ran):
        its registries, then the log line."""
        job, queue, execution = run.job, run.queue, run.execution
        if deleted:
            # DELETE /jobs/{id} removed RQ's job with the record; this worker's heartbeat may have
            # written its hash back since, without a TTL: remove it again rather than finish it
            with self.connection.pipeline() as pipe:
                self.cleanup_execution(job, pipeline=pipe, execution=execution)
                pipe.delete(job.key)
                pipe.execute()
            status = JobStatus.CANCELED
        elif status == JobStatus.SUCCEEDED:
            record_success(self, job, queue, execution, result_value(status, int(images.shape[0])))
        elif status == JobStatus.FAILED:
            record_failure(self, job, queue, execution, JobFailed(error))
        else:
            job.ended_at = now()
            with self.connection.pipeline() as pipe:
                self.cleanup_execution(job, pipeline=pipe, execution=execution)
                pipe.execute()
            if job.get_status() != RQStatus.CANCELED:
                job.cancel()
        del self._unended[run.id]
        log.info("job %s %s after %.1f s%s", run.id, "deleted" if deleted else status.value,
                 time.monotonic() - run.started, f": {error.code}: {error.message}" if error and not deleted else "")
        if not self.running:
            self.set_state(WorkerStatus.IDLE)

    def _retry_ends(self) -> None:
        """Write the ends a Redis outage interrupted, or that a step made (idempotent: the record
        moves once, PNGs are the same). The successes of one step go in one round trip; should
        that fail but for Redis, each is written alone, so that one bad job fails alone."""
        done = [(run, images) for run, status, images, _ in self._unended.values() if status == JobStatus.SUCCEEDED]
        if len(done) > 1:
            try:
                moved = self.reporter.succeeded_many([(run.id, images, run.request) for run, images in done])
            except REDIS_DOWN:
                raise
            except Exception:  # noqa: BLE001 - written job by job below, where the failing one fails alone
                log.exception("writing the ends of %d jobs at once failed; writing them one by one", len(done))
            else:
                unmoved = [run.id for run, _ in done if not moved[run.id]]
                deleted = self.reporter.jobs.missing(unmoved) if unmoved else set()
                for run, images in done:
                    self._close(run, JobStatus.SUCCEEDED, images, None, deleted=run.id in deleted)
        for run, status, images, error in list(self._unended.values()):
            self._end(run, status, images=images, error=error)
