"""Webhook signing, delivery with retries and backoff, and the document posted."""

from __future__ import annotations

import hashlib
import hmac
import json

from worker.documents import render
from worker.webhooks import WebhookSender, signature
from worker_process import WebhookReceiver

RECORD = {"id": "j1", "status": "succeeded", "model": "fashion-mnist@1",
          "request": {"model": "fashion-mnist@1", "class_label": 7, "num_images": 2, "seed": 5},
          "progress": {"step": 4, "total": 4}, "created_at": "2026-01-01T00:00:00.000Z",
          "started_at": "2026-01-01T00:00:01.000Z", "finished_at": "2026-01-01T00:00:02.000Z",
          "images": [{"index": 0, "seed": 5}, {"index": 1, "seed": 6}], "error": None, "webhook_url": "http://x",
          "ttl": "86400", "attempts": "1", "cancel_requested": "0", "worker": "w", "owner": None}


def test_signature_is_hmac_sha256_of_the_body():
    body = b'{"id":"j1"}'
    assert signature(body, "k") == "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()


def test_delivery_retries_with_backoff_until_the_receiver_accepts():
    with WebhookReceiver(fail_first=2) as hook:
        sender = WebhookSender("secret", timeout=2, max_attempts=5, base_delay=0.01)
        sender.send(hook.url, render(RECORD))
        assert sender.drain(10)
    assert hook.attempts == 3 and len(hook.received) == 1
    headers, body = hook.received[0]
    assert headers["X-Signature"] == signature(body, "secret")
    assert headers["Content-Type"] == "application/json" and json.loads(body)["id"] == "j1"


def test_delivery_gives_up_after_max_attempts():
    with WebhookReceiver(fail_first=100) as hook:
        sender = WebhookSender("secret", timeout=2, max_attempts=3, base_delay=0.01)
        sender.send(hook.url, render(RECORD))
        assert sender.drain(10) and sender.pending() == 0
    assert hook.attempts == 3 and hook.received == []


def test_the_document_has_the_shape_of_get_jobs_id():
    doc = render(RECORD)
    assert set(doc) == {"id", "status", "model", "request", "queue_position", "progress", "created_at",
                        "started_at", "finished_at", "images", "grid_url", "error"}
    assert doc["request"] == {"class_label": 7, "num_images": 2, "seed": 5} and doc["queue_position"] is None
    assert doc["images"][1] == {"index": 1, "seed": 6, "url": "/jobs/j1/images/1.png"}
    assert doc["grid_url"] == "/jobs/j1/grid.png"
    failed = render({**RECORD, "status": "failed", "images": [], "started_at": "",
                     "error": {"code": "timeout", "message": "too long"}})
    assert failed["images"] == [] and failed["grid_url"] is None and failed["started_at"] is None
    assert failed["error"] == {"code": "timeout", "message": "too long"}
