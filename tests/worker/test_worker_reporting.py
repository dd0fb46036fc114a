"""JobReporter's writes for many jobs at once (real Redis): the successes of one engine step, and the
progress of a step, each written together; every job's own record, PNGs, end event, metrics and
webhook as when it is written alone."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import torch
from PIL import Image
from redis import Redis
from worker_process import WebhookReceiver

from contract.jobs import RUNNING_KEY, JobStatus, JobStore, events_channel, job_key
from contract.results import RedisResultStore
from contract.settings import Settings
from worker.engine import JobError
from worker.metrics import METRICS_KEY
from worker.reporting import JobReporter
from worker.webhooks import WebhookSender

REQUEST = {"model": "fashion-mnist@1", "class_label": 1, "num_images": 2, "seed": 40, "steps": 4}


def images(n: int, value: float) -> torch.Tensor:
    return torch.full((n, 1, 28, 28), value)


def messages(pubsub, seconds: float = 2.0) -> list[tuple[str, dict]]:
    out, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        m = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if m is not None:
            out.append((m["channel"].decode(), json.loads(m["data"])))
    return out


def test_the_successes_of_one_step_are_written_together_and_each_as_alone(redis_url):
    r = Redis.from_url(redis_url)
    jobs = JobStore(r)
    with WebhookReceiver() as hook:
        reporter = JobReporter(r, Settings(redis_url=redis_url),
                               WebhookSender("secret", timeout=2, max_attempts=2, base_delay=0.01))
        ids = ["job-a", "job-b", "job-c"]
        for job_id, webhook in zip(ids, (hook.url, None, None)):
            jobs.create(job_id, REQUEST["model"], {**REQUEST, "num_images": 2 if job_id != "job-b" else 3},
                        webhook_url=webhook)
            assert jobs.start(job_id, "w")
            reporter.started(job_id, 4)
        assert jobs.finish("job-c", JobStatus.CANCELED)  # a cancel won the race: its record stays canceled
        pubsub = r.pubsub()
        pubsub.subscribe(*(events_channel(j) for j in ids))

        moved = reporter.succeeded_many([("job-a", images(2, 0.5), {**REQUEST, "seed": 40}),
                                         ("job-b", images(3, -0.5), {**REQUEST, "seed": 7}),
                                         ("job-c", images(2, 0.0), REQUEST)])
        assert moved == {"job-a": True, "job-b": True, "job-c": False}
        assert reporter.webhooks.drain(10)

        a, b, c = (jobs.get(j) for j in ids)
        assert a["status"] == b["status"] == "succeeded" and c["status"] == "canceled"
        assert a["images"] == [{"index": 0, "seed": 40}, {"index": 1, "seed": 41}]
        assert b["images"] == [{"index": i, "seed": 7 + i} for i in range(3)]
        assert r.ttl(job_key("job-a")) > 0 and r.scard(RUNNING_KEY) == 0
        results = RedisResultStore(r)
        for job_id, n, value in (("job-a", 2, 0.5), ("job-b", 3, -0.5)):
            for i in range(n):
                with Image.open(io.BytesIO(results.get(job_id, f"{i}.png"))) as png:
                    assert png.size == (28, 28) and np.asarray(png).tolist()[0][0] == round((value + 1) * 127.5)
            assert results.get(job_id, "grid.png").startswith(b"\x89PNG")
        # one end event per job that moved, none for the one that had ended already
        ends = [(ch, m) for ch, m in messages(pubsub) if m["event"] == "end"]
        assert sorted(ends, key=lambda e: e[0]) == [(events_channel("job-a"), {"event": "end", "status": "succeeded"}),
                                                    (events_channel("job-b"), {"event": "end", "status": "succeeded"})]
        metrics = {k.decode(): int(float(v)) for k, v in r.hgetall(METRICS_KEY).items()}
        assert metrics["jobs_succeeded_total"] == 2 and metrics["images_total"] == 5
        # the webhook of job-a only, with the final document
        assert len(hook.received) == 1
        doc = json.loads(hook.received[0][1])
        assert doc["id"] == "job-a" and doc["status"] == "succeeded" and len(doc["images"]) == 2


def test_a_bad_image_fails_the_whole_write_before_anything_is_written(redis_url):
    """The worker then writes each job alone (BatchWorker._retry_ends), so that the bad one fails alone."""
    r = Redis.from_url(redis_url)
    jobs = JobStore(r)
    reporter = JobReporter(r, Settings(redis_url=redis_url))
    for job_id in ("good", "bad"):
        jobs.create(job_id, REQUEST["model"], REQUEST)
        assert jobs.start(job_id, "w")
    try:
        reporter.succeeded_many([("good", images(2, 0.1), REQUEST), ("bad", torch.zeros(2, 5), REQUEST)])
    except Exception:  # noqa: BLE001 - whatever the PNG encoder raises
        pass
    else:
        raise AssertionError("an image of the wrong shape was encoded")
    assert jobs.get("good")["status"] == "running" and RedisResultStore(r).get("good", "0.png") is None
    assert reporter.succeeded("good", images(2, 0.1), REQUEST)
    assert jobs.get("good")["status"] == "succeeded"


def test_the_progress_of_a_step_is_written_for_every_job_that_is_due(redis_url):
    r = Redis.from_url(redis_url)
    jobs = JobStore(r)
    reporter = JobReporter(r, Settings(redis_url=redis_url))
    ids = [f"p{i}" for i in range(5)]
    for job_id in ids:
        jobs.create(job_id, REQUEST["model"], REQUEST)
        jobs.start(job_id, "w")
    pubsub = r.pubsub()
    pubsub.subscribe(*(events_channel(j) for j in ids))
    reporter.progress({j: (4, 4) for j in ids}, previews={"p0": images(2, 0.0)})
    assert [jobs.get(j)["progress"] for j in ids] == [{"step": 4, "total": 4}] * 5
    events = messages(pubsub)
    assert sorted(ch for ch, _ in events) == sorted(events_channel(j) for j in ids)
    by_job = {ch: m for ch, m in events}
    assert by_job[events_channel("p0")]["preview"] and "preview" not in by_job[events_channel("p1")]
    # nothing moved: nothing is written again
    reporter.progress({j: (4, 4) for j in ids})
    assert messages(pubsub, 0.5) == []


def test_a_finish_after_the_job_was_deleted_writes_nothing_not_even_its_pngs(redis_url):
    r = Redis.from_url(redis_url)
    jobs = JobStore(r)
    reporter = JobReporter(r, Settings(redis_url=redis_url))
    for job_id in ("kept", "deleted"):
        jobs.create(job_id, REQUEST["model"], REQUEST)
        assert jobs.start(job_id, "w")
    assert jobs.delete("deleted")  # as DELETE /jobs/{id} does, while the worker still holds the job
    reporter.progress({"deleted": (4, 4)})
    moved = reporter.succeeded_many([("kept", images(2, 0.1), REQUEST), ("deleted", images(2, 0.1), REQUEST)])
    assert moved == {"kept": True, "deleted": False}
    assert not reporter.failed("deleted", JobError("x", "y")) and not reporter.canceled("deleted")
    assert jobs.missing(["kept", "deleted"]) == {"deleted"}
    # no record came back, and the PNGs written beside the finish were removed again
    assert [k for k in r.keys("*") if b"deleted" in k] == []
    assert RedisResultStore(r).get("kept", "grid.png") is not None
