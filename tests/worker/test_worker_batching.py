"""A real `python -m worker --burst` against a real Redis: sixteen jobs enqueued at once share every
model evaluation, each image equals its request run alone, a bad job fails alone, a webhook arrives
signed, RQ's registries agree, and the worker exits once the queue is empty."""

from __future__ import annotations

import json

import numpy as np
import pytest
from redis import Redis
from rq import Worker
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.serializers import JSONSerializer
from worker_process import WebhookReceiver, lone_png, png_pixels, queue_of, record, request, submit, worker_process

from contract.webhooks import verify
from worker.metrics import METRICS_KEY

# a worker process each (torch import and model load: several seconds on the busy 2-core machine)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

STEPS = 6
SAMPLERS = ("ddim", "ddpm", "dpmpp_2m", "euler")


def test_sixteen_jobs_share_batches_and_each_image_equals_its_lone_run(redis_url, tiny_store_root, tmp_path,
                                                                      generators):
    r = Redis.from_url(redis_url)
    reqs = [request(seed=1000 + 7 * i, class_label=None if i == 5 else i % 10, guidance_scale=(1.0, 2.5)[i % 2],
                    sampler=SAMPLERS[i % len(SAMPLERS)], steps=STEPS) for i in range(16)]
    with WebhookReceiver() as hook:
        ids = [submit(r, q, webhook_url=hook.url if i == 0 else None) for i, q in enumerate(reqs)]
        # a model no worker serves: its job waits in its own queue, blocking no other model's
        waits = submit(r, request(model="no-such-model@1"), webhook_url=hook.url)
        with worker_process(redis_url, tiny_store_root, tmp_path / "worker.log", "--burst",
                            WEBHOOK_SECRET="s3cret") as proc:
            # --burst: the worker exits by itself once the queue is empty and nothing runs
            assert proc.wait(timeout=120) == 0, (tmp_path / "worker.log").read_text()[-3000:]
        deliveries = {json.loads(body)["id"]: (headers, body) for headers, body in hook.received}

    records = {j: record(r, j) for j in ids}
    assert [rec["status"] for rec in records.values()] == ["succeeded"] * 16
    assert record(r, waits)["status"] == "queued" and queue_of(r, "no-such-model@1").job_ids == [waits]

    # all sixteen joined before the first step: every model evaluation held all of them
    metrics = {k.decode(): float(v) for k, v in r.hgetall(METRICS_KEY).items()}
    assert metrics["batches_total"] == STEPS < 16 * STEPS
    assert metrics["batch_images_sum"] == 16 * STEPS and metrics["batch_images_count"] == STEPS
    assert metrics.get("batch_images_bucket:8", 0) == 0 and metrics["batch_images_bucket:16"] == STEPS
    assert metrics["images_total"] == 16 and metrics["jobs_succeeded_total"] == 16
    assert "jobs_failed_total" not in metrics and metrics["sampling_seconds_total"] > 0

    pngs = set()
    for job_id, q in zip(ids, reqs):
        rec = records[job_id]
        assert rec["images"] == [{"index": 0, "seed": q["seed"]}] and rec["progress"] == {"step": STEPS, "total": STEPS}
        got = png_pixels(r, job_id, "0.png")
        assert got.shape == (28, 28)
        assert np.abs(got - lone_png(generators, q)).max() <= 1, job_id
        pngs.add(got.tobytes())
        assert png_pixels(r, job_id, "grid.png").shape == (32, 32)  # one tile and its 2-pixel border
    assert len(pngs) == 16  # each seed its own image: the comparison above is not between blanks

    # RQ tells the same story (what `rq info` shows)
    queue = queue_of(r, "fashion-mnist@1")
    assert set(queue.finished_job_registry.get_job_ids()) == set(ids)
    assert queue.failed_job_registry.get_job_ids() == []
    assert queue.started_job_registry.get_job_ids() == [] and queue.count == 0
    assert Job.fetch(ids[0], connection=r, serializer=JSONSerializer).get_status() == RQStatus.FINISHED
    assert Job.fetch(ids[0], connection=r, serializer=JSONSerializer).return_value() == {"status": "succeeded",
                                                                                          "images": 1}
    assert Worker.all(connection=r) == []  # the burst worker registered its death

    # the webhooks: the final documents, signed with WEBHOOK_SECRET
    assert set(deliveries) == {ids[0]}
    headers, body = deliveries[ids[0]]
    assert verify(body, "s3cret", headers["X-Signature"])
    doc = json.loads(body)
    assert doc["status"] == "succeeded" and doc["model"] == "fashion-mnist@1"
    assert doc["images"] == [{"index": 0, "seed": reqs[0]["seed"], "url": f"/jobs/{ids[0]}/images/0.png"}]
    assert doc["grid_url"] == f"/jobs/{ids[0]}/grid.png" and doc["error"] is None and doc["finished_at"]
    assert doc["request"]["seed"] == reqs[0]["seed"] and "model" not in doc["request"]
