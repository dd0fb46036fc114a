"""Webhook delivery with retries and backoff, and the document posted (the same as a poll's)."""

from __future__ import annotations

import json

import pytest
from worker_process import WebhookReceiver

from contract.jobs import job_document  # what the worker posts
from contract.webhooks import verify
from service.schemas import JobDocument
from worker.webhooks import WebhookSender

RECORD = {"id": "j1", "status": "succeeded", "model": "fashion-mnist@1",
          "request": {"model": "fashion-mnist@1", "class_label": 7, "num_images": 2, "seed": 5},
          "progress": {"step": 4, "total": 4}, "created_at": "2026-01-01T00:00:00.000Z",
          "started_at": "2026-01-01T00:00:01.000Z", "finished_at": "2026-01-01T00:00:02.000Z",
          "images": [{"index": 0, "seed": 5}, {"index": 1, "seed": 6}], "error": None, "webhook_url": "http://x",
          "ttl": "86400", "attempts": "1", "cancel_requested": "0", "worker": "w", "owner": None}


def test_delivery_retries_with_backoff_until_the_receiver_accepts():
    with WebhookReceiver(fail_first=2) as hook:
        sender = WebhookSender("secret", timeout=2, max_attempts=5, base_delay=0.01)
        sender.send(hook.url, job_document(RECORD))
        assert sender.drain(10)
    assert hook.attempts == 3 and len(hook.received) == 1
    headers, body = hook.received[0]
    assert verify(body, "secret", headers["X-Signature"]) and not verify(body, "other", headers["X-Signature"])
    assert headers["Content-Type"] == "application/json" and json.loads(body)["id"] == "j1"


def test_delivery_gives_up_after_max_attempts():
    with WebhookReceiver(fail_first=100) as hook:
        sender = WebhookSender("secret", timeout=2, max_attempts=3, base_delay=0.01)
        sender.send(hook.url, job_document(RECORD))
        assert sender.drain(10) and sender.pending() == 0
    assert hook.attempts == 3 and hook.received == []


def test_the_document_has_the_shape_of_get_jobs_id():
    doc = job_document(RECORD)
    # every field of the API's schema, and nothing else
    assert set(doc) == set(JobDocument.model_fields)
    assert doc["notes"] == []
    assert doc["request"] == {"class_label": 7, "num_images": 2, "seed": 5} and doc["queue_position"] is None
    assert doc["images"][1] == {"index": 1, "seed": 6, "url": "/jobs/j1/images/1.png"}
    assert doc["grid_url"] == "/jobs/j1/grid.png"
    failed = job_document({**RECORD, "status": "failed", "images": [], "started_at": "",
                     "error": {"code": "timeout", "message": "too long"}})
    assert failed["images"] == [] and failed["grid_url"] is None and failed["started_at"] is None
    assert failed["error"] == {"code": "timeout", "message": "too long"}


@pytest.mark.parametrize("status", ["succeeded", "failed", "canceled"])
def test_the_webhook_document_is_the_one_the_api_serves(status):
    from service.documents import document  # the API's renderer; it needs its backend for queued jobs only

    rec = {**RECORD, "status": status}
    if status != "succeeded":
        rec |= {"images": [], "error": {"code": "model_error", "message": "boom"} if status == "failed" else None}
    assert job_document(rec) == document(None, rec)
