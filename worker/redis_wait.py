"""Patience with Redis: a worker started before its Redis (a compose stack coming up, a reboot) waits
for it instead of exiting, and one whose Redis goes away retries with a short backoff (the loop in
worker.main keeps its batch meanwhile)."""

from __future__ import annotations

import contextlib
import logging
import time

import redis.exceptions
from redis import Redis

log = logging.getLogger(__name__)

REDIS_BACKOFF_MAX = 5.0
"""Longest wait between tries to reach a Redis that is down: well under WORKER_HEARTBEAT_TTL, so that a
worker is back with a heartbeat before the others could take it for dead."""

REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
"""What a Redis that is down or restarting raises (BusyLoadingError, Redis still loading its
append-only file, is a ConnectionError)."""


class WaitsForRedis:
    """A mixin for an rq worker: construction and bootstrap that wait for Redis."""

    def _set_ip_address(self, connection: Redis) -> None:
        # rq asks Redis for the worker's address while constructing it; unknown until Redis is up
        try:
            super()._set_ip_address(connection)  # type: ignore[misc]
        except REDIS_DOWN:
            self.ip_address = "unknown"

    def _bootstrap(self, logging_level: str | None) -> None:
        """rq's bootstrap (register the worker), retried until Redis answers."""
        backoff = 1.0
        while True:
            try:
                self.bootstrap(logging_level)  # type: ignore[attr-defined]
                return
            except REDIS_DOWN as e:
                log.error("Redis unreachable at start (%s); retrying in %.0f s", e, backoff)
                with contextlib.suppress(Exception):  # undo a half-done start, or the retry finds "our" key
                    self.unsubscribe()  # type: ignore[attr-defined]
                    self.register_death()  # type: ignore[attr-defined]
                time.sleep(backoff)
                backoff = min(backoff * 2, REDIS_BACKOFF_MAX)
