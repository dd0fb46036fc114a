"""What the worker writes about a job: its record (status, progress), its PNGs, the metrics and the
webhook. Shared by the batching worker (worker.main) and the one-job task (worker.tasks)."""

from __future__ import annotations

import base64
import logging
import math
import time
from typing import Any

from redis import Redis
from torch import Tensor

from contract.jobs import JobStatus, JobStore, decode_record, job_document, job_key
from contract.results import RedisResultStore, result_names
from contract.settings import Settings
from diffusion.images import make_grid, png_bytes
from worker.engine import JobError, StepReport
from worker.metrics import record_job_end, record_step
from worker.webhooks import WebhookSender

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.5
"""Seconds between two progress updates of one job, so that fast steps do not flood Redis and the
event streams; the last step is always written."""

GRID_COLUMNS = 8
"""Most images per row of grid.png (as `imagegen generate` writes it)."""


def result_value(status: JobStatus, images: int = 0) -> dict[str, Any]:
    """The RQ return value of a generation job (what `rq info` and Job.return_value show)."""
    return {"status": status.value, "images": images}


def grid_png(images: Tensor) -> bytes:
    """The images [n, C, H, W] of one job as the PNG of grid.png (up to GRID_COLUMNS per row)."""
    return png_bytes(make_grid(images.clamp(-1, 1), nrow=min(images.shape[0], GRID_COLUMNS)))


class JobReporter:
    """Writes a job's progress and end into Redis; every `finish` moves the record once, and only the
    mover writes metrics and sends the webhook."""

    def __init__(self, redis: Redis, settings: Settings, webhooks: WebhookSender | None = None) -> None:
        self.redis = redis
        self.jobs = JobStore(redis, settings.result_ttl)
        self.results = RedisResultStore(redis, settings.result_ttl)
        self.webhooks = webhooks or WebhookSender(settings.webhook_secret, settings.webhook_timeout,
                                                  settings.webhook_max_attempts)
        self._sent: dict[str, tuple[float, int]] = {}  # job -> (when, step) of its last progress update

    def started(self, job_id: str, total: int) -> None:
        """Progress 0 of `total`, so that a client knows the job's length from its first poll."""
        self.jobs.set_progress(job_id, 0, total)
        self._sent[job_id] = (time.monotonic(), 0)

    def progress(self, progress: dict[str, tuple[int, int]], previews: dict[str, Tensor] | None = None) -> None:
        """Write the progress of each job that moved, at most once per PROGRESS_INTERVAL each; a job
        with a preview (its images' current x_0 estimate) is written now, the preview in its event.
        All of one step's writes go in one round trip."""
        now = time.monotonic()
        previews = previews or {}
        pipe = self.redis.pipeline(transaction=False)
        for job_id, (step, total) in progress.items():
            when, last = self._sent.get(job_id, (-math.inf, -1))
            preview = previews.get(job_id)
            if preview is not None:
                self.jobs.set_progress(job_id, step, total, preview=base64.b64encode(grid_png(preview)).decode(),
                                       pipe=pipe)
                self._sent[job_id] = (now, step)
            elif step != last and (step == total or now - when >= PROGRESS_INTERVAL):
                self.jobs.set_progress(job_id, step, total, pipe=pipe)
                self._sent[job_id] = (now, step)
        if len(pipe):
            pipe.execute()

    def step(self, report: StepReport) -> None:
        """The metrics of one engine step."""
        pipe = self.redis.pipeline(transaction=False)
        record_step(pipe, report.batch_images, report.seconds)
        pipe.execute()

    def succeeded(self, job_id: str, images: Tensor, request: dict[str, Any]) -> bool:
        """Store the PNGs and the grid, then mark the job succeeded (PNGs first: a client that sees
        `succeeded` can fetch them at once)."""
        return self.succeeded_many([(job_id, images, request)])[job_id]

    def succeeded_many(self, done: list[tuple[str, Tensor, dict[str, Any]]]) -> dict[str, bool]:
        """`succeeded` for the jobs one engine step finished, (job, images, request) each, in one
        round trip for all their PNGs, records and end events (and one for the metrics); whether
        each record moved. Every PNG is encoded before anything is written."""
        pipe = self.redis.pipeline(transaction=False)
        counts, at = [], []  # per job: its images, and where its finish's answer stands in the pipeline's
        for job_id, images, request in done:
            n, seed = images.shape[0], int(request["seed"])
            files = {f"{i}.png": png_bytes(images[i]) for i in range(n)}
            files["grid.png"] = grid_png(images)
            counts.append(n)
            self.results.put_many(job_id, files, pipe=pipe)
            at.append(len(pipe))
            self.jobs.finish(job_id, JobStatus.SUCCEEDED, images=[{"index": i, "seed": seed + i} for i in range(n)],
                             pipe=pipe)
            pipe.hgetall(job_key(job_id))  # after the move: what a webhook posts
        answers = pipe.execute()
        moved = {job_id: bool(answers[i]) for (job_id, _, _), i in zip(done, at)}
        records = [decode_record(answers[i + 1]) for i in at]
        for job_id, _, _ in done:
            self._sent.pop(job_id, None)
        for (job_id, _, _), n, record in zip(done, counts, records):
            if record is None:
                # deleted while it ran (DELETE /jobs/{id}), or expired: the PNGs just written must not
                # outlive it (had this failed, they would still expire with the result TTL)
                self.results.delete(job_id, result_names(n))
        metrics = self.redis.pipeline(transaction=False)
        for (job_id, _, _), n, record in zip(done, counts, records):
            if moved[job_id]:
                record_job_end(metrics, JobStatus.SUCCEEDED.value, n)
                self._webhook(record)
            else:
                log.warning("job %s had already ended (or was deleted, or its record expired); succeeded not "
                            "recorded", job_id)
        if len(metrics):
            metrics.execute()
        return moved

    def failed(self, job_id: str, error: JobError) -> bool:
        return self._end(job_id, JobStatus.FAILED, error={"code": error.code, "message": error.message})

    def canceled(self, job_id: str) -> bool:
        return self._end(job_id, JobStatus.CANCELED)

    def requeued(self, job_id: str) -> None:
        """The job goes back to `queued` for another worker (this one is stopping)."""
        self._sent.pop(job_id, None)
        self.jobs.requeue(job_id)

    def _end(self, job_id: str, status: JobStatus, num_images: int = 0, images: list[dict] | None = None,
             error: dict[str, str] | None = None) -> bool:
        self._sent.pop(job_id, None)
        if not self.jobs.finish(job_id, status, images=images, error=error):
            log.warning("job %s had already ended (or was deleted, or its record expired); %s not recorded", job_id,
                        status.value)
            return False
        self.ended(job_id, status, num_images)
        return True

    def ended(self, job_id: str, status: JobStatus, num_images: int = 0) -> None:
        """What follows a job's terminal transition, by whoever made it: the metrics and the webhook."""
        record_job_end(self.redis, status.value, num_images)
        self._webhook(self.jobs.get(job_id))

    def _webhook(self, record: dict[str, Any] | None) -> None:
        if record and record.get("webhook_url"):
            self.webhooks.send(record["webhook_url"], job_document(record))
