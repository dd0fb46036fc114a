"""Helpers of the end-to-end tests: service processes with their logs, bounded waits, a webhook
receiver on loopback. (Not in conftest.py: a test module cannot import a conftest by name reliably,
since every test folder has one.)

Every wait is bounded; a process that dies or never gets ready fails the test with its last log lines.
"""

from __future__ import annotations

import http.server
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from imagegen.processes import Processes, log_tail

START_TIMEOUT_S = 120.0
"""Most seconds for the API and a worker (torch import, model load) to be ready on the busy CPU."""

WEBHOOK_SECRET = "e2e-webhook-secret"


def imagegen_command() -> list[str]:
    """The installed `imagegen` script beside this Python, else `python -m imagegen`."""
    script = Path(sys.executable).with_name("imagegen")
    return [str(script)] if script.exists() else [sys.executable, "-m", "imagegen"]


def service_env(store_root: Path, **extra: str) -> dict[str, str]:
    """The environment of every service process: the tiny store, one thread (the 2-core machine is
    shared: contended OpenMP threads make the tiny networks far slower), no inherited REDIS_URL."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "API_KEYS")}
    env.update(MODEL_STORE=str(store_root), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               WEBHOOK_SECRET=WEBHOOK_SECRET, **extra)
    return env


def tail(path: Path) -> str:
    """The last lines of a log, for an assertion message."""
    return "\n".join(log_tail(path))


def wait_ready(url: str, processes: Processes, timeout: float = START_TIMEOUT_S) -> None:
    """Until `/readyz` answers 200; fails with the logs if a process dies or time runs out."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        processes.check_alive()
        try:
            r = httpx.get(f"{url}/readyz", timeout=5)
            if r.status_code == 200:
                return
            last = r.text
        except httpx.TransportError as e:
            last = repr(e)
        time.sleep(0.25)
    pytest.fail(f"not ready after {timeout:g} s: {last}\n{processes.report()}")


@dataclass
class Service:
    url: str
    redis_url: str
    processes: Processes


@contextmanager
def running_service(tmp: Path, store_root: Path, **env: str) -> Iterator[Service]:
    """A private Redis, `imagegen serve` on a free port and one `imagegen worker` on the CPU, with
    `env` added to their environment (e.g. API_KEYS)."""
    from service.redis_local import LocalRedis, free_port

    with LocalRedis(tmp / "redis") as redis:
        environment = service_env(store_root, REDIS_URL=redis.url, **env)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        processes = Processes(tmp)
        try:
            processes.start("api", [*imagegen_command(), "serve", "--port", str(port)], environment)
            processes.start("worker", [*imagegen_command(), "worker", "--device", "cpu"], environment)
            wait_ready(url, processes)
            yield Service(url, redis.url, processes)
        finally:
            processes.stop()


class WebhookReceiver:
    """An HTTP server on a free loopback port that keeps every POST (headers, body) it gets."""

    def __init__(self) -> None:
        self.received: queue.Queue[tuple[dict[str, str], bytes]] = queue.Queue()
        received = self.received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.put(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:  # quiet: pytest shows failures, not traffic
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def next(self, timeout: float) -> tuple[dict[str, str], bytes]:
        """The next delivery (headers with lower-case names, raw body); fails after `timeout` s."""
        try:
            return self.received.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no webhook delivery within {timeout:g} s")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def as_json(body: bytes) -> dict:
    return json.loads(body.decode())
