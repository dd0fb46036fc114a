"""Fixtures of the end-to-end tests: the service as a user runs it (a private Redis, `imagegen serve`
and `imagegen worker` as real processes on the tiny random models) and a webhook receiver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e_support import Service, WebhookReceiver, running_service


@pytest.fixture(scope="module")
def service(tmp_path_factory, tiny_store_root) -> Iterator[Service]:
    """A private Redis, `imagegen serve` on a free port and one `imagegen worker` on the CPU."""
    with running_service(tmp_path_factory.mktemp("e2e"), tiny_store_root) as service:
        yield service


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()
