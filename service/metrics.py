"""Prometheus metrics: the API's own (requests, latency) and, read from Redis at scrape time, the
queue, the jobs by status, the live workers and the workers' counters.

Each app has its own registry (not prometheus_client's global one), so that several apps in one
process (tests) do not collide. Workers run elsewhere and write their counters into the Redis hash
`imagegen:metrics:worker`; summed over every worker, they are rendered here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis.exceptions
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contract.jobs import PREFIX, TERMINAL, JobStatus
from contract.queues import queue_model
from contract.workers import read_worker_models

WORKER_METRICS_KEY = f"{PREFIX}metrics:worker"
"""Redis hash the workers increment (see the worker contract)."""

BATCH_BUCKETS = ("1", "2", "4", "8", "16", "32", "64", "128", "256", "+Inf")
"""Upper bounds of the images-per-batch histogram, as the workers spell them."""

TERMINAL_NAMES = frozenset(s.value for s in TERMINAL)

JOB_COUNT_CACHE_S = 10.0
"""Counting jobs by status scans every record: at most once per this many seconds."""


class Metrics:
    """The registry of one app and the instruments its middleware updates."""

    def __init__(self, backend: Callable[[], Any]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter("imagegen_http_requests", "HTTP requests answered, by route and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("imagegen_http_request_duration_seconds",
                                 "Seconds from request to the end of the response (an event stream: its lifetime)",
                                 ["method", "route"], registry=self.registry)
        self.registry.register(RedisCollector(backend))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware counting requests by route template (not raw path: job ids would make a
    series per job)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope.get("method", "")
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)


def _number(raw: Any) -> float:
    try:
        return float(raw)
    except (TypeError, ValueError):
        return 0.0


def batch_histogram(fields: dict[str, float]) -> tuple[list[tuple[str, float]], float]:
    """(cumulative buckets, sum) of the workers' images-per-batch histogram.

    Prometheus buckets are cumulative (+Inf = count). A worker may instead increment only the first
    bucket an observation fits (then the buckets sum to the count): such buckets are summed up here,
    so either convention renders right."""
    counts = [fields.get(f"batch_images_bucket:{le}", 0.0) for le in BATCH_BUCKETS]
    total = fields.get("batch_images_count", 0.0)
    if sum(counts) == total and counts[-1] != total:
        running, cumulative = 0.0, []
        for c in counts:
            running += c
            cumulative.append(running)
        counts = cumulative
    # a scrape between a worker's increments may catch a bucket above a later one
    for i in range(1, len(counts)):
        counts[i] = max(counts[i], counts[i - 1])
    return list(zip(BATCH_BUCKETS, counts)), fields.get("batch_images_sum", 0.0)


class RedisCollector:
    """Reads the shared state at scrape time; with Redis down it reports `imagegen_redis_up 0` and
    the API's own metrics still render."""

    def __init__(self, backend: Callable[[], Any]) -> None:
        self.backend = backend
        self._job_counts: tuple[float, dict[str, int]] | None = None

    def describe(self) -> list[Metric]:
        return []  # nothing to check at registration; and no Redis call then

    def _count_jobs(self, b: Any) -> dict[str, int]:
        now = time.monotonic()
        if self._job_counts is not None and now - self._job_counts[0] < JOB_COUNT_CACHE_S:
            return self._job_counts[1]
        counts = {s.value: 0 for s in JobStatus}
        keys: list[bytes] = []

        def flush() -> None:
            pipe = b.redis.pipeline(transaction=False)
            for key in keys:
                pipe.hget(key, "status")
            for status in pipe.execute():
                if status is not None:
                    status = status.decode()
                    counts[status] = counts.get(status, 0) + 1
            keys.clear()

        for key in b.redis.scan_iter(match=f"{PREFIX}job:*", count=1000):
            keys.append(key)
            if len(keys) >= 1000:
                flush()
        flush()
        self._job_counts = (now, counts)
        return counts

    def collect(self) -> Iterator[Metric]:
        b = self.backend()
        up = GaugeMetricFamily("imagegen_redis_up", "1 if Redis answered this scrape")
        if b is None:
            up.add_metric([], 0)
            yield up
            return
        try:
            depths = queue_depths(b)
            live = b.live_workers()
            held = read_worker_models(b.redis, [w.name for w in live])
            jobs = self._count_jobs(b)
            raw = b.redis.hgetall(WORKER_METRICS_KEY)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield GaugeMetricFamily("imagegen_queue_depth", "Jobs waiting in the RQ queues, every model's",
                                value=sum(depths.values()))
        yield GaugeMetricFamily("imagegen_workers_alive", "Workers with a recent heartbeat", value=len(live))
        by_status = GaugeMetricFamily("imagegen_jobs", "Jobs held in Redis, by status", labels=["status"])
        for status, n in sorted(jobs.items()):
            by_status.add_metric([status], n)
        yield by_status

        fields = {(k.decode() if isinstance(k, bytes) else k): _number(v) for k, v in raw.items()}
        yield CounterMetricFamily("imagegen_batches", "Batches the workers ran", value=fields.get("batches_total", 0.0))
        yield CounterMetricFamily("imagegen_images_generated", "Images the workers generated",
                                  value=fields.get("images_total", 0.0))
        yield CounterMetricFamily("imagegen_sampling_seconds", "Seconds the workers spent sampling",
                                  value=fields.get("sampling_seconds_total", 0.0))
        ended = CounterMetricFamily("imagegen_jobs_ended", "Jobs the workers ended, by final status",
                                    labels=["status"])
        for status in sorted(TERMINAL_NAMES):
            ended.add_metric([status], fields.get(f"jobs_{status}_total", 0.0))
        yield ended
        buckets, total = batch_histogram(fields)
        hist = HistogramMetricFamily("imagegen_batch_images", "Images per batch")
        # the count is the +Inf bucket, as Prometheus defines it
        hist.add_metric([], buckets, sum_value=total if math.isfinite(total) else 0.0)
        yield hist
        yield from model_families(b.settings.queue_name, depths, live, held, fields)


def queue_depths(b: Any) -> dict[str, int]:
    """Jobs waiting per model ref, for every generator of the store (one round trip); the bare
    QUEUE_NAME queue of an older release under "", while it holds any."""
    queues = b.model_queues()
    legacy = b.queue_for("")
    pipe = b.redis.pipeline(transaction=False)
    for queue in [*queues.values(), legacy]:
        pipe.llen(queue.key)
    *counts, left = pipe.execute()
    depths = dict(zip(queues, counts))
    if left:
        depths[""] = left
    return depths


def _per_model(name: str, help_text: str, values: dict[str, float], kind: type = GaugeMetricFamily) -> Metric:
    family = kind(name, help_text, labels=["model"])
    for ref, value in sorted(values.items()):
        family.add_metric([ref], value)
    return family


def _counters(fields: dict[str, float], prefix: str) -> dict[str, float]:
    return {k[len(prefix):]: v for k, v in fields.items() if k.startswith(prefix)}


def model_families(queue_name: str, depths: dict[str, int], live: list[Any], held: dict[str, Any],
                   fields: dict[str, float]) -> Iterator[Metric]:
    """Per model ref: its queue, the live workers that may serve it, its loads, evictions and load
    seconds (the workers' counters), and the bytes it takes on the workers that hold it now."""
    yield _per_model("imagegen_model_queue_depth", "Jobs waiting in each model's queue",
                     {ref: n for ref, n in depths.items() if ref})
    serving: dict[str, float] = {}
    for worker in live:
        for queue in worker.queue_names():
            if (ref := queue_model(queue_name, queue)) is not None:
                serving[ref] = serving.get(ref, 0) + 1
    yield _per_model("imagegen_model_workers", "Live workers that may serve each model", serving)
    loaded: dict[str, float] = {}
    for models in held.values():
        for ref, n in models.loaded.items():
            loaded[ref] = loaded.get(ref, 0) + n
    yield _per_model("imagegen_model_loaded_bytes", "Bytes each model takes on the live workers that hold it "
                                                    "(weights and the engine's reserve)", loaded)
    yield _per_model("imagegen_model_loads", "Loads of each model by the workers",
                     _counters(fields, "model_loads_total:"), CounterMetricFamily)
    yield _per_model("imagegen_model_evictions", "Evictions of each model from a worker's memory budget",
                     _counters(fields, "model_evictions_total:"), CounterMetricFamily)
    yield _per_model("imagegen_model_load_seconds", "Seconds the workers spent loading each model",
                     _counters(fields, "model_load_seconds_total:"), CounterMetricFamily)
    yield _per_model("imagegen_model_load_failures", "Failed loads of each model",
                     _counters(fields, "model_load_failures_total:"), CounterMetricFamily)
