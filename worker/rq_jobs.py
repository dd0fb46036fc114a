"""RQ's side of a generation job that ends in the batching worker, on rq's public API.

rq records an end in `Worker.handle_job_success` and `Worker.handle_job_failure`, which its own loop
calls after `job.perform()`. The batching worker never calls `perform()`: a job's images come out of
a shared batch. Failure has a public path (`handle_execution_ended`, then `handle_job_failure` with
the error as text). Success has none that takes the return value: `handle_job_success` reads it
from a private attribute of the job, which only rq's own (private) success path sets. So a success
is written here from public pieces, as rq 3.0 writes it: the job's status and ended time, its
`Result`, the finished registry, the worker's counters, and the cleanup of the execution. The pieces
rq's success path adds for features these jobs never use (dependents, repeats, callbacks, rq's own
webhooks, rate limits) are left out: the API enqueues generation jobs without any of them.
"""

from __future__ import annotations

import traceback
from typing import Any

from rq.executions import Execution
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.queue import Queue
from rq.results import Result
from rq.worker import Worker


def record_success(worker: Worker, job: Job, queue: Queue, execution: Execution, return_value: Any) -> None:
    """The job finished with `return_value` (what `Job.return_value()` then gives): its result kept
    for the job's result TTL, the job in the finished registry, the execution cleaned up."""
    worker.handle_execution_ended(job, queue, job.success_callback_timeout)
    ttl = job.get_result_ttl(worker.default_result_ttl)
    with worker.connection.pipeline() as pipe:
        worker.increment_successful_job_count(pipeline=pipe)
        worker.increment_total_working_time(job.ended_at - job.started_at, pipe)
        job.set_status(RQStatus.FINISHED, pipeline=pipe)
        job.save(pipeline=pipe, include_meta=False, include_result=False)
        if ttl != 0:
            Result.create(job, Result.Type.SUCCESSFUL, ttl=ttl, return_value=return_value, worker_name=worker.name,
                          pipeline=pipe, execution_id=execution.id, execution_started_at=execution.created_at,
                          execution_ended_at=job.ended_at)
            job.finished_job_registry.add(job, ttl, pipe)
        job.cleanup(ttl, pipeline=pipe, remove_from_queue=False)
        worker.cleanup_execution(job, pipeline=pipe, execution=execution)
        pipe.execute()


def record_failure(worker: Worker, job: Job, queue: Queue, execution: Execution, error: BaseException) -> None:
    """The job failed with `error`: rq's failure path, with the error's one-line text as the job's
    exc_string (what `rq info` and the FailedJobRegistry show)."""
    worker.handle_execution_ended(job, queue, job.failure_callback_timeout)
    worker.handle_job_failure(job=job, queue=queue, started_job_registry=queue.started_job_registry,
                              exc_string="".join(traceback.format_exception_only(error)), execution=execution)
