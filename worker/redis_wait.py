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
    """A mixin for an rq worker made with `prepare_for_work=False`: its start waits for Redis."""

    def bootstrap_when_redis_answers(self, logging_level: str | None) -> None:
        """rq's bootstrap (register the worker), after asking Redis for this connection's address
        (what `prepare_for_work` would have asked while constructing), retried until Redis answers."""
        backoff = 1.0
        while True:
            try:
                self.ip_address = client_address(self.connection, self.name)  # type: ignore[attr-defined]
                self.bootstrap(logging_level)  # type: ignore[attr-defined]
                return
            except REDIS_DOWN as e:
                log.error("Redis unreachable at start (%s); retrying in %.0f s", e, backoff)
                with contextlib.suppress(Exception):  # undo a half-done start, or the retry finds "our" key
                    self.unsubscribe()  # type: ignore[attr-defined]
                    self.register_death()  # type: ignore[attr-defined]
                time.sleep(backoff)
                backoff = min(backoff * 2, REDIS_BACKOFF_MAX)


def client_address(connection: Redis, name: str) -> str:
    """This connection's address as Redis sees it ("ip:port", what `rq info` shows), after naming
    the connection `name`; "unknown" where the server has no CLIENT SETNAME or CLIENT INFO."""
    try:
        connection.client_setname(name)
        return str(connection.client_info()["addr"])
    except redis.exceptions.ResponseError:
        return "unknown"
