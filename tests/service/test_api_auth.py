"""API keys: who gets in (401 without or with a malformed header, 403 with a wrong key), which
endpoints stay open, and that a job belongs to the key that made it: another key gets 404 on every
job route, as for a job that does not exist. Keys appear in no log, no record, no document."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator

import httpx
import pytest
from api_helpers import FakeWorker, assert_problem
from fastapi.testclient import TestClient

from contract.settings import Settings
from imagegen.client import ApiError, Client
from service.app import create_app
from service.auth import KeyRing

ALPHA, BETA, GAMMA = "alpha-key-0123456789", "beta-key-9876543210", "gamma-key-from-the-file"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keyed_settings(settings, tmp_path) -> Settings:
    keys_file = tmp_path / "keys.sha256"
    keys_file.write_text(f"# gamma's key, hashed\n{digest(GAMMA)}\n\n")
    return settings.model_copy(update={"api_keys": f"{ALPHA}, {BETA}", "api_keys_file": str(keys_file)})


@pytest.fixture
def keyed(keyed_settings, caplog) -> Iterator[TestClient]:
    caplog.set_level(logging.DEBUG)
    with TestClient(create_app(keyed_settings), raise_server_exceptions=False) as c:
        yield c


def submit(client: TestClient, key: str, **body) -> dict:
    r = client.post("/generate", json={"class_label": 1, "num_images": 2, **body}, headers=bearer(key))
    assert r.status_code == 202, r.text
    return r.json()


def test_no_key_a_malformed_header_and_a_wrong_key(keyed):
    for headers in ({}, {"Authorization": ""}, {"Authorization": "Basic YWxwaGE6a2V5"},
                    {"Authorization": "Bearer"}, {"Authorization": "Bearer   "},
                    {"Authorization": f"Bearer {ALPHA} extra"}, {"Authorization": ALPHA}):
        r = keyed.get("/models", headers=headers)
        problem = assert_problem(r, 401)
        assert r.headers["www-authenticate"].startswith("Bearer"), headers
        assert "Bearer <key>" in problem["detail"]
    problem = assert_problem(keyed.get("/models", headers=bearer("not-a-key")), 403)
    assert problem["detail"] == "the API key is not valid"
    # the scheme is case-insensitive (RFC 7235); the key from API_KEYS_FILE works too
    assert keyed.get("/models", headers={"Authorization": f"bearer {ALPHA}"}).status_code == 200
    assert keyed.get("/models", headers=bearer(GAMMA)).status_code == 200


def test_every_endpoint_needs_a_key_but_health_readiness_the_page_and_the_docs(keyed):
    job = "0" * 32
    for method, path in (("GET", "/models"), ("GET", "/models/fashion-mnist"), ("GET", "/samplers"),
                         ("GET", "/metrics"), ("POST", "/generate"), ("GET", f"/jobs/{job}"),
                         ("GET", f"/jobs/{job}/images/0.png"), ("GET", f"/jobs/{job}/grid.png"),
                         ("GET", f"/jobs/{job}/events"), ("POST", f"/jobs/{job}/cancel"), ("DELETE", f"/jobs/{job}")):
        assert_problem(keyed.request(method, path, json={"class_label": 1} if method == "POST" else None), 401)
    assert keyed.get("/healthz").status_code == 200
    assert keyed.get("/readyz").status_code == 503  # no worker, but not a 401: probes carry no key
    assert keyed.get("/").status_code == 200 and keyed.get("/static/app.js").status_code == 200
    assert keyed.get("/docs").status_code == 200


def test_the_openapi_document_describes_the_auth_as_configured(keyed, client):
    keyed_schema, open_schema = keyed.get("/openapi.json").json(), client.get("/openapi.json").json()
    # keys on: a bearer scheme, required by every operation but the probes and the page
    schemes = keyed_schema["components"]["securitySchemes"]
    assert list(schemes) == ["HTTPBearer"] and schemes["HTTPBearer"]["type"] == "http"
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    unguarded = {("get", "/healthz"), ("get", "/readyz"), ("get", "/")}
    for path, operations in keyed_schema["paths"].items():
        for method, operation in operations.items():
            if (method, path) in unguarded:
                assert "security" not in operation and "401" not in operation["responses"], (method, path)
            else:
                assert operation["security"] == [{"HTTPBearer": []}], (method, path)
                assert {"401", "403"} <= set(operation["responses"]), (method, path)
    # open: no scheme, no requirement, no 401/403, and no Authorization header parameter anywhere
    assert "securitySchemes" not in open_schema.get("components", {})
    for path, operations in open_schema["paths"].items():
        for method, operation in operations.items():
            assert "security" not in operation, (method, path)
            assert not {"401", "403"} & set(operation["responses"]), (method, path)
            headers = [p["name"].lower() for p in operation.get("parameters", []) if p["in"] == "header"]
            assert "authorization" not in headers, (method, path)
    assert "security" not in open_schema


def test_a_job_is_visible_only_to_the_key_that_made_it(keyed, redis, queue, settings):
    worker = FakeWorker(redis, queue, settings.result_ttl)
    mine = submit(keyed, ALPHA)["id"]
    worker.start(mine)
    worker.succeed(mine)
    queued = submit(keyed, ALPHA)["id"]
    for job_id in (mine, queued):
        # ?wait= too: another key's queued job is answered at once, not waited for
        for method, path in (("GET", f"/jobs/{job_id}"), ("GET", f"/jobs/{job_id}?wait=30"),
                             ("GET", f"/jobs/{job_id}/images/0.png"),
                             ("GET", f"/jobs/{job_id}/grid.png"), ("GET", f"/jobs/{job_id}/events"),
                             ("POST", f"/jobs/{job_id}/cancel"), ("DELETE", f"/jobs/{job_id}")):
            for other in (BETA, GAMMA):
                problem = assert_problem(keyed.request(method, path, headers=bearer(other)), 404)
                # the very answer a job that never existed gets: nothing tells the ids apart
                assert problem == {**problem, "type": "tag:imagegen,2026:problem/job-not-found",
                                   "detail": f"unknown job {job_id!r}"}, (method, path)
    # the other key's cancel and DELETE canceled and deleted nothing
    assert keyed.get(f"/jobs/{queued}", headers=bearer(ALPHA)).json()["status"] == "queued"
    assert keyed.get(f"/jobs/{mine}", headers=bearer(ALPHA)).json()["status"] == "succeeded"
    png = keyed.get(f"/jobs/{mine}/images/1.png", headers=bearer(ALPHA))
    # a shared cache must not hand a key's image to a request without it
    assert png.status_code == 200 and png.headers["cache-control"].startswith("private")
    assert keyed.get(f"/jobs/{mine}/grid.png", headers=bearer(ALPHA)).status_code == 200
    with keyed.stream("GET", f"/jobs/{mine}/events", headers=bearer(ALPHA)) as events:
        assert events.status_code == 200 and "event: end" in events.read().decode()
    assert keyed.post(f"/jobs/{queued}/cancel", headers=bearer(ALPHA)).json()["status"] == "canceled"
    assert keyed.delete(f"/jobs/{mine}", headers=bearer(ALPHA)).status_code == 204
    assert_problem(keyed.get(f"/jobs/{mine}", headers=bearer(ALPHA)), 404)


def test_the_owner_is_the_keys_digest_and_no_key_is_stored_or_logged(keyed, redis, caplog):
    job = submit(keyed, ALPHA, webhook_url="http://127.0.0.1:9/hook")
    keyed.get(f"/jobs/{job['id']}", headers=bearer(ALPHA))
    keyed.get("/models", headers=bearer("wrong-key-in-a-log?"))
    record = redis.hgetall(f"imagegen:job:{job['id']}")
    assert record[b"owner"] == f'"{digest(ALPHA)}"'.encode()
    assert "owner" not in job and ALPHA not in str(job) and digest(ALPHA) not in str(job)
    everything = b"".join(redis.dump(k) or b"" for k in redis.keys("*"))
    logged = "\n".join(r.getMessage() for phase in ("setup", "call") for r in caplog.get_records(phase))
    for key in (ALPHA, BETA, GAMMA, "wrong-key-in-a-log?"):
        assert key.encode() not in everything
        assert key not in logged
    assert "3 API key(s) configured" in logged  # the startup line says the API is closed


def test_an_idempotency_key_is_scoped_to_its_api_key(keyed):
    body = {"class_label": 3, "seed": 5}
    first = keyed.post("/generate", json=body, headers={**bearer(ALPHA), "Idempotency-Key": "same"}).json()
    other = keyed.post("/generate", json=body, headers={**bearer(BETA), "Idempotency-Key": "same"}).json()
    again = keyed.post("/generate", json=body, headers={**bearer(ALPHA), "Idempotency-Key": "same"})
    assert other["id"] != first["id"] and again.json()["id"] == first["id"]


def test_without_keys_the_api_is_open_and_says_so(client, caplog):
    caplog.set_level(logging.INFO)
    with TestClient(create_app(Settings()), raise_server_exceptions=False) as c:
        assert c.get("/models").status_code == 200
        # a header is ignored, whatever it holds: there is nothing to check it against
        assert c.get("/models", headers=bearer("anything")).status_code == 200
    assert "no API keys configured: the API is open" in caplog.text


def test_a_keys_file_with_a_bad_line_stops_the_start(settings, tmp_path):
    bad = tmp_path / "keys"
    bad.write_text(f"{digest(ALPHA)}\nnot-a-digest\n")
    with pytest.raises(ValueError, match=r"line 2: not a sha256 hex digest"):
        KeyRing.from_settings(settings.model_copy(update={"api_keys_file": str(bad)}))


def via(test_client: TestClient) -> httpx.MockTransport:
    """An httpx transport that hands each request to the in-process app (the TestClient speaks a
    fork of httpx, whose transport httpx's own Client cannot take)."""

    def handle(request: httpx.Request) -> httpx.Response:
        r = test_client.request(request.method, request.url.raw_path.decode(), headers=dict(request.headers),
                                content=request.content)
        return httpx.Response(r.status_code, headers=list(r.headers.multi_items()), content=r.content)

    return httpx.MockTransport(handle)


def test_the_python_client_sends_its_key(keyed):
    with Client("http://testserver", api_key=ALPHA, transport=via(keyed)) as api:
        job = api.generate(1, num_images=1)
        assert api.job(job.id).id == job.id
    with Client("http://testserver", api_key=BETA, transport=via(keyed)) as api:
        with pytest.raises(ApiError) as not_found:
            api.job(job.id)
        assert not_found.value.status == 404
    with Client("http://testserver", transport=via(keyed)) as api:
        with pytest.raises(ApiError) as unauthorized:
            api.models()
        assert unauthorized.value.status == 401
