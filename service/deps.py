"""The connections and stores a request needs, opened once in the app's lifespan and handed to
routes as `Annotated` dependencies (`BackendDep`, `SettingsDep`...)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

import redis.asyncio
from fastapi import Depends, Request
from redis import Redis
from rq import Queue, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.serializers import JSONSerializer

from contract.jobs import JobStatus, JobStore
from contract.queues import is_ref, model_queue, queue_model, store_queues
from contract.results import RedisResultStore, ResultStore
from contract.settings import Settings
from model_store import ModelStore

"""Where the API looks for Redis when REDIS_URL is unset (`imagegen up` sets it for its own Redis)."""

# fail fast when Redis is down (a 503 at once beats a hung client); a command may take longer
CONNECT_TIMEOUT_S = 2.0
COMMAND_TIMEOUT_S = 10.0


@dataclass
class Backend:
    """Everything a route talks to: Redis (a sync client for the stores and RQ, an async one for
    pub/sub waits), the job records, the result store and the model store. Jobs go onto the RQ
    queue of their model (`queue_for`, contract.queues)."""

    settings: Settings
    redis: Redis
    aredis: redis.asyncio.Redis
    jobs: JobStore
    results: ResultStore
    store: ModelStore

    @classmethod
    def open(cls, settings: Settings) -> Backend:
        """Connection pools connect lazily: the app starts with Redis down and reports it in /readyz."""
        url = settings.redis_url
        # redis-py caps a pool at 100 connections unless told otherwise, and every ?wait= or event
        # stream holds a pub/sub connection while it lasts: the cap is a setting
        cap = settings.redis_max_connections
        options = {"socket_connect_timeout": CONNECT_TIMEOUT_S, "socket_timeout": COMMAND_TIMEOUT_S,
                   "max_connections": cap}
        sync = Redis.from_url(url, **options)
        # pub/sub reads block until a message comes: no read timeout on the async client
        aredis = redis.asyncio.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S, max_connections=cap)
        return cls(
            settings=settings, redis=sync, aredis=aredis,
            jobs=JobStore(sync, result_ttl=settings.result_ttl),
            results=RedisResultStore(sync, ttl=settings.result_ttl),
            store=ModelStore(settings.model_store),
        )

    async def close(self) -> None:
        await self.aredis.aclose()
        self.redis.close()

    def queue_for(self, ref: str) -> Queue:
        """The RQ queue of model `ref` (name@version); a record of an older release that names no
        version: the bare QUEUE_NAME queue it was put on."""
        name = model_queue(self.settings.queue_name, ref) if is_ref(ref) else self.settings.queue_name
        return Queue(name, connection=self.redis, serializer=JSONSerializer)

    def model_queues(self) -> dict[str, Queue]:
        """The queue of every generator in the store, by ref."""
        return {ref: Queue(name, connection=self.redis, serializer=JSONSerializer)
                for ref, name in store_queues(self.settings.queue_name, self.store).items()}

    def rq_job(self, job_id: str) -> Job | None:
        """RQ's job (whatever queue it is on), or None."""
        try:
            return Job.fetch(job_id, connection=self.redis, serializer=JSONSerializer)
        except NoSuchJobError:
            return None

    def queue_position(self, record: dict) -> int:
        """0 = next in its model's queue. A queued job that a worker has already taken off the RQ
        list (to join its next batch) is next in line too."""
        position = self.queue_for(record.get("model") or "").get_job_position(record["id"])
        return 0 if position is None else position

    def live_workers(self, ref: str | None = None) -> list[Worker]:
        """Workers of this deployment (listening to a queue of QUEUE_NAME's; with `ref`, to that
        model's) whose last heartbeat is younger than WORKER_HEARTBEAT_TTL."""
        if ref is not None:
            workers = Worker.all(queue=self.queue_for(ref))
        else:
            name = self.settings.queue_name
            workers = [w for w in Worker.all(connection=self.redis)
                       if any(q == name or queue_model(name, q) for q in w.queue_names())]
        now = datetime.now(UTC)
        alive = []
        for worker in workers:
            beat = worker.last_heartbeat
            if beat is None:
                continue
            if beat.tzinfo is None:
                beat = beat.replace(tzinfo=UTC)
            if (now - beat).total_seconds() < self.settings.worker_heartbeat_ttl:
                alive.append(worker)
        return alive

    def waiting_for(self, record: dict) -> str | None:
        """For a queued job whose model no live worker may serve: what it waits for."""
        model = record.get("model") or ""
        if record.get("status") != JobStatus.QUEUED.value or self.live_workers(model):
            return None
        return (f"no live worker may serve {model}: the job waits in its queue until a worker that serves it starts "
                f"(WORKER_MODELS); GET /models says which workers serve each model")


def get_backend(request: Request) -> Backend:
    return request.app.state.backend


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


BackendDep = Annotated[Backend, Depends(get_backend)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
