"""Discovery and operations: /models, /samplers, /healthz, /readyz, /metrics, /docs; and the error
contract when Redis is down or a route breaks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from api_helpers import assert_problem, submit
from fastapi.testclient import TestClient
from rq import Worker
from rq.utils import utcformat

from contract.names import SAMPLERS
from contract.settings import Settings
from service.app import create_app
from service.metrics import WORKER_METRICS_KEY, batch_histogram
from service.redis_local import LocalRedis


def test_models_lists_every_model_with_its_card(client):
    models = {m["ref"]: m for m in client.get("/models").json()}
    assert set(models) == {"fashion-mnist@1", "fmnist-classifier@1", "plain@1"}
    fm = models["fashion-mnist@1"]
    assert fm["kind"] == "generator" and fm["default"] and fm["latest"]
    assert (fm["image_size"], fm["channels"]) == (28, 1) and fm["class_names"][7] == "Sneaker"
    assert fm["defaults"] == {"sampler": "ddim", "steps": 4, "guidance": "cfg", "guidance_scale": 2.0, "eta": 0.0,
                              "num_images": 4}
    assert fm["links"] == {"guidance_classifier": "fmnist-classifier@1"} and "quality" in fm
    assert models["plain@1"]["defaults"]["steps"] == 50 and not models["plain@1"]["default"]
    assert models["fmnist-classifier@1"]["defaults"] is None


def test_one_model_by_name_or_version(client):
    assert client.get("/models/fashion-mnist").json()["ref"] == "fashion-mnist@1"
    assert client.get("/models/plain@1").json()["name"] == "plain"
    for ref in ("nope", "plain@2", "Bad Name"):
        problem = assert_problem(client.get(f"/models/{ref}"), 404)
        assert ref in problem["detail"]


def test_samplers(client):
    samplers = client.get("/samplers").json()
    assert [s["name"] for s in samplers] == list(SAMPLERS)
    assert [s["name"] for s in samplers if s["default"]] == ["ddim"]
    assert all(s["description"] and s["defaults"]["steps"] == 50 for s in samplers)


def test_healthz_and_the_landing_page(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")


def test_readyz_names_the_missing_worker(client):
    problem = assert_problem(client.get("/readyz"), 503)
    assert "no worker" in problem["detail"]
    assert client.get("/readyz").headers["retry-after"]


def test_readyz_with_workers_0_asks_about_redis_alone(client):
    # the readiness of an API whose workers scale to zero (deploy/k8s): Redis answers, no worker runs
    assert client.get("/readyz?workers=0").json() == {"status": "ready", "redis": "ok", "workers": 0}
    assert client.get("/readyz").status_code == 503
    assert_problem(client.get("/readyz?workers=-1"), 422)
    assert_problem(client.get("/readyz?workers=2"), 422)


def test_readyz_with_a_live_worker_and_not_with_a_silent_one(client, queue, redis, settings):
    worker = Worker([queue], connection=redis, name="test-worker")
    worker.register_birth()
    try:
        r = client.get("/readyz")
        assert r.status_code == 200 and r.json() == {"status": "ready", "redis": "ok", "workers": 1}
        silent = datetime.now(UTC) - timedelta(seconds=settings.worker_heartbeat_ttl + 1)
        redis.hset(worker.key, "last_heartbeat", utcformat(silent))
        assert "no worker" in assert_problem(client.get("/readyz"), 503)["detail"]
    finally:
        worker.register_death()


def test_metrics_show_the_queue_jobs_and_worker_counters(client, redis, fake_worker):
    submit(client)
    done = submit(client, num_images=1)["id"]
    fake_worker.start(done)
    fake_worker.succeed(done)
    # as the worker writes them: cumulative buckets
    redis.hset(WORKER_METRICS_KEY, mapping={
        "batches_total": 3, "images_total": 5, "sampling_seconds_total": 1.5, "batch_images_sum": 5,
        "batch_images_count": 3, "batch_images_bucket:1": 2, "batch_images_bucket:2": 2,
        **{f"batch_images_bucket:{le}": 3 for le in ("4", "8", "16", "32", "64", "128", "256", "+Inf")},
        "jobs_succeeded_total": 1})
    client.get(f"/jobs/{done}")
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    for line in ("imagegen_redis_up 1.0", "imagegen_queue_depth 1.0", 'imagegen_jobs{status="queued"} 1.0',
                 'imagegen_jobs{status="succeeded"} 1.0', "imagegen_workers_alive 0.0",
                 "imagegen_batches_total 3.0", "imagegen_images_generated_total 5.0",
                 "imagegen_sampling_seconds_total 1.5", 'imagegen_batch_images_bucket{le="2"} 2.0',
                 'imagegen_batch_images_bucket{le="+Inf"} 3.0', "imagegen_batch_images_count 3.0",
                 'imagegen_jobs_ended_total{status="succeeded"} 1.0'):
        assert line in text, line
    assert 'imagegen_http_requests_total{method="POST",route="/generate",status="202"} 2.0' in text
    # routes by template: a raw job id would make a time series per job
    assert 'route="/jobs/{job_id}"' in text and done not in text


def test_batch_histogram_takes_either_bucket_convention():
    per_bucket = {"batch_images_bucket:1": 2, "batch_images_bucket:4": 1, "batch_images_count": 3}
    cumulative = {"batch_images_bucket:1": 2, "batch_images_bucket:2": 2,
                  **{f"batch_images_bucket:{le}": 3 for le in ("4", "8", "16", "32", "64", "128", "256", "+Inf")},
                  "batch_images_count": 3}
    for fields in (per_bucket, cumulative):
        buckets, _ = batch_histogram(fields)
        assert dict(buckets)["1"] == 2 and dict(buckets)["2"] == 2 and dict(buckets)["4"] == 3
        assert dict(buckets)["+Inf"] == 3


def test_openapi_documents_every_route_with_problems(client):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in ("/generate", "/jobs/{job_id}", "/jobs/{job_id}/images/{index}.png", "/jobs/{job_id}/grid.png",
                 "/jobs/{job_id}/events", "/models", "/models/{ref}", "/samplers", "/healthz", "/readyz", "/metrics"):
        assert path in paths, path
        for operation in paths[path].values():
            assert operation.get("summary"), (path, operation)
            for code, response in operation["responses"].items():
                if int(code) >= 400:
                    assert list(response["content"]) == ["application/problem+json"], (path, code)
    assert "422" in paths["/generate"]["post"]["responses"]
    # class_label's lower bound is in the schema; its upper bound depends on the model, which the
    # description says (a schema-valid 341 answered 422 is then what a client was told to expect)
    label = schema["components"]["schemas"]["GenerateRequest"]["properties"]["class_label"]
    integer = [branch for branch in label["anyOf"] if branch.get("type") == "integer"]
    assert integer == [{"type": "integer", "minimum": 0}], label
    assert "upper bound, depends on the model" in label["description"] and "class_names" in label["description"]
    assert "HTTPValidationError" not in str(schema)
    assert client.get("/docs").status_code == 200


def test_unknown_routes_and_methods_are_problems(client):
    assert "no route" in assert_problem(client.get("/nope"), 404)["detail"]
    assert "allowed: GET" in assert_problem(client.delete("/models"), 405)["detail"]
    # Allow names every method of the path, not only those of the first route that matched it
    for method, path, allowed in (("PUT", "/jobs/abc", "DELETE, GET, HEAD"),
                                  ("OPTIONS", "/jobs/abc", "DELETE, GET, HEAD"),
                                  ("GET", "/jobs/abc/cancel", "POST"), ("PUT", "/generate", "POST")):
        r = client.request(method, path)
        assert_problem(r, 405)
        assert r.headers["allow"] == allowed, (method, path)


def test_an_unexpected_error_is_a_500_problem_without_a_trace(settings, caplog):
    app = create_app(settings)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    with TestClient(app, raise_server_exceptions=False) as client:
        problem = assert_problem(client.get("/boom"), 500)
    assert "secret internals" not in str(problem)
    assert "secret internals" in caplog.text  # logged on the server


@pytest.fixture
def stopped_redis_client(tmp_path, tiny_store_root):
    """An app whose Redis (a private one, never the session's) has gone away."""
    server = LocalRedis(tmp_path / "redis").start()
    app = create_app(Settings(redis_url=server.url, model_store=str(tiny_store_root)))
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/generate", json={"class_label": 1}).status_code == 202
        server.stop()
        yield client


def test_redis_down_is_503_with_retry_after_everywhere(stopped_redis_client):
    client = stopped_redis_client
    problem = assert_problem(client.get("/readyz"), 503)
    assert "Redis" in problem["detail"]
    for method, path, body in (("POST", "/generate", {"class_label": 1}), ("GET", "/jobs/" + "0" * 32, None),
                               ("POST", "/generate?wait=5", {"class_label": 1}), ("DELETE", "/jobs/" + "0" * 32, None),
                               ("POST", "/jobs/" + "0" * 32 + "/cancel", None),
                               ("GET", "/jobs/" + "0" * 32 + "/events", None)):
        r = client.request(method, path, json=body)
        problem = assert_problem(r, 503)
        assert "Redis" in problem["detail"] and int(r.headers["retry-after"]) > 0, (method, path)
    assert client.get("/healthz").status_code == 200
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "imagegen_redis_up 0.0" in metrics.text
