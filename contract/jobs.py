"""The job record in Redis, shared by the API (creates, reads, cancels) and the workers (run, progress,
finish). A Redis hash per job, so that the API's cancel flag and a worker's progress never overwrite
each other; state changes that must not race go through small Lua scripts.

Keys (all under `imagegen:`):
- `job:{id}`        hash: the record (nested values as JSON strings)
- `events:{id}`     pub/sub channel: progress events and the terminal event
- `result:{id}:{name}` PNG bytes (see results.py)
- `idem:{owner}:{key}` Idempotency-Key -> job id (per API key: one key's retry never finds another's job);
                    the record names its entry (`idem`), so that deleting the job frees the key
- `running`         set: ids of the jobs whose record is `running`, so that a surviving worker finds the
                    jobs of a dead one without scanning every record (see worker/recovery.py)
"""

from __future__ import annotations

import base64
import json
import os
import time
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from redis import Redis
from redis.client import Pipeline

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
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


RUNNING_KEY = f"{PREFIX}running"
"""The set of running job ids."""


def job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def events_channel(job_id: str) -> str:
    return f"{PREFIX}events:{job_id}"


def job_url(root: str, job_id: str) -> str:
    return f"{root}/jobs/{job_id}"


def job_document(record: dict[str, Any], root: str = "", queue_position: int | None = None,
                 waiting_for: str | None = None) -> dict[str, Any]:
    """The job document of `GET /jobs/{id}` (api.md) for a decoded record: what the API serves and
    what a webhook posts. `root` is the path the app is mounted at (URLs are relative);
    `queue_position` and `waiting_for` are the API's to compute, for a queued job."""
    job_id, status = record["id"], record["status"]
    url = job_url(root, job_id)
    succeeded = status == JobStatus.SUCCEEDED.value
    return {
        "id": job_id,
        "status": status,
        "model": record.get("model", ""),
        # the model is the document's own field; api.md's request echo leaves it out
        "request": {k: v for k, v in (record.get("request") or {}).items() if k != "model"},
        "queue_position": queue_position if status == JobStatus.QUEUED.value else None,
        "waiting_for": waiting_for if status == JobStatus.QUEUED.value else None,
        "progress": record.get("progress"),
        # the record stores "" for a time not reached yet
        "created_at": record.get("created_at") or "",
        "started_at": record.get("started_at") or None,
        "finished_at": record.get("finished_at") or None,
        "images": [{"index": im["index"], "seed": im["seed"], "url": f"{url}/images/{im['index']}.png"}
                   for im in (record.get("images") or [])] if succeeded else [],
        "grid_url": f"{url}/grid.png" if succeeded else None,
        "error": record.get("error") if status == JobStatus.FAILED.value else None,
        "notes": record.get("notes") or [],
    }


# JSON-encoded fields of the hash; the rest are plain strings
_JSON_FIELDS = ("request", "progress", "error", "images", "owner", "notes", "inputs")

# Every script takes KEYS = [job record, RUNNING_KEY] and ARGV[1] = the job id where it needs the
# index; the record and the index move together, so that no crash leaves them disagreeing.

# queued -> running, only if still queued (a cancel may have won); returns 1 if it moved
_START = """
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[2], 'worker', ARGV[3],
           'attempts', tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0') + 1)
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

# the terminal transition, only from a non-terminal status; sets the TTL and publishes the end event
# (ARGV[5] on channel ARGV[4]) as it moves, so that a pipeline of many finishes is one round trip;
# returns 1 if it moved
_FINISH = """
local s = redis.call('HGET', KEYS[1], 'status')
if not s or s == 'succeeded' or s == 'failed' or s == 'canceled' then return 0 end
for i = 6, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'finished_at', ARGV[3])
redis.call('EXPIRE', KEYS[1], tonumber(redis.call('HGET', KEYS[1], 'ttl')))
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""

# running -> queued, for a job handed back by a stopping worker; only while it still runs
_REQUEUE = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'queued', 'worker', '', 'progress', 'null')
redis.call('SREM', KEYS[2], ARGV[1])
return 1
"""

# the job of a dead worker (ARGV[2]): back to queued and its id at the front of the RQ queue list
# KEYS[3] (one step, so that no crash leaves a queued record that no worker will dequeue), or failed
# once its workers died ARGV[3] times; a no-op ('skip') if the job has moved on since the caller read
# it (ended, or another worker has it)
_RECOVER = """
local s = redis.call('HGET', KEYS[1], 'status')
if not s then redis.call('SREM', KEYS[2], ARGV[1]) return 'skip' end
if s ~= 'running' then redis.call('SREM', KEYS[2], ARGV[1]) return 'skip' end
if redis.call('HGET', KEYS[1], 'worker') ~= ARGV[2] then return 'skip' end
local deaths = tonumber(redis.call('HGET', KEYS[1], 'deaths') or '0') + 1
redis.call('HSET', KEYS[1], 'deaths', deaths)
redis.call('SREM', KEYS[2], ARGV[1])
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then
  -- its cancel was asked for while it ran: the worker's death completes it
  redis.call('HSET', KEYS[1], 'status', 'canceled', 'finished_at', ARGV[4])
  redis.call('EXPIRE', KEYS[1], tonumber(redis.call('HGET', KEYS[1], 'ttl')))
  return 'canceled'
end
if deaths < tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'status', 'queued', 'worker', '', 'progress', 'null')
  redis.call('LPUSH', KEYS[3], ARGV[1])
  return 'requeued'
end
local times = deaths == 1 and ' time' or ' times'
local error = cjson.encode({code = 'worker_died', message = 'worker died ' .. deaths .. times ..
  ' while running this job (MAX_ATTEMPTS=' .. ARGV[3] .. '); it was not retried again'})
redis.call('HSET', KEYS[1], 'status', 'failed', 'finished_at', ARGV[4], 'error', error, 'images', '[]')
redis.call('EXPIRE', KEYS[1], tonumber(redis.call('HGET', KEYS[1], 'ttl')))
return 'failed'
"""

# a worker's progress, only into a record that exists: a job deleted while it runs must not come
# back as a hash holding nothing but its progress
_PROGRESS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'progress', ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""

# delete: the record, its place in the running index and its Idempotency-Key entry (KEYS[3]; the
# record's own key when it has none) if that still names this job (an expired key may name another
# by now); then an end event, so that waiters and event streams see at once that it is gone;
# returns 1 if there was a record
_DELETE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
if KEYS[3] ~= KEYS[1] then
  local held = redis.call('GET', KEYS[3])
  if held and cjson.decode(held).job == ARGV[1] then redis.call('DEL', KEYS[3]) end
end
redis.call('PUBLISH', ARGV[2], ARGV[3])
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
        self._requeue = redis.register_script(_REQUEUE)
        self._recover = redis.register_script(_RECOVER)
        self._cancel = redis.register_script(_CANCEL)
        self._progress = redis.register_script(_PROGRESS)
        self._delete = redis.register_script(_DELETE)

    def create(self, job_id: str, model: str, request: dict[str, Any], webhook_url: str | None = None,
               owner: str | None = None, inputs: dict[str, str] | None = None,
               notes: list[str] | None = None, idempotency: str | None = None) -> dict[str, Any]:
        """A new queued record. `request` is the normalized request the API echoes back; `inputs` the
        normalized input PNGs (base64) by request field, which the request names by sha256 only;
        `notes` what the service did to the request (e.g. resized an input); `idempotency` the Redis
        key of the Idempotency-Key entry that names the job, if any."""
        record = {
            "id": job_id, "status": JobStatus.QUEUED.value, "model": model, "request": request,
            "inputs": inputs or {}, "notes": notes or [],
            "created_at": now_iso(), "started_at": "", "finished_at": "", "progress": None,
            "images": [], "error": None, "webhook_url": webhook_url or "", "owner": owner,
            "ttl": str(self.result_ttl), "attempts": "0", "deaths": "0", "cancel_requested": "0", "worker": "",
            "idem": idempotency or "",
        }
        self.redis.hset(job_key(job_id), mapping=_encode(record))
        return record

    def get(self, job_id: str) -> dict[str, Any] | None:
        raw = self.redis.hgetall(job_key(job_id))
        return decode_record(raw)

    def get_many(self, job_ids: list[str]) -> list[dict[str, Any] | None]:
        pipe = self.redis.pipeline(transaction=False)
        for j in job_ids:
            pipe.hgetall(job_key(j))
        return [decode_record(raw) for raw in pipe.execute()]

    def start(self, job_id: str, worker: str) -> bool:
        """queued -> running; False if the job is no longer queued (canceled, or taken already)."""
        return bool(self._start(keys=[job_key(job_id), RUNNING_KEY], args=[job_id, now_iso(), worker]))

    def requeue(self, job_id: str) -> bool:
        """running -> queued, for a job handed back by a stopping worker; False if it was not running."""
        return bool(self._requeue(keys=[job_key(job_id), RUNNING_KEY], args=[job_id]))

    def running(self) -> list[str]:
        """Ids of the running jobs (of every worker)."""
        return sorted(m.decode() if isinstance(m, bytes) else m for m in self.redis.smembers(RUNNING_KEY))

    def workers_of(self, job_ids: list[str]) -> dict[str, str | None]:
        """The worker each job's record names (None for a job that is not running or has no record)."""
        pipe = self.redis.pipeline(transaction=False)
        for j in job_ids:
            pipe.hmget(job_key(j), "status", "worker")
        out: dict[str, str | None] = {}
        for j, (status, worker) in zip(job_ids, pipe.execute()):
            running = status is not None and (status.decode() if isinstance(status, bytes) else status) == "running"
            out[j] = (worker.decode() if isinstance(worker, bytes) else worker) if running and worker else None
        return out

    def recover(self, job_id: str, dead_worker: str, max_attempts: int, queue_key: str) -> str:
        """The job of `dead_worker`: "requeued" (queued again, its id pushed to the front of the RQ
        list `queue_key`), "failed" (its workers died `max_attempts` times), "canceled" (a cancel was
        pending) or "skip" (it had moved on). Publishes the terminal event when the job ended here."""
        outcome = self._recover(keys=[job_key(job_id), RUNNING_KEY, queue_key],
                                args=[job_id, dead_worker, max_attempts, now_iso()])
        outcome = outcome.decode() if isinstance(outcome, bytes) else outcome
        if outcome in (JobStatus.FAILED.value, JobStatus.CANCELED.value):
            self.redis.publish(events_channel(job_id), json.dumps({"event": "end", "status": outcome}))
        return outcome

    def set_progress(self, job_id: str, step: int, total: int, preview: str | None = None,
                     pipe: Pipeline | None = None) -> None:
        """Record progress and publish a `progress` event, if the record still exists (queued on
        `pipe` if given, for its caller to execute with others)."""
        progress = {"step": step, "total": total}
        event = {"event": "progress", **progress}
        if preview is not None:
            event["preview"] = preview
        self._progress(keys=[job_key(job_id)], args=[json.dumps(progress), events_channel(job_id), json.dumps(event)],
                       client=pipe)

    def finish(self, job_id: str, status: JobStatus, images: list[dict] | None = None,
               error: dict[str, str] | None = None, pipe: Pipeline | None = None) -> bool | None:
        """The terminal transition (once); the record then expires after the result TTL. Publishes
        the terminal event. False if the job had already ended. With `pipe`, queued on it: the
        answer (1 moved, 0 not) is that command's in `pipe.execute()`, and this returns None."""
        assert status in TERMINAL
        fields = {"images": images or [], "error": error}
        args = [job_id, status.value, now_iso(), events_channel(job_id),
                json.dumps({"event": "end", "status": status.value})]
        for k, v in _encode(fields).items():
            args += [k, v]
        moved = self._finish(keys=[job_key(job_id), RUNNING_KEY], args=args, client=pipe)
        return None if pipe is not None else bool(moved)

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

    def delete(self, job_id: str, idempotency: str | None = None) -> bool:
        """Remove the record, its place in the running index and its Idempotency-Key entry (the
        Redis key the record's `idem` names); False if there was no record. The PNGs are the result
        store's, RQ's job is RQ's: the caller removes those."""
        record = job_key(job_id)
        event = json.dumps({"event": "end", "status": "deleted"})
        return bool(self._delete(keys=[record, RUNNING_KEY, idempotency or record],
                                 args=[job_id, events_channel(job_id), event]))

    def missing(self, job_ids: list[str]) -> set[str]:
        """The jobs among `job_ids` that have no record: deleted by their owner, or expired."""
        pipe = self.redis.pipeline(transaction=False)
        for j in job_ids:
            pipe.exists(job_key(j))
        return {j for j, found in zip(job_ids, pipe.execute()) if not found}

    def cancel_requested(self, job_ids: list[str]) -> set[str]:
        """The jobs among `job_ids` whose cancel was asked for (or whose record is gone)."""
        pipe = self.redis.pipeline(transaction=False)
        for j in job_ids:
            pipe.hget(job_key(j), "cancel_requested")
        return {j for j, v in zip(job_ids, pipe.execute()) if v is None or v in (b"1", "1")}

    def check_running(self, job_ids: list[str], worker: str) -> tuple[set[str], set[str]]:
        """For the jobs `worker` runs: (those whose cancel was asked for or whose record is gone,
        those no longer its own: requeued or taken by another worker after it was thought dead)."""
        pipe = self.redis.pipeline(transaction=False)
        for j in job_ids:
            pipe.hmget(job_key(j), "cancel_requested", "status", "worker")
        canceled, lost = set(), set()
        for j, (flag, status, holder) in zip(job_ids, pipe.execute()):
            if flag is None or flag in (b"1", "1"):
                canceled.add(j)
            elif status not in (b"running", "running") or holder not in (worker.encode(), worker):
                lost.add(j)
        return canceled, lost


def record_inputs(record: dict[str, Any]) -> dict[str, bytes]:
    """A record's input PNGs (img2img's `init_image`, inpainting's `mask`) by request field."""
    return {k: base64.b64decode(v) for k, v in (record.get("inputs") or {}).items()}


def _encode(record: dict[str, Any]) -> dict[str, str]:
    return {k: json.dumps(v) if k in _JSON_FIELDS else ("" if v is None else str(v)) for k, v in record.items()}


def decode_record(raw: dict) -> dict[str, Any] | None:
    """A record as HGETALL returns it (bytes or str), decoded; None for an empty hash (no record)."""
    if not raw:
        return None
    out: dict[str, Any] = {}
    for k, v in raw.items():
        k = k.decode() if isinstance(k, bytes) else k
        v = v.decode() if isinstance(v, bytes) else v
        out[k] = json.loads(v) if k in _JSON_FIELDS else v
    return out
