"""What each live worker holds, in Redis: the models it has loaded (with their bytes), the one it is
loading, and its memory budget.

Which models a worker MAY serve is RQ's own record: the queues it listens to (`Worker.queue_names()`,
one queue per model, see contract.queues), which a plain `rq worker` has too. What it HOLDS only the
batching worker knows: it writes the hash `imagegen:worker-models:{worker}` at each heartbeat and at
each load or eviction, with a TTL of WORKER_HEARTBEAT_TTL, so that a dead worker's hash expires with
its heartbeat. The API reads it for GET /models and /metrics (loaded bytes per model).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from redis import Redis
from redis.client import Pipeline

from contract.jobs import PREFIX


def worker_models_key(worker: str) -> str:
    return f"{PREFIX}worker-models:{worker}"


@dataclass(frozen=True)
class WorkerModels:
    """One worker's models, as it last said."""

    worker: str
    loaded: dict[str, int] = field(default_factory=dict)  # ref -> bytes it counts against the budget
    loading: str | None = None  # the ref being loaded now
    budget_bytes: int | None = None  # WORKER_MODEL_BUDGET_MB in bytes; None: no limit


def advertise(redis: Redis | Pipeline, models: WorkerModels, ttl: int) -> None:
    """Write a worker's models (queued on `redis` when it is a pipeline), expiring after `ttl` seconds."""
    key = worker_models_key(models.worker)
    redis.hset(key, mapping={"loaded": json.dumps(models.loaded, sort_keys=True), "loading": models.loading or "",
                             "budget_bytes": "" if models.budget_bytes is None else str(models.budget_bytes)})
    redis.expire(key, ttl)


def withdraw(redis: Redis | Pipeline, worker: str) -> None:
    """A stopping worker holds nothing any more."""
    redis.delete(worker_models_key(worker))


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


def read_worker_models(redis: Redis, workers: list[str]) -> dict[str, WorkerModels]:
    """What each of `workers` last advertised (one round trip); a worker without a hash (a plain rq
    worker, or one whose hash expired) is left out."""
    pipe = redis.pipeline(transaction=False)
    for worker in workers:
        pipe.hgetall(worker_models_key(worker))
    found = {}
    for worker, raw in zip(workers, pipe.execute()):
        if not raw:
            continue
        fields = {_text(k): _text(v) for k, v in raw.items()}
        try:
            loaded = {str(ref): int(n) for ref, n in json.loads(fields.get("loaded") or "{}").items()}
        except (ValueError, TypeError, AttributeError):
            loaded = {}
        budget = fields.get("budget_bytes", "")
        found[worker] = WorkerModels(worker, loaded, fields.get("loading") or None,
                                     int(budget) if budget.isdigit() else None)
    return found
