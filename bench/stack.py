"""The whole service for benchmarks 2 and 3, as a user runs it: a private redis-server on a free port,
`imagegen serve` and one `imagegen worker` as child processes (as tests/e2e and `imagegen up` start
them), each with its log; and the worker counters read back from GET /metrics.

Every wait is bounded; everything started here is stopped by its process id on the way out.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.common import REPO
from imagegen.processes import Processes

READY_TIMEOUT_S = 300.0
"""Most seconds for the API and the worker (torch import, model load, warm-up) to be ready."""


def add_service_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of a benchmark that runs the whole service (`running_service`) and sends it requests:
    --wait, --log-level, --ready-timeout, --workdir."""
    p.add_argument("--wait", type=float, default=60.0,
                   help="?wait= seconds of each POST, 60 at most (default: 60); then long polls of "
                        "GET /jobs/{id}?wait=")
    p.add_argument("--log-level", default="warning", help="LOG_LEVEL of the service (default: warning)")
    p.add_argument("--ready-timeout", type=float, default=READY_TIMEOUT_S,
                   help=f"seconds for the service to be ready (default: {READY_TIMEOUT_S:g})")
    p.add_argument("--workdir", type=Path, default=None, help="logs and Redis data (default: a temporary folder)")


def imagegen_command() -> list[str]:
    """`python -m imagegen` with this interpreter: the checkout's code, wherever it runs (the device
    machine has no installed `imagegen` script)."""
    return [sys.executable, "-m", "imagegen"]


def service_env(store_root: Path, redis_url: str, **extra: str) -> dict[str, str]:
    """The environment of the service's processes: this checkout on the path, the store, no
    inherited REDIS_URL or API keys, no rate limit."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "API_KEYS", "API_KEYS_FILE")}
    path = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.update(PYTHONPATH=path, MODEL_STORE=str(store_root), REDIS_URL=redis_url, PYTHONUNBUFFERED="1",
               RATE_LIMIT_PER_MINUTE="0", MAX_QUEUE_DEPTH="0", **extra)
    return env


@dataclass
class Service:
    url: str
    redis_url: str
    children: Processes


def wait_ready(url: str, children: Processes, timeout: float = READY_TIMEOUT_S, workers: int = 1) -> None:
    """Until /readyz answers 200 with `workers` live workers; RuntimeError with the logs otherwise."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        children.check_alive()
        try:
            r = httpx.get(f"{url}/readyz", timeout=5)
            if r.status_code == 200 and r.json().get("workers", workers) >= workers:
                return
            last = r.text
        except httpx.TransportError as e:
            last = repr(e)
        time.sleep(0.25)
    raise RuntimeError(f"the service was not ready after {timeout:g} s: {last}\n{children.report()}")


@contextlib.contextmanager
def running_service(store_root: Path, workdir: Path, device: str, max_batch_images: int,
                    log_level: str = "warning", ready_timeout: float = READY_TIMEOUT_S) -> Iterator[Service]:
    """A private Redis, `imagegen serve` on a free port and one `imagegen worker --device DEVICE`."""
    from service.redis_local import LocalRedis, free_port

    workdir.mkdir(parents=True, exist_ok=True)
    with LocalRedis(workdir / "redis") as redis:
        env = service_env(store_root, redis.url, LOG_LEVEL=log_level)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        children = Processes(workdir)
        try:
            children.start("api", [*imagegen_command(), "serve", "--port", str(port)], env, cwd=REPO)
            children.start("worker", [*imagegen_command(), "worker", "--device", device,
                                      "--max-batch-images", str(max_batch_images)], env, cwd=REPO)
            wait_ready(url, children, ready_timeout)
            yield Service(url, redis.url, children)
        finally:
            children.stop()


# --- the worker's counters -------------------------------------------------------------------------

def parse_metrics(text: str) -> dict[str, float]:
    """The unlabelled samples of a Prometheus text page, by name."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or "{" in line:
            continue
        name, _, value = line.partition(" ")
        try:
            values[name] = float(value.split()[0])
        except (ValueError, IndexError):
            continue
    return values


WORKER_COUNTERS = {
    "sampling_seconds": "imagegen_sampling_seconds_total",
    "batches": "imagegen_batches_total",
    "images": "imagegen_images_generated_total",
    "batch_images_sum": "imagegen_batch_images_sum",
    "batch_images_count": "imagegen_batch_images_count",
}


def worker_counters(http: httpx.Client, url: str = "") -> dict[str, float]:
    """The workers' counters from GET /metrics (summed over workers by the API)."""
    r = http.get(f"{url}/metrics", timeout=30)
    r.raise_for_status()
    values = parse_metrics(r.text)
    return {key: values.get(name, 0.0) for key, name in WORKER_COUNTERS.items()}


async def aworker_counters(http: httpx.AsyncClient) -> dict[str, float]:
    r = await http.get("/metrics", timeout=30)
    r.raise_for_status()
    values = parse_metrics(r.text)
    return {key: values.get(name, 0.0) for key, name in WORKER_COUNTERS.items()}


def counters_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    count = delta.get("batch_images_count", 0.0)
    delta["mean_batch_images"] = delta.get("batch_images_sum", 0.0) / count if count else None
    return delta
