"""The worker's RQ side in-process against a real Redis (models already loaded, so no process start):
timeouts, jobs canceled while queued or without a record, jobs of other functions, and the plain
`worker.tasks.generate` under rq's own SimpleWorker."""

from __future__ import annotations

import numpy as np
from redis import Redis
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.serializers import JSONSerializer
from worker_process import lone_png, own_signal_handlers, png_pixels, queue_of, queues, record, request, rq_job, submit

from contract.jobs import JobStore
from contract.settings import Settings
from worker.engine import BatchEngine
from worker.main import BatchWorker
from worker.metrics import METRICS_KEY


def failure(r: Redis, job_id: str) -> str:
    """What RQ recorded about a failed job (`rq info` and the dashboard show it)."""
    return rq_job(r, job_id).latest_result().exc_string


def run_batch_worker(r: Redis, generators, name: str, max_batch_images: int = 64) -> None:
    worker = BatchWorker(queues(), BatchEngine(generators, max_batch_images), Settings(), connection=r, name=name)
    with own_signal_handlers():
        worker.work(burst=True)


def test_a_job_over_its_timeout_fails_alone(redis_url, generators):
    r = Redis.from_url(redis_url)
    slow = submit(r, request(steps=1000, seed=1), timeout=1)
    quick = submit(r, request(steps=5, seed=2))
    run_batch_worker(r, generators, "timeouts")
    failed = record(r, slow)
    assert failed["status"] == "failed" and failed["error"]["code"] == "timeout"
    assert failed["error"]["message"].startswith("the job ran longer than its timeout of 1 s and was stopped at step")
    assert record(r, quick)["status"] == "succeeded"
    assert rq_job(r, slow).get_status() == RQStatus.FAILED and "timeout" in failure(r, slow)


def test_a_job_over_max_batch_images_runs_alone_and_the_next_waits_its_turn(redis_url, generators):
    r = Redis.from_url(redis_url)
    big = submit(r, request(steps=3, num_images=3, seed=1))
    small = submit(r, request(steps=3, seed=9))
    run_batch_worker(r, generators, "oversized", max_batch_images=2)
    assert record(r, big)["status"] == record(r, small)["status"] == "succeeded"
    metrics = {k.decode(): int(float(v)) for k, v in r.hgetall(METRICS_KEY).items()}
    # three evaluations of the big job alone, then three of the small one: never both at once
    assert metrics["batches_total"] == 6 and metrics["batch_images_sum"] == 3 * 3 + 3 * 1
    assert metrics["batch_images_bucket:1"] == 3 and metrics["batch_images_bucket:2"] == 3


def test_jobs_that_must_not_run_are_skipped_and_rq_is_told(redis_url, generators):
    r = Redis.from_url(redis_url)
    canceled = submit(r, request())
    assert JobStore(r).cancel(canceled) == "canceled"
    queue = queue_of(r)  # jobs of other functions on a model's queue run as rq would run them
    orphan = queue.enqueue_call(func="worker.tasks.generate", kwargs={"job": "0" * 32}, job_id="0" * 32).id
    other = queue.enqueue_call(func="os.path.join", args=["a", "b"]).id  # not ours: run as rq would
    pickled = Queue(queue.name, connection=r).enqueue_call(func="os.path.join", args=["c", "d"]).id
    run_batch_worker(r, generators, "skips")
    assert record(r, canceled)["status"] == "canceled" and rq_job(r, canceled).get_status() == RQStatus.CANCELED
    assert rq_job(r, orphan).get_status() == RQStatus.FAILED and "not found" in failure(r, orphan)
    assert rq_job(r, other).return_value() == "a/b"
    assert Job.fetch(pickled, connection=r).get_status() == RQStatus.FAILED
    assert "must use the JSON serializer" in Job.fetch(pickled, connection=r).latest_result().exc_string
    assert queue.count == 0 and queue.started_job_registry.get_job_ids() == []
    assert r.llen(queue.intermediate_queue_key) == 0


def test_a_plain_rq_simple_worker_runs_generate_alone(redis_url, tiny_store_root, generators, monkeypatch):
    monkeypatch.setenv("MODEL_STORE", str(tiny_store_root))
    monkeypatch.setenv("WORKER_DEVICE", "cpu")
    r = Redis.from_url(redis_url)
    req = request(steps=5, seed=42, num_images=3, sampler="dpmpp_2m", guidance_scale=2.0, class_label=8)
    good = submit(r, req)
    bad = submit(r, request(guidance="classifier", model="plain@1"))
    canceled = submit(r, request())
    JobStore(r).cancel(canceled)
    worker = SimpleWorker(queues(), connection=r, serializer=JSONSerializer, name="plain-rq")
    with own_signal_handlers():
        worker.work(burst=True)

    done = record(r, good)
    assert done["status"] == "succeeded" and done["progress"] == {"step": 5, "total": 5}
    assert done["images"] == [{"index": i, "seed": 42 + i} for i in range(3)]
    for i in range(3):
        alone = lone_png(generators, {**req, "seed": 42 + i, "num_images": 1})
        assert np.abs(png_pixels(r, good, f"{i}.png") - alone).max() <= 1
    assert png_pixels(r, good, "grid.png").shape == (32, 3 * 30 + 2)
    assert rq_job(r, good).return_value() == {"status": "succeeded", "images": 3}

    failed = record(r, bad)
    assert failed["status"] == "failed" and failed["error"]["code"] == "invalid_request"
    assert "plain@1 has none" in failed["error"]["message"]
    assert rq_job(r, bad).get_status() == RQStatus.FAILED
    assert rq_job(r, canceled).return_value() == {"status": "canceled", "images": 0}


def test_a_plain_rq_simple_worker_runs_img2img_from_the_record_inputs(redis_url, tiny_store_root, monkeypatch):
    import base64
    import io

    from PIL import Image

    monkeypatch.setenv("MODEL_STORE", str(tiny_store_root))
    monkeypatch.setenv("WORKER_DEVICE", "cpu")
    r = Redis.from_url(redis_url)
    pixels = (np.add.outer(np.arange(28), np.arange(28)) * 4 % 256).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="PNG")
    job = submit(r, request(strength=0.0, num_images=2),
                 inputs={"init_image": base64.b64encode(buf.getvalue()).decode()})
    worker = SimpleWorker(queues(), connection=r, serializer=JSONSerializer, name="plain-rq-img2img")
    with own_signal_handlers():
        worker.work(burst=True)
    assert record(r, job)["status"] == "succeeded"
    # strength 0: the input comes back, pixel for pixel
    assert all(np.array_equal(png_pixels(r, job, f"{i}.png"), pixels) for i in range(2))
