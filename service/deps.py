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
from rq.serializers import JSONSerializer

from contract.jobs import JobStore
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
    pub/sub waits), the job records, the result store, the RQ queue and the model store."""

    settings: Settings
    redis: Redis
    aredis: redis.asyncio.Redis
    jobs: JobStore
    results: ResultStore
    queue: Queue
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
            queue=Queue(settings.queue_name, connection=sync, serializer=JSONSerializer),
            store=ModelStore(settings.model_store),
        )

    async def close(self) -> None:
        await self.aredis.aclose()
        self.redis.close()

    def queue_position(self, job_id: str) -> int:
        """0 = next. A queued job that a worker has already taken off the RQ list (to join its next
        batch) is next in line too."""
        position = self.queue.get_job_position(job_id)
        return 0 if position is None else position

    def live_workers(self) -> list[Worker]:
        """Workers on our queue whose last heartbeat is younger than WORKER_HEARTBEAT_TTL."""
        now = datetime.now(UTC)
        alive = []
        for worker in Worker.all(queue=self.queue):
            beat = worker.last_heartbeat
            if beat is None:
                continue
            if beat.tzinfo is None:
                beat = beat.replace(tzinfo=UTC)
            if (now - beat).total_seconds() < self.settings.worker_heartbeat_ttl:
                alive.append(worker)
        return alive


def get_backend(request: Request) -> Backend:
    return request.app.state.backend


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


BackendDep = Annotated[Backend, Depends(get_backend)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
