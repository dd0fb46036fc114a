"""Job documents: the record in Redis as clients see it, now (`document`), once it ends
(`wait_for_end`, `held`), and as it goes (`job_events`, the SSE stream).

Waiting and streaming subscribe to the job's events channel before they read the record, so an
event published in between is never missed; they also re-read the record every few seconds, so a
lost event (a dropped pub/sub connection) costs a delay, not a hang.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from redis.asyncio.client import PubSub
from sse_starlette import ServerSentEvent
from starlette.concurrency import run_in_threadpool

from contract.jobs import TERMINAL, JobStatus, events_channel, job_document, job_id_time
from service.deps import Backend
from service.problems import Problem, problem_type

TERMINAL_STATUSES = frozenset(s.value for s in TERMINAL)

RECHECK_S = 5.0
"""Longest a wait or a stream goes without re-reading the record."""

SSE_PING_S = 15.0
"""Seconds between keep-alive comments on an event stream (proxies drop silent connections)."""

END_EVENT = "end"
"""Name of the SSE event that carries the final job document; the stream closes after it."""


def not_found(job_id: str, result_ttl: int) -> Problem:
    """404 for a job with no record: expired if its id is older than the result TTL, else unknown."""
    made = job_id_time(job_id)
    if made is not None and time.time() - made > result_ttl:
        return Problem(404, f"job {job_id} has expired: jobs and their images are kept for {result_ttl} s",
                       type=problem_type("job-expired"), title="Job expired")
    return Problem(404, f"unknown job {job_id!r}", type=problem_type("job-not-found"), title="Job not found")


def load(backend: Backend, job_id: str, owner: str | None = None) -> dict[str, Any]:
    """The record of `job_id` if `owner` (an API key's digest, None when the API is open) made it,
    else the 404 problem of a job that does not exist: another key's job is not even acknowledged."""
    record = backend.jobs.get(job_id)
    if record is None or record.get("owner") != owner:
        raise not_found(job_id, backend.settings.result_ttl)
    return record


def document(backend: Backend, record: dict[str, Any], root: str = "") -> dict[str, Any]:
    """The job document of api.md, with a queued job's position in its model's queue and, when no
    live worker may serve its model, what it waits for; `root` is the path the app is mounted at
    (URLs are relative)."""
    if record["status"] != JobStatus.QUEUED.value:
        return job_document(record, root)
    return job_document(record, root, backend.queue_position(record), backend.waiting_for(record))


async def subscribe(backend: Backend, job_id: str) -> PubSub:
    """A pub/sub connection subscribed to the job's events, confirmed by Redis: after this returns,
    every event the job publishes reaches it."""
    pubsub = backend.aredis.pubsub()
    try:
        await pubsub.subscribe(events_channel(job_id))
        with anyio.fail_after(RECHECK_S):
            while (message := await pubsub.get_message(timeout=RECHECK_S)) is None or message["type"] != "subscribe":
                pass
    except BaseException:
        await close(pubsub)
        raise
    return pubsub


async def close(pubsub: PubSub) -> None:
    # shielded: this runs when a client disconnects, inside an already cancelled scope
    with anyio.CancelScope(shield=True):
        await pubsub.aclose()


def _event(message: dict[str, Any] | None) -> dict[str, Any] | None:
    if message is None or message.get("type") != "message":
        return None
    try:
        return json.loads(message["data"])
    except (TypeError, ValueError):
        return None


async def _get(backend: Backend, job_id: str) -> dict[str, Any] | None:
    return await run_in_threadpool(backend.jobs.get, job_id)


async def wait_for_end(backend: Backend, job_id: str, seconds: float) -> dict[str, Any] | None:
    """The record once the job has ended, or as it is after `seconds` (None if it vanished)."""
    deadline = time.monotonic() + seconds
    pubsub = await subscribe(backend, job_id)
    try:
        while True:
            record = await _get(backend, job_id)
            left = deadline - time.monotonic()
            if record is None or record["status"] in TERMINAL_STATUSES or left <= 0:
                return record
            recheck = time.monotonic() + min(left, RECHECK_S)
            while (left := recheck - time.monotonic()) > 0:
                event = _event(await pubsub.get_message(ignore_subscribe_messages=True, timeout=left))
                if event is not None and event.get("event") == END_EVENT:
                    break
    finally:
        await close(pubsub)


async def held(backend: Backend, record: dict[str, Any], seconds: float) -> dict[str, Any] | None:
    """`?wait=`: the record once its job has ended, or as it is after `seconds` (0: at once); None
    if the job was deleted meanwhile."""
    if seconds <= 0 or record["status"] in TERMINAL_STATUSES:
        return record
    return await wait_for_end(backend, record["id"], seconds)


async def job_events(backend: Backend, pubsub: PubSub, record: dict[str, Any],
                     root: str) -> AsyncIterator[ServerSentEvent]:
    """The SSE stream of a job whose events `pubsub` is subscribed to and whose record was read
    after subscribing: the current progress, each `progress` event, then one `end` event with the
    final job document. Owns `pubsub` and closes it."""
    job_id = record["id"]

    async def end(final: dict[str, Any]) -> ServerSentEvent:
        doc = await run_in_threadpool(document, backend, final, root)
        return ServerSentEvent(json.dumps(doc), event=END_EVENT)

    try:
        if record["status"] in TERMINAL_STATUSES:
            yield await end(record)
            return
        if record.get("progress"):
            yield ServerSentEvent(json.dumps(record["progress"]), event="progress")
        while True:
            event = _event(await pubsub.get_message(ignore_subscribe_messages=True, timeout=RECHECK_S))
            if event is not None and event.get("event") == "progress":
                data = {"step": event.get("step"), "total": event.get("total")}
                if event.get("preview") is not None:
                    data["preview"] = event["preview"]
                yield ServerSentEvent(json.dumps(data), event="progress")
                continue
            if event is None or event.get("event") == END_EVENT:
                # an end event, or a quiet spell: the record says whether the job is over
                current = await _get(backend, job_id)
                if current is None:
                    return
                if current["status"] in TERMINAL_STATUSES:
                    yield await end(current)
                    return
    finally:
        await close(pubsub)
