"""Redis failures, end to end: a private Redis with append-only persistence that the test stops and
restarts (same port, same data directory), `imagegen serve` and `imagegen worker` as processes.

- Redis killed (SIGKILL) with jobs queued and restarted: the jobs survive and run.
- Redis stopped for 5 s with a job running: the API answers 503 (with Retry-After) in that window and
  202 after; the worker waits, reconnects and finishes the job it held and the ones submitted after.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from e2e_support import Processes, imagegen_command, service_env, wait_ready

from service.redis_local import LocalRedis, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

OUTAGE_S = 5.0
WAIT_S = 120.0


@dataclass
class Stack:
    redis: LocalRedis
    url: str
    processes: Processes
    env: dict[str, str]

    def start_worker(self) -> None:
        if "worker" not in self.processes.running:
            self.processes.start("worker", [*imagegen_command(), "worker", "--device", "cpu"], self.env)

    def kill_redis(self) -> None:
        """A crash: no shutdown, no final fsync (append-only loses at most the last second)."""
        self.redis.process.kill()
        self.redis.process.wait(timeout=10)
        self.redis.process = None


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_store_root) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("faults")
    redis = LocalRedis(tmp / "redis", appendonly=True).start()
    env = service_env(tiny_store_root, REDIS_URL=redis.url)
    port = free_port()
    processes = Processes(tmp)
    try:
        processes.start("api", [*imagegen_command(), "serve", "--port", str(port)], env)
        yield Stack(redis, f"http://127.0.0.1:{port}", processes, env)
    finally:
        processes.stop()
        redis.stop()


def submit(stack: Stack, **body) -> dict:
    r = httpx.post(f"{stack.url}/generate", json={"class_label": 1, "num_images": 1, **body}, timeout=30)
    assert r.status_code == 202, r.text
    return r.json()


def wait_status(stack: Stack, job_ids: list[str], timeout: float = WAIT_S) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    docs: dict[str, dict] = {}
    while time.monotonic() < deadline:
        stack.processes.check_alive()
        docs = {j: httpx.get(f"{stack.url}/jobs/{j}", timeout=30).json() for j in job_ids}
        if all(d.get("status") in ("succeeded", "failed", "canceled") for d in docs.values()):
            return docs
        time.sleep(0.5)
    pytest.fail(f"jobs not ended after {timeout:g} s: {[d.get('status') for d in docs.values()]}\n"
                f"{stack.processes.report()}")


def wait_api_up(stack: Stack, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.processes.check_alive()
        try:
            if httpx.get(f"{stack.url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    pytest.fail(f"the API did not come up\n{stack.processes.report()}")


def test_queued_jobs_survive_a_redis_crash_with_append_only_persistence(stack):
    wait_api_up(stack)
    # no worker yet: the jobs stay queued
    ids = [submit(stack, steps=3, seed=100 + i)["id"] for i in range(5)]
    time.sleep(1.5)  # appendfsync everysec: written to disk within a second
    stack.kill_redis()
    assert httpx.post(f"{stack.url}/generate", json={"class_label": 1}, timeout=30).status_code == 503
    stack.redis.start()
    deadline = time.monotonic() + 15  # the API's pool reconnects at its next request or so
    while (first := httpx.get(f"{stack.url}/jobs/{ids[0]}", timeout=30)).status_code == 503:
        assert time.monotonic() < deadline, first.text
        time.sleep(0.2)
    docs = {j: httpx.get(f"{stack.url}/jobs/{j}", timeout=30).json() for j in ids}
    assert [d["status"] for d in docs.values()] == ["queued"] * 5, docs
    assert sorted(d["queue_position"] for d in docs.values()) == [0, 1, 2, 3, 4]

    stack.start_worker()
    wait_ready(stack.url, stack.processes)
    docs = wait_status(stack, ids)
    assert [d["status"] for d in docs.values()] == ["succeeded"] * 5, docs
    for d in docs.values():
        r = httpx.get(f"{stack.url}{d['images'][0]['url']}", timeout=30)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"


def test_a_5_s_redis_outage_is_503_then_202_and_the_worker_resumes(stack):
    stack.start_worker()
    wait_ready(stack.url, stack.processes)
    held = submit(stack, steps=150, seed=7)["id"]
    deadline = time.monotonic() + 60
    while httpx.get(f"{stack.url}/jobs/{held}", timeout=30).json()["status"] != "running":
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.1)

    stack.redis.stop()
    down_at = time.monotonic()
    answers = []
    while time.monotonic() - down_at < OUTAGE_S:
        r = httpx.post(f"{stack.url}/generate", json={"class_label": 2, "num_images": 1, "steps": 3}, timeout=30)
        answers.append(r.status_code)
        assert r.status_code == 503, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert int(r.headers["retry-after"]) > 0 and "Redis" in r.json()["detail"]
        assert httpx.get(f"{stack.url}/readyz", timeout=30).status_code == 503
        time.sleep(0.5)
    stack.redis.start()
    up_at = time.monotonic()

    # the API's connection pool reconnects at the next request or so
    while True:
        r = httpx.post(f"{stack.url}/generate", json={"class_label": 2, "num_images": 1, "steps": 3}, timeout=30)
        if r.status_code == 202:
            break
        assert r.status_code == 503 and time.monotonic() - up_at < 15, r.text
        time.sleep(0.2)
    after = r.json()["id"]
    first_202_s = time.monotonic() - up_at

    docs = wait_status(stack, [held, after])
    assert docs[held]["status"] == "succeeded" and docs[after]["status"] == "succeeded", docs
    stack.processes.check_alive()  # the worker waited and reconnected; nothing crashed for good
    log = (stack.processes.logs / "worker.log").read_text()
    assert "Redis unreachable" in log
    print(f"\n{len(answers)} submissions during the {OUTAGE_S:g} s outage: all 503; first 202 "
          f"{first_202_s:.2f} s after the restart; the held job and a new one succeeded")
