"""The per-job timeout through the API: JOB_TIMEOUT set on the API goes with the job, the batching worker
(in-process, models loaded) stops the job at the step after it runs out, and the API shows a clear
error; a job beside it is unaffected."""

from __future__ import annotations

import signal

from fastapi.testclient import TestClient
from redis import Redis

from contract.settings import Settings
from service.app import create_app
from worker.engine import BatchEngine
from worker.main import BatchWorker


def test_a_job_over_job_timeout_fails_with_a_clear_error_through_the_api(redis_url, tiny_store_root, generators):
    settings = Settings(redis_url=redis_url, model_store=str(tiny_store_root), job_timeout=1)
    with TestClient(create_app(settings), raise_server_exceptions=False) as api:
        slow = api.post("/generate", json={"class_label": 1, "num_images": 1, "steps": 1000}).json()["id"]
        quick = api.post("/generate", json={"class_label": 2, "num_images": 1, "steps": 3}).json()["id"]
        worker = BatchWorker([settings.queue_name], BatchEngine(generators), settings,
                             connection=Redis.from_url(redis_url), name="timeouts-via-api")
        saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            worker.work(burst=True)
        finally:
            for s, handler in saved.items():
                signal.signal(s, handler)
        doc = api.get(f"/jobs/{slow}").json()
        assert doc["status"] == "failed" and doc["error"]["code"] == "timeout"
        assert doc["error"]["message"].startswith("the job ran longer than its timeout of 1 s and was stopped at step ")
        assert doc["progress"]["step"] < 1000 and doc["images"] == []
        assert api.get(f"/jobs/{slow}/grid.png").status_code == 404
        assert api.get(f"/jobs/{quick}").json()["status"] == "succeeded"
