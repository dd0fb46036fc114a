"""Routing by model, through the API with real worker processes: a job for a model no live worker may
serve waits in its own queue, and GET /jobs/{id} says so (`waiting_for`); the other models' jobs are
served meanwhile; once a worker that serves its model starts, it succeeds. GET /models says which live
workers may serve and hold each model, and /metrics counts loads and loaded bytes per model."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from rq import Worker
from worker_process import wait_for, worker_process

from contract.settings import Settings
from service.app import create_app

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def metric(text: str, name: str, model: str) -> float:
    (value,) = re.findall(rf'^{name}{{model="{re.escape(model)}"}} (\S+)$', text, re.M)
    return float(value)


def test_a_job_no_worker_may_serve_waits_with_a_note_and_runs_once_one_starts(redis_url, models_store_root, tmp_path):
    r = Redis.from_url(redis_url)
    settings = Settings(redis_url=redis_url, model_store=str(models_store_root), default_model="alpha")
    with TestClient(create_app(settings)) as api, \
            worker_process(redis_url, models_store_root, tmp_path / "alpha.log", "--name", "alpha-worker",
                           WORKER_MODELS="alpha") as alpha_worker:
        wait_for(lambda: Worker.all(connection=r), 60, "the alpha worker to register", alpha_worker)
        waiting = api.post("/generate", json={"model": "beta", "class_label": 2, "steps": 3,
                                                        "num_images": 1}).json()["id"]
        doc = api.get(f"/jobs/{waiting}").json()
        assert doc["status"] == "queued" and doc["model"] == "beta@1" and doc["queue_position"] == 0
        assert doc["waiting_for"].startswith("no live worker may serve beta@1: the job waits in its queue")

        # the other model's jobs are served meanwhile: the waiting job blocks nothing
        served = [api.post("/generate?wait=60", json={"class_label": i, "steps": 3}).json() for i in range(2)]
        assert [d["status"] for d in served] == ["succeeded"] * 2 and served[0]["waiting_for"] is None
        assert api.get(f"/jobs/{waiting}").json()["status"] == "queued"

        models = {m["ref"]: m for m in api.get("/models").json()}
        assert models["alpha@1"]["served_by"] == ["alpha-worker"] and models["alpha@1"]["loaded_on"] == ["alpha-worker"]
        assert models["beta@1"]["served_by"] == [] and models["beta@1"]["loaded_on"] == []
        text = api.get("/metrics").text
        assert metric(text, "imagegen_model_queue_depth", "beta@1") == 1
        assert metric(text, "imagegen_model_workers", "alpha@1") == 1
        assert metric(text, "imagegen_model_loaded_bytes", "alpha@1") > 0

        # a worker that may serve beta comes, with a budget: it loads beta for the job
        with worker_process(redis_url, models_store_root, tmp_path / "beta.log", "--name", "beta-worker",
                            WORKER_MODELS="beta@1,gamma@1", WORKER_MODEL_BUDGET_MB="8") as beta_worker:
            done = wait_for(lambda: (d := api.get(f"/jobs/{waiting}?wait=5").json())["status"] == "succeeded" and d,
                            120, "the waiting job to run", beta_worker)
            assert done["waiting_for"] is None and len(done["images"]) == 1
            models = {m["ref"]: m for m in api.get("/models").json()}
            assert models["beta@1"]["served_by"] == ["beta-worker"] and models["beta@1"]["loaded_on"] == ["beta-worker"]
            assert models["gamma@1"]["served_by"] == ["beta-worker"] and models["gamma@1"]["loaded_on"] == []
            text = api.get("/metrics").text
            assert metric(text, "imagegen_model_loads_total", "beta@1") == 1
            assert metric(text, "imagegen_model_load_seconds_total", "beta@1") > 0
            assert "imagegen_model_evictions_total" in text
            assert api.get("/readyz").json()["workers"] == 2
