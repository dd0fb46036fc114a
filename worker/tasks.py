"""`generate(job)`: the RQ job function the API enqueues by dotted path (`worker.tasks.generate`).

The batching worker (worker.main) never calls it: it recognises jobs of this function and batches
them. This function is what a plain `rq worker --serializer json -w rq.worker.SimpleWorker` runs, one
job at a time with no cross-job batching, with the same engine and the same record updates. Models
are loaded once per process.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from redis import Redis
from rq import get_current_job
from rq.timeouts import JobTimeoutException

from contract.jobs import JobStatus, record_inputs
from contract.settings import Settings
from model_store import ModelStore, ModelStoreError
from worker.engine import BatchEngine, JobError, JobFailed
from worker.models import cached_generator, resolve_device
from worker.reporting import JobReporter, result_value
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

WEBHOOK_DRAIN = 10.0
"""Seconds the task waits for its webhook before returning: a forking rq Worker's child would
otherwise exit with the delivery under way."""


def generate(job: str) -> dict[str, Any]:
    """Run generation job `job` (a JobStore id) alone; returns {"status", "images"}, raises on failure."""
    settings, worker_settings = Settings(), WorkerSettings()
    rq_job = get_current_job()
    if rq_job is not None:
        connection = rq_job.connection
    else:
        connection = Redis.from_url(settings.redis_url)
    reporter = JobReporter(connection, settings)
    record = reporter.jobs.get(job)
    if record is None:
        raise LookupError(f"job record {job} not found: expired or never created")
    worker_name = (rq_job.worker_name if rq_job is not None else None) or f"{socket.gethostname()}.{os.getpid()}"
    if not reporter.jobs.start(job, worker_name):
        log.info("job %s is %s, not queued: skipped", job, record.get("status"))
        return result_value(JobStatus(record.get("status", "canceled")))
    try:
        return _run(job, record, reporter, settings, worker_settings)
    except JobFailed:
        raise
    except JobTimeoutException:
        timeout = rq_job.timeout if rq_job is not None else None
        reporter.failed(job, JobError("timeout", f"the job ran longer than its timeout of {timeout} s"))
        raise
    except Exception as e:
        reporter.failed(job, JobError("internal_error", f"{type(e).__name__}: {e}"))
        raise
    finally:
        reporter.webhooks.drain(WEBHOOK_DRAIN)


def _fail(reporter: JobReporter, job: str, error: JobError) -> JobFailed:
    reporter.failed(job, error)
    return JobFailed(error)


def _run(job: str, record: dict[str, Any], reporter: JobReporter, settings: Settings,
         worker_settings: WorkerSettings) -> dict[str, Any]:
    request = record["request"]
    model = record.get("model") or request.get("model")
    try:
        generator = cached_generator(ModelStore(settings.model_store), model,
                                     resolve_device(worker_settings.worker_device))
    except (ModelStoreError, ValueError) as e:
        raise _fail(reporter, job, JobError("unknown_model", str(e))) from None
    engine = BatchEngine({generator.card.ref: generator}, worker_settings.max_batch_images)
    try:
        engine.add(job, model, request, record_inputs(record))
    except ValueError as e:
        raise _fail(reporter, job, JobError("invalid_request", str(e))) from None
    reporter.started(job, engine.progress(job)[1])
    while True:
        if reporter.jobs.cancel_requested([job]):
            engine.cancel([job])
            reporter.canceled(job)
            return result_value(JobStatus.CANCELED)
        report = engine.step()
        reporter.step(report)
        reporter.progress(report.progress, report.previews)
        if job in report.failed:
            raise _fail(reporter, job, report.failed[job])
        if job in report.finished:
            images = report.finished[job]
            reporter.succeeded(job, images, request)
            return result_value(JobStatus.SUCCEEDED, int(images.shape[0]))
