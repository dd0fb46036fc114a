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
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

START_TIMEOUT_S = 120.0
"""Most seconds for the API and a worker (torch import, model load) to be ready on the busy CPU."""

STOP_TIMEOUT_S = 45.0
"""Most seconds a process gets to exit after SIGTERM (a worker's shutdown grace is 30 s)."""

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


def tail(path: Path, lines: int = 30) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(deque(f, maxlen=lines))
    except OSError:
        return "(no log)"


@dataclass
class Processes:
    """Child processes with their logs; `stop` ends them all, bounded."""

    logs: Path
    running: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "wb") as out:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.running[name] = process
        return process

    def report(self) -> str:
        """Each process's status and last log lines, for an assertion message."""
        return "\n".join(f"--- {name} (exit status {p.poll()}) {self.logs / f'{name}.log'}:\n"
                         f"{tail(self.logs / f'{name}.log')}" for name, p in self.running.items())

    def check_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.running.items() if p.poll() is not None}
        assert not dead, f"service processes died: {dead}\n{self.report()}"

    def stop(self) -> None:
        for p in self.running.values():
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for p in self.running.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


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
