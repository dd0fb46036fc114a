"""Where finished PNGs live. A small interface, so that a shared filesystem or S3 can stand in for
Redis later; the Redis store keeps each PNG for the result TTL."""

from __future__ import annotations

from typing import Protocol

from redis import Redis
from redis.client import Pipeline

from contract.jobs import PREFIX


def result_names(num_images: int) -> list[str]:
    """The files a job of `num_images` images leaves in the result store: one PNG each, and the grid."""
    return [f"{i}.png" for i in range(num_images)] + ["grid.png"]


class ResultStore(Protocol):
    def put(self, job_id: str, name: str, data: bytes) -> None:
        """Store one result file (e.g. "0.png", "grid.png") of a job."""

    def get(self, job_id: str, name: str) -> bytes | None:
        """One result file, or None if absent or expired."""

    def delete(self, job_id: str, names: list[str]) -> None:
        """Remove result files of a job (absent ones are no error)."""


class RedisResultStore:
    def __init__(self, redis: Redis, ttl: int = 86_400):
        self.redis, self.ttl = redis, ttl

    @staticmethod
    def key(job_id: str, name: str) -> str:
        return f"{PREFIX}result:{job_id}:{name}"

    def put(self, job_id: str, name: str, data: bytes) -> None:
        self.redis.set(self.key(job_id, name), data, ex=self.ttl)

    def put_many(self, job_id: str, files: dict[str, bytes], pipe: Pipeline | None = None) -> None:
        """Store several files of a job in one round trip; with `pipe`, queued on it (stored when
        its caller executes it, before what the caller queued after)."""
        own = pipe is None
        pipe = self.redis.pipeline(transaction=False) if own else pipe
        for name, data in files.items():
            pipe.set(self.key(job_id, name), data, ex=self.ttl)
        if own:
            pipe.execute()

    def get(self, job_id: str, name: str) -> bytes | None:
        return self.redis.get(self.key(job_id, name))

    def delete(self, job_id: str, names: list[str]) -> None:
        if names:
            self.redis.delete(*(self.key(job_id, name) for name in names))
