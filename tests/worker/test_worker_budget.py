"""Many models per worker under a memory budget (WORKER_MODEL_BUDGET_MB), with real worker processes and
a real Redis: models load on demand, the least recently used idle ones are evicted, a model with
images in flight never is, and a model larger than the whole budget fails its jobs at once while the
worker serves the others. Every image equals its request run alone."""

from __future__ import annotations

import numpy as np
import pytest
from redis import Redis
from rq import Worker
from worker_process import (
    lone_png,
    png_pixels,
    queue_of,
    record,
    request,
    submit,
    wait_ended,
    wait_for,
    worker_process,
)

from contract.workers import worker_models_key
from model_store import ModelStore
from worker.metrics import METRICS_KEY
from worker.models import estimated_bytes
from worker.pool import size_with_reserve

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def budget_mb(root, models: float) -> str:
    """WORKER_MODEL_BUDGET_MB that holds `models` of the tiny models (each about 0.9 MiB)."""
    return f"{models * size_with_reserve(estimated_bytes(ModelStore(root), 'alpha@1')) / 2**20:.4f}"


def model_counters(r: Redis, what: str) -> dict[str, float]:
    """The workers' `model_<what>_total` counters, by model ref."""
    prefix = f"model_{what}_total:"
    return {k.decode()[len(prefix):]: float(v) for k, v in r.hgetall(METRICS_KEY).items()
            if k.decode().startswith(prefix)}


def test_alternating_jobs_with_room_for_one_model_swap_it_and_each_image_equals_its_lone_run(
        redis_url, models_store_root, models_generators, tmp_path):
    r = Redis.from_url(redis_url)
    reqs = [request(model=("alpha@1", "beta@1")[i % 2], seed=40 + i, class_label=i, steps=4) for i in range(4)]
    ids = [submit(r, q) for q in reqs]
    log = tmp_path / "worker.log"
    with worker_process(redis_url, models_store_root, log, "--burst", WORKER_MODELS="alpha@1,beta@1",
                        WORKER_MODEL_BUDGET_MB=budget_mb(models_store_root, 1.5)) as proc:
        assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
    records = wait_ended(r, ids, 10)
    assert [records[j]["status"] for j in ids] == ["succeeded"] * 4, log.read_text()[-3000:]
    for job_id, q in zip(ids, reqs):
        assert np.abs(png_pixels(r, job_id, "0.png") - lone_png(models_generators, q)).max() <= 1, job_id
    # the turn alternates between the two queues, and each model takes the whole budget in turn:
    # alpha, then beta in its place, alpha again, beta again
    assert model_counters(r, "loads") == {"alpha@1": 2, "beta@1": 2}
    assert model_counters(r, "evictions") == {"alpha@1": 2, "beta@1": 1}
    assert all(v > 0 for v in model_counters(r, "load_seconds").values())
    # a stopped worker withdraws what it said it holds, and registers its death with RQ
    assert r.keys(worker_models_key("*")) == [] and Worker.all(connection=r) == []


def test_a_model_with_images_in_flight_is_never_evicted_while_others_load_and_finish(
        redis_url, models_store_root, models_generators, tmp_path):
    r = Redis.from_url(redis_url)
    log = tmp_path / "worker.log"
    long_req = request(model="alpha@1", steps=1000, seed=3)
    short_reqs = [request(model=m, steps=4, seed=60 + i) for i, m in enumerate(("beta@1", "gamma@1") * 2)]
    with worker_process(redis_url, models_store_root, log, "--name", "w", WORKER_MODELS="alpha@1,beta@1,gamma@1",
                        WORKER_MODEL_BUDGET_MB=budget_mb(models_store_root, 2.5)) as proc:
        long = submit(r, long_req)
        wait_for(lambda: (record(r, long)["progress"] or {}).get("step", 0) >= 1, 60, "the long job to run", proc)
        shorts = [submit(r, q) for q in short_reqs]
        ended = wait_ended(r, shorts, 120, proc)
        long_now = record(r, long)
        # alpha, least recently used once the others load, kept its running job and its place
        assert long_now["status"] == "running" and long_now["progress"]["step"] < 1000, log.read_text()[-3000:]
        wait_ended(r, [long], 120, proc)
        held = r.hgetall(worker_models_key("w"))
    assert [ended[j]["status"] for j in shorts] == ["succeeded"] * 4
    assert record(r, long)["status"] == "succeeded"
    for job_id, q in zip([long, *shorts], [long_req, *short_reqs]):
        assert np.abs(png_pixels(r, job_id, "0.png") - lone_png(models_generators, q)).max() <= 1, job_id
    loads, evictions = model_counters(r, "loads"), model_counters(r, "evictions")
    assert loads["alpha@1"] == 1 and "alpha@1" not in evictions
    # beta and gamma took turns in the room alpha left: each swap evicts one, and one stays
    assert loads["beta@1"] + loads["gamma@1"] == evictions.get("beta@1", 0) + evictions.get("gamma@1", 0) + 1
    assert loads["beta@1"] >= 2 and loads["gamma@1"] >= 1
    assert b"alpha@1" in held[b"loaded"]  # what GET /models reads


def test_a_model_larger_than_the_budget_fails_its_jobs_at_once_and_the_worker_serves_the_others(
        redis_url, models_store_root, models_generators, tmp_path):
    r = Redis.from_url(redis_url)
    log = tmp_path / "worker.log"
    too_big = submit(r, request(model="big@1", seed=1))
    fine = [submit(r, request(model="alpha@1", seed=2 + i)) for i in range(2)]
    with worker_process(redis_url, models_store_root, log, "--burst", WORKER_MODELS="alpha@1,big@1",
                        WORKER_MODEL_BUDGET_MB=budget_mb(models_store_root, 1.5)) as proc:
        assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
    failed = record(r, too_big)
    assert failed["status"] == "failed" and failed["error"]["code"] == "model_too_large"
    message = failed["error"]["message"]
    assert message.startswith("model big@1 needs 34.") and "MiB on the device" in message
    assert "(WORKER_MODEL_BUDGET_MB); it cannot be served here" in message
    assert [record(r, j)["status"] for j in fine] == ["succeeded"] * 2
    assert np.abs(png_pixels(r, fine[0], "0.png") - lone_png(models_generators, request(model="alpha@1", seed=2))
                  ).max() <= 1
    assert model_counters(r, "loads") == {"alpha@1": 1}  # big was never loaded
    assert queue_of(r, "big@1").failed_job_registry.get_job_ids() == [too_big]
    assert "big@1 needs 34." in log.read_text()  # said at start too
