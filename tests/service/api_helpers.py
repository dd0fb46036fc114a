"""Helpers of the API tests: a PNG, a stand-in worker, checks of problem documents, and the API as a
process."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from contract.jobs import JobStatus, JobStore
from contract.queues import model_queue
from contract.results import RedisResultStore

DEFAULT_REF = "fashion-mnist@1"
"""The model a request without one gets from the tiny test store (tests/conftest.py)."""


def queue_of(redis: Redis, ref: str = DEFAULT_REF, queue_name: str = "imagegen") -> Queue:
    """The RQ queue the API puts a job for `ref` on."""
    return Queue(model_queue(queue_name, ref), connection=redis, serializer=JSONSerializer)


def png(value: int = 128, size: int = 28) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (size, size), value).save(buf, format="PNG")
    return buf.getvalue()


class FakeWorker:
    """Moves a job through its record as a worker would (JobStore and the result store), with no
    model: the API's side of the contract is what is under test."""

    def __init__(self, redis: Redis, queue: Queue, result_ttl: int = 86_400) -> None:
        self.redis = redis
        self.jobs = JobStore(redis, result_ttl=result_ttl)
        self.results = RedisResultStore(redis, ttl=result_ttl)
        self.queue = queue  # the default model's, where most tests' jobs go

    def start(self, job_id: str) -> None:
        """Take the job off its model's RQ queue and start it."""
        origin = Job.fetch(job_id, connection=self.redis, serializer=JSONSerializer).origin
        Queue(origin, connection=self.redis, serializer=JSONSerializer).remove(job_id)
        assert self.jobs.start(job_id, "fake-worker")

    def progress(self, job_id: str, step: int, total: int) -> None:
        self.jobs.set_progress(job_id, step, total)

    def succeed(self, job_id: str) -> list[bytes]:
        """Store one PNG per image and the grid, then finish; returns the image bytes."""
        request = self.jobs.get(job_id)["request"]
        images = [png(10 * i) for i in range(request["num_images"])]
        for i, data in enumerate(images):
            self.results.put(job_id, f"{i}.png", data)
        self.results.put(job_id, "grid.png", png(255, size=56))
        self.jobs.finish(job_id, JobStatus.SUCCEEDED,
                         images=[{"index": i, "seed": request["seed"] + i} for i in range(len(images))])
        return images

    def fail(self, job_id: str, code: str = "sampling_error", message: str = "NaN in the sample") -> None:
        self.jobs.finish(job_id, JobStatus.FAILED, error={"code": code, "message": message})


def submit(client: TestClient, **body: Any) -> dict[str, Any]:
    """POST /generate that must be accepted; the job document."""
    body.setdefault("class_label", 1)
    r = client.post("/generate", json=body)
    assert r.status_code == 202, r.text
    return r.json()


def assert_problem(r, status: int) -> dict[str, Any]:
    """`r` is an RFC 9457 problem with `status`; its body."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    body = r.json()
    assert body["status"] == status and body["title"] and body["detail"] and body["type"], body
    assert "Traceback" not in r.text
    return body


REPO = Path(__file__).resolve().parents[2]


@contextmanager
def api_process(redis_url: str, store: Path, log: Path, **env: str) -> Iterator[str]:
    """`python -m service` under uvicorn on a free loopback port, with `env` over the environment
    (less any REDIS_MAX_CONNECTIONS it has); yields its base URL once /healthz answers."""
    from service.redis_local import free_port

    port = free_port()
    full = {k: v for k, v in os.environ.items() if k != "REDIS_MAX_CONNECTIONS"}
    full.update(REDIS_URL=redis_url, MODEL_STORE=str(store), LOG_LEVEL="warning", **env)
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)],
                                   cwd=REPO, env=full, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the API did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
