"""Limits: the per-key rate (429 with Retry-After), the queue depth (429), the body size (413), and CORS
origins from the settings (none by default). Each answer is a problem document."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from api_helpers import assert_problem
from fastapi.testclient import TestClient

from contract.settings import Settings
from service.app import create_app

ALPHA, BETA = "alpha-limits-key", "beta-limits-key"


def app_client(settings: Settings, **update) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=update)), raise_server_exceptions=False)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def clear_of_the_minute_boundary() -> None:
    # a fixed window resets at each minute: start well inside one
    left = 60 - time.time() % 60
    if left < 5:
        time.sleep(left + 0.1)


@pytest.fixture
def rate_limited(settings) -> Iterator[TestClient]:
    with app_client(settings, api_keys=f"{ALPHA},{BETA}", rate_limit_per_minute=3) as c:
        yield c


def test_a_key_over_its_rate_gets_429_with_retry_after_and_other_keys_do_not(rate_limited):
    clear_of_the_minute_boundary()
    for _ in range(3):
        assert rate_limited.get("/samplers", headers=bearer(ALPHA)).status_code == 200
    r = rate_limited.post("/generate", json={"class_label": 1}, headers=bearer(ALPHA))
    problem = assert_problem(r, 429)
    assert 1 <= int(r.headers["retry-after"]) <= 60 and "3 requests per minute" in problem["detail"]
    assert problem["type"].endswith("/rate-limited")
    assert rate_limited.get("/samplers", headers=bearer(BETA)).status_code == 200
    # health and readiness are never limited: probes must not be locked out
    assert rate_limited.get("/healthz").status_code == 200


def test_the_open_api_limits_each_client_address(settings):
    clear_of_the_minute_boundary()
    with app_client(settings, rate_limit_per_minute=2) as c:
        assert [c.get("/samplers").status_code for _ in range(3)] == [200, 200, 429]


def test_no_rate_limit_by_default(client):
    assert {client.get("/samplers").status_code for _ in range(30)} == {200}


def test_a_full_model_queue_is_429_until_a_job_leaves_it(settings, fake_worker):
    with app_client(settings, max_queue_depth=2) as c:
        first = c.post("/generate", json={"class_label": 1}).json()["id"]
        assert c.post("/generate", json={"class_label": 1}).status_code == 202
        r = c.post("/generate", json={"class_label": 1}, headers={"Idempotency-Key": "k1"})
        problem = assert_problem(r, 429)
        assert "the queue of fashion-mnist@1 is full (2 jobs waiting, MAX_QUEUE_DEPTH 2)" in problem["detail"]
        assert int(r.headers["retry-after"]) > 0 and problem["type"].endswith("/queue-full")
        # per model: another model's queue still takes jobs
        assert c.post("/generate", json={"class_label": 1, "model": "plain"}).status_code == 202
        fake_worker.start(first)
        # the refused request's Idempotency-Key made no job: the retry makes one
        retry = c.post("/generate", json={"class_label": 1}, headers={"Idempotency-Key": "k1"})
        assert retry.status_code == 202, retry.text


def test_a_body_over_max_body_bytes_is_413_whether_declared_or_streamed(client, settings):
    ten_mb = b'{"class_label": 1, "model": "' + b"x" * 10_000_000 + b'"}'
    problem = assert_problem(client.post("/generate", content=ten_mb, headers={"Content-Type": "application/json"}),
                             413)
    assert "1048576 bytes (MAX_BODY_BYTES)" in problem["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: transfer-encoding chunked
        yield b'{"class_label": 1, "model": "'
        for _ in range(20):
            yield b"x" * 100_000
        yield b'"}'

    assert_problem(client.post("/generate", content=chunks(), headers={"Content-Type": "application/json"}), 413)
    # under the limit, streamed or not, the body reaches validation as it was sent
    small = b'{"class_label": 1, "num_images": 1}'
    assert client.post("/generate", content=iter([small[:10], small[10:]]),
                       headers={"Content-Type": "application/json"}).status_code == 202
    with app_client(settings, max_body_bytes=2048) as c:
        assert_problem(c.post("/generate", json={"class_label": 1, "model": "y" * 3000}), 413)
        assert_problem(c.post("/generate", json={"class_label": 1, "model": "y" * 1000}), 422)


def test_images_and_steps_per_job_are_bounded_by_the_settings(settings):
    with app_client(settings, max_images_per_job=2, max_steps=10) as c:
        for field, value in (("num_images", 3), ("steps", 11)):
            body = {"class_label": 1, "num_images": 1, field: value}
            problem = assert_problem(c.post("/generate", json=body), 422)
            assert problem["errors"][0]["field"] == field
        assert c.post("/generate", json={"class_label": 1, "num_images": 2, "steps": 10}).status_code == 202


def test_cors_is_off_by_default_and_allows_only_the_configured_origins(client, settings):
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    r = client.options("/generate", headers=preflight)
    assert "access-control-allow-origin" not in r.headers
    assert "access-control-allow-origin" not in client.get("/samplers", headers={"Origin": "https://app.example"}).headers
    with app_client(settings, cors_origins="https://app.example, https://other.example") as c:
        r = c.options("/generate", headers=preflight)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        r = c.get("/samplers", headers={"Origin": "https://app.example"})
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        assert "location" in r.headers["access-control-expose-headers"].lower()
        r = c.get("/samplers", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers
