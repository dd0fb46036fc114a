"""The batching worker (in-process, models loaded) behind the API: JOB_TIMEOUT set on the API goes with
the job, the worker stops the job at the step after it runs out, and the API shows a clear error; a
job deleted while it runs is stopped at the worker's next step and nothing of it is written back. A
job beside either is unaffected."""

from __future__ import annotations

import logging
import signal
import threading
import time

from fastapi.testclient import TestClient
from redis import Redis
from rq.job import Job
from worker_process import worker_queues

from contract.settings import Settings
from service.app import create_app
from worker.engine import BatchEngine
from worker.main import BatchWorker


def test_a_job_over_job_timeout_fails_with_a_clear_error_through_the_api(redis_url, tiny_store_root, generators):
    settings = Settings(redis_url=redis_url, model_store=str(tiny_store_root), job_timeout=1)
    with TestClient(create_app(settings), raise_server_exceptions=False) as api:
        slow = api.post("/generate", json={"class_label": 1, "num_images": 1, "steps": 1000}).json()["id"]
        quick = api.post("/generate", json={"class_label": 2, "num_images": 1, "steps": 3}).json()["id"]
        worker = BatchWorker(worker_queues(settings, generators), BatchEngine(generators), settings,
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


def test_a_job_deleted_while_it_runs_is_stopped_and_nothing_of_it_comes_back(redis_url, tiny_store_root, generators,
                                                                               caplog):
    settings = Settings(redis_url=redis_url, model_store=str(tiny_store_root))
    r = Redis.from_url(redis_url)
    with TestClient(create_app(settings), raise_server_exceptions=False) as api:
        doomed = api.post("/generate", json={"class_label": 1, "num_images": 2, "steps": 1000}).json()["id"]
        beside = api.post("/generate", json={"class_label": 2, "num_images": 1, "steps": 60}).json()["id"]
        deleted_at_step: list[int] = []

        def delete_once_running() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                doc = api.get(f"/jobs/{doomed}").json()
                if doc["status"] == "running" and (doc["progress"] or {}).get("step", 0) >= 1:
                    deleted_at_step.append(doc["progress"]["step"])
                    assert api.delete(f"/jobs/{doomed}").status_code == 204
                    return
                time.sleep(0.02)

        thread = threading.Thread(target=delete_once_running, daemon=True)
        worker = BatchWorker(worker_queues(settings, generators), BatchEngine(generators), settings,
                             connection=Redis.from_url(redis_url), name="deletes-via-api")
        saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        caplog.set_level(logging.INFO, logger="worker.main")
        thread.start()
        try:
            worker.work(burst=True)  # ends once the deleted job is dropped and the other one done
        finally:
            for s, handler in saved.items():
                signal.signal(s, handler)
        thread.join(timeout=10)
        assert deleted_at_step, "the job was never seen running"
        assert api.get(f"/jobs/{doomed}").status_code == 404
        assert api.get(f"/jobs/{beside}").json()["status"] == "succeeded"
    # neither the worker's progress, its heartbeat nor its end wrote anything of the job back
    assert [k for k in r.keys("*") if doomed.encode() in k] == []
    assert not Job.exists(doomed, connection=r)
    assert f"job {doomed} deleted after" in caplog.text
