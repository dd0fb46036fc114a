"""Many clients waiting at once: every `?wait=` holds a pub/sub connection to Redis while it lasts,
and redis-py caps a pool at 100 connections unless told otherwise. Benchmark 3 found 256 waiting
clients all answered 503; the cap is now REDIS_MAX_CONNECTIONS (default 2048), and a process past it
answers a 503 that says so, never a 500. Real uvicorn, real Redis, a stand-in worker."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from api_helpers import FakeWorker, api_process, queue_of
from redis import Redis

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@contextmanager
def finishing_worker(redis_url: str, after: float) -> Iterator[None]:
    """A stand-in worker that, `after` seconds in, finishes every queued job until stopped."""
    redis = Redis.from_url(redis_url)
    worker = FakeWorker(redis, queue_of(redis))
    stop = threading.Event()

    def loop() -> None:
        stop.wait(after)
        while not stop.is_set():
            for job_id in worker.queue.job_ids:
                worker.start(job_id)
                worker.succeed(job_id)
            stop.wait(0.05)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


async def waits(base: str, n: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:
        return await asyncio.gather(*(http.post("/generate?wait=30", json={"class_label": 1, "num_images": 1})
                                      for _ in range(n)))


def test_more_waiting_clients_than_redis_py_s_default_pool_are_all_answered(redis_url, tiny_store_root, tmp_path):
    # the worker holds off until every request is waiting, so that 150 pub/sub connections are open at once
    with api_process(redis_url, tiny_store_root, tmp_path / "api.log") as base, finishing_worker(redis_url, after=5.0):
        responses = asyncio.run(waits(base, 150))
    assert [r.status_code for r in responses] == [200] * 150, {r.status_code for r in responses}
    assert all(r.json()["status"] == "succeeded" for r in responses)


def test_past_the_cap_a_waiting_client_gets_a_503_that_says_so(redis_url, tiny_store_root, tmp_path):
    with api_process(redis_url, tiny_store_root, tmp_path / "api.log", REDIS_MAX_CONNECTIONS="8") as base, \
            finishing_worker(redis_url, after=3.0):
        responses = asyncio.run(waits(base, 20))
        codes = sorted({r.status_code for r in responses})
        assert codes == [200, 503], codes
        for r in responses:
            if r.status_code == 503:
                assert r.headers["content-type"].startswith("application/problem+json")
                assert r.json()["type"].endswith("/redis-connections-exhausted") and "Retry-After" in r.headers
                assert "REDIS_MAX_CONNECTIONS" in r.json()["detail"]
        # once the waits are over, the connections are back
        again = httpx.post(f"{base}/generate?wait=10", json={"class_label": 1}, timeout=30)
        assert again.status_code == 200, again.text
