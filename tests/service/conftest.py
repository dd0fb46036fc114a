"""The API under test: the real app (lifespan included) on the session's private Redis, the tiny model
store, and a stand-in for the worker that drives job records the way a worker does."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from api_helpers import FakeWorker, queue_of
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue

from contract.settings import Settings
from service.app import create_app


@pytest.fixture
def settings(redis_url, tiny_store_root, monkeypatch) -> Settings:
    """Settings as a deployment gets them: from the environment."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("MODEL_STORE", str(tiny_store_root))
    monkeypatch.delenv("DEFAULT_MODEL", raising=False)
    return Settings()


@pytest.fixture
def client(settings) -> Iterator[TestClient]:
    # raise_server_exceptions off: a 500 must reach the test as the client would see it
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def redis(redis_url) -> Redis:
    return Redis.from_url(redis_url)


@pytest.fixture
def queue(redis, settings) -> Queue:
    """The queue of the default model, where a request without `model` goes."""
    return queue_of(redis, queue_name=settings.queue_name)


@pytest.fixture
def fake_worker(redis, queue, settings) -> FakeWorker:
    return FakeWorker(redis, queue, settings.result_ttl)
