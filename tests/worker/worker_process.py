"""Helpers of the process-level worker tests: submit jobs exactly as the API does (record, then RQ
enqueue by dotted path with the JSON serializer), run `python -m worker` as a subprocess, wait with
a bound, decode PNGs, receive webhooks."""

from __future__ import annotations

import contextlib
import http.server
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.serializers import JSONSerializer

from contract.jobs import TERMINAL, JobStore, new_job_id
from contract.queues import model_queue
from contract.results import RedisResultStore
from contract.settings import Settings
from diffusion.images import png_bytes
from worker.engine import BatchEngine

REPO = Path(__file__).resolve().parents[2]


def request(**fields: Any) -> dict[str, Any]:
    """A normalized request as the API stores it."""
    base = {"model": "fashion-mnist@1", "class_label": 1, "num_images": 1, "guidance": "cfg",
            "guidance_scale": 1.0, "sampler": "ddim", "steps": 4, "eta": 0.0, "seed": 0}
    return {**base, **fields}


TINY_MODELS = ("fashion-mnist@1", "plain@1")
"""The generators of the tiny test store (tests/conftest.py), as the `generators` fixture loads them."""


def queues(*refs: str) -> list[str]:
    """The RQ queues of `refs` (default: the tiny store's generators), which a worker serving them listens to."""
    return [model_queue(Settings().queue_name, ref) for ref in refs or TINY_MODELS]


def worker_queues(settings: Settings, generators: dict) -> list[str]:
    """The queues a worker serving `generators` (loaded generators by key) listens to, under `settings`."""
    return list(dict.fromkeys(model_queue(settings.queue_name, g.card.ref) for g in generators.values()))


def queue_of(redis: Redis, ref: str = "fashion-mnist@1") -> Queue:
    """The RQ queue of model `ref`, where its jobs wait and whose registries RQ keeps."""
    return Queue(model_queue(Settings().queue_name, ref), connection=redis, serializer=JSONSerializer)


def submit(redis: Redis, req: dict[str, Any], webhook_url: str | None = None, timeout: int | None = None,
           inputs: dict[str, str] | None = None) -> str:
    """Create the record and enqueue the RQ job on its model's queue, as the API's POST /generate does
    (`timeout`: the RQ job timeout, default JOB_TIMEOUT; `inputs`: base64 PNGs by field, as the record
    carries them)."""
    settings = Settings()
    job_id = new_job_id()
    JobStore(redis, settings.result_ttl).create(job_id, req["model"], req, webhook_url=webhook_url, inputs=inputs)
    queue_of(redis, req["model"]).enqueue_call(
        func="worker.tasks.generate", kwargs={"job": job_id}, job_id=job_id, timeout=timeout or settings.job_timeout,
        result_ttl=settings.result_ttl, failure_ttl=settings.result_ttl)
    return job_id


def wait_for(check: Callable[[], Any], timeout: float, what: str, proc: subprocess.Popen | None = None) -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds, or at once if the
    worker process died."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the worker exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def rq_job(redis: Redis, job_id: str) -> Job:
    """RQ's own view of a job (the API and the worker enqueue with the JSON serializer)."""
    return Job.fetch(job_id, connection=redis, serializer=JSONSerializer)


def rq_status(redis: Redis, job_id: str) -> RQStatus:
    return rq_job(redis, job_id).get_status()


@contextlib.contextmanager
def own_signal_handlers() -> Iterator[None]:
    """rq workers install SIGINT/SIGTERM handlers; give pytest its own back afterwards."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def record(redis: Redis, job_id: str) -> dict[str, Any]:
    return JobStore(redis).get(job_id)


def wait_ended(redis: Redis, job_ids: list[str], timeout: float, proc: subprocess.Popen | None = None) -> dict:
    store = JobStore(redis)

    def ended() -> dict | None:
        records = dict(zip(job_ids, store.get_many(job_ids)))
        return records if all(r and r["status"] in {s.value for s in TERMINAL} for r in records.values()) else None

    return wait_for(ended, timeout, f"{len(job_ids)} jobs to end", proc)


def png_pixels(redis: Redis, job_id: str, name: str) -> np.ndarray:
    data = RedisResultStore(redis).get(job_id, name)
    assert data is not None, f"no {name} for job {job_id}"
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img).astype(np.int16)


def lone_png(generators: dict, job_req: dict[str, Any]) -> np.ndarray:
    """A one-image request run alone through the engine, encoded and decoded as the worker's PNG is."""
    engine = BatchEngine(generators)
    engine.add("alone", job_req["model"], job_req)
    while engine.jobs():
        finished = engine.step().finished
    with Image.open(io.BytesIO(png_bytes(finished["alone"][0]))) as img:
        return np.asarray(img).astype(np.int16)


@contextlib.contextmanager
def worker_process(redis_url: str, store_root: Path, log_path: Path, *args: str,
                   **env: str) -> Iterator[subprocess.Popen]:
    """`python -m worker ARGS` against the test Redis and store; killed at the end if still running."""
    full_env = {**os.environ, "REDIS_URL": redis_url, "MODEL_STORE": str(store_root), "OMP_NUM_THREADS": "1",
                "WORKER_DEVICE": "cpu", **env}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "worker", *args], cwd=REPO, env=full_env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


class WebhookReceiver:
    """A tiny HTTP server on a free loopback port that records what is POSTed to it; the first
    `fail_first` requests get a 503, to exercise the retries."""

    def __init__(self, fail_first: int = 0):
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.attempts = 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.attempts += 1
                if receiver.attempts <= fail_first:
                    self.send_response(503)
                else:
                    receiver.received.append((dict(self.headers), body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
