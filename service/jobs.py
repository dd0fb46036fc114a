"""The job record in Redis, shared by the API (creates, reads, cancels) and the workers (run, progress,
finish). A Redis hash per job, so that the API's cancel flag and a worker's progress never overwrite
each other; state changes that must not race go through small Lua scripts.

Keys (all under `imagegen:`):
- `job:{id}`        hash: the record (nested values as JSON strings)
- `events:{id}`     pub/sub channel: progress events and the terminal event
- `result:{id}:{name}` PNG bytes (see results.py)
- `idem:{key}`      Idempotency-Key -> job id
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from redis import Redis

PREFIX = "imagegen:"


class JobStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})
"""Statuses a job never leaves."""


def new_job_id() -> str:
    """32 hex digits: 48 bits of milliseconds since the epoch, then 80 random bits (like UUIDv7), so
    that the API can tell an expired job (an old id) from one that never existed."""
    return f"{int(time.time() * 1000):012x}{os.urandom(10).hex()}"


def job_id_time(job_id: str) -> float | None:
    """When a job id was made (epoch seconds), or None if it is not one of ours."""
    if len(job_id) != 32 or any(c not in "0123456789abcdef" for c in job_id):
        return None
    return int(job_id[:12], 16) / 1000


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def events_channel(job_id: str) -> str:
    return f"{PREFIX}events:{job_id}"


# JSON-encoded fields of the hash; the rest are plain strings
_JSON_FIELDS = ("request", "progress", "error", "images", "owner", "notes")

# queued -> running, only if still queued (a cancel may have won); returns 1 if it moved
_START = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[1], 'worker', ARGV[2],
           'attempts', tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0') + 1)
return 1
"""

# the terminal transition, only from a non-terminal status; sets the TTL; returns 1 if it moved
_FINISH = """
local s = redis.call('HGET', KEYS[1], 'status')
if not s or s == 'succeeded' or s == 'failed' or s == 'canceled' then return 0 end
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'finished_at', ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(redis.call('HGET', KEYS[1], 'ttl')))
return 1
"""

# cancel: a queued job ends now; a running one gets a flag its worker reads at the next step
_CANCEL = """
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return nil end
if s == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'canceled', 'finished_at', ARGV[1], 'cancel_requested', '1')
  redis.call('EXPIRE', KEYS[1], tonumber(redis.call('HGET', KEYS[1], 'ttl')))
  return 'canceled'
end
if s == 'running' then redis.call('HSET', KEYS[1], 'cancel_requested', '1') end
return s
"""


class JobStore:
    """Job records in Redis. Every method is one round trip (or one pipeline)."""

    def __init__(self, redis: Redis, result_ttl: int = 86_400):
        self.redis = redis
        self.result_ttl = result_ttl
        self._start = redis.register_script(_START)
        self._finish = redis.register_script(_FINISH)
        self._cancel = redis.register_script(_CANCEL)

    def create(self, job_id: str, model: str, request: dict[str, Any], webhook_url: str | None = None,
               owner: str | None = None) -> dict[str, Any]:
        """A new queued record. `request` is the normalized request the API echoes back."""
        record = {
            "id": job_id, "status": JobStatus.QUEUED.value, "model": model, "request": request,
            "created_at": now_iso(), "started_at": "", "finished_at": "", "progress": None,
            "images": [], "error": None, "webhook_url": webhook_url or "", "owner": owner,
            "ttl": str(self.result_ttl), "attempts": "0", "cancel_requested": "0", "worker": "",
        }
        self.redis.hset(job_key(job_id), mapping=_encode(record))
        return record

    def get(self, job_id: str) -> dict[str, Any] | None:
        raw = self.redis.hgetall(job_key(job_id))
        return _decode(raw) if raw else None

    def get_many(self, job_ids: list[str]) -> list[dict[str, Any] | None]:
        pipe = self.redis.pipeline(transaction=False)
        for j in job_ids:
            pipe.hgetall(job_key(j))
        return [_decode(raw) if raw else None for raw in pipe.execute()]

    def start(self, job_id: str, worker: str) -> bool:
        """queued -> running; False if the job is no longer queued (canceled, or taken already)."""
        return bool(self._start(keys=[job_key(job_id)], args=[now_iso(), worker]))

    def requeue(self, job_id: str) -> None:
        """running -> queued, for a job handed back by a stopping or dead worker."""
        self.redis.hset(job_key(job_id), mapping={"status": JobStatus.QUEUED.value, "worker": "", "progress": "null"})

    def set_progress(self, job_id: str, step: int, total: int, preview: str | None = None) -> None:
        """Record progress and publish a `progress` event."""
        progress = {"step": step, "total": total}
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(job_key(job_id), "progress", json.dumps(progress))
        event = {"event": "progress", **progress}
        if preview is not None:
            event["preview"] = preview
        pipe.publish(events_channel(job_id), json.dumps(event))
        pipe.execute()

    def finish(self, job_id: str, status: JobStatus, images: list[dict] | None = None,
               error: dict[str, str] | None = None) -> bool:
        """The terminal transition (once); the record then expires after the result TTL. Publishes
        the terminal event. False if the job had already ended."""
        assert status in TERMINAL
        fields = {"images": images or [], "error": error}
        args = [status.value, now_iso()]
        for k, v in _encode(fields).items():
            args += [k, v]
        moved = bool(self._finish(keys=[job_key(job_id)], args=args))
        if moved:
            self.redis.publish(events_channel(job_id), json.dumps({"event": "end", "status": status.value}))
        return moved

    def cancel(self, job_id: str) -> str | None:
        """Cancel: the job's status after the request (None if unknown). Publishes the terminal event
        when a queued job ends here."""
        status = self._cancel(keys=[job_key(job_id)], args=[now_iso()])
        if status is None:
            return None
        status = status.decode() if isinstance(status, bytes) else status
        if status == JobStatus.CANCELED.value:
            self.redis.publish(events_channel(job_id), json.dumps({"event": "end", "status": status}))
        return status

    def cancel_requested(self, job_ids: list[str]) -> set[str]:
        """The jobs among `job_ids` whose cancel was asked for (or whose record is gone)."""
        pipe = self.redis.pipeline(transaction=False)
        for j in job_ids:
            pipe.hget(job_key(j), "cancel_requested")
        return {j for j, v in zip(job_ids, pipe.execute()) if v is None or v in (b"1", "1")}


def _encode(record: dict[str, Any]) -> dict[str, str]:
    return {k: json.dumps(v) if k in _JSON_FIELDS else ("" if v is None else str(v)) for k, v in record.items()}


def _decode(raw: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in raw.items():
        k = k.decode() if isinstance(k, bytes) else k
        v = v.decode() if isinstance(v, bytes) else v
        out[k] = json.loads(v) if k in _JSON_FIELDS else v
    return out
