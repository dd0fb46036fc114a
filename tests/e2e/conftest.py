"""Fixtures of the end-to-end tests: the service as a user runs it (a private Redis, `imagegen serve`
and `imagegen worker` as real processes on the tiny random models) and a webhook receiver."""

from __future__ import annotations

from typing import Iterator

import pytest
from e2e_support import Processes, Service, WebhookReceiver, imagegen_command, service_env, wait_ready

from service.redis_local import LocalRedis, free_port


@pytest.fixture(scope="module")
def service(tmp_path_factory, tiny_store_root) -> Iterator[Service]:
    """A private Redis, `imagegen serve` on a free port and one `imagegen worker` on the CPU."""
    tmp = tmp_path_factory.mktemp("e2e")
    with LocalRedis(tmp / "redis") as redis:
        env = service_env(tiny_store_root, REDIS_URL=redis.url)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        processes = Processes(tmp)
        try:
            processes.start("api", [*imagegen_command(), "serve", "--port", str(port)], env)
            processes.start("worker", [*imagegen_command(), "worker", "--device", "cpu"], env)
            wait_ready(url, processes)
            yield Service(url, redis.url, processes)
        finally:
            processes.stop()


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()
