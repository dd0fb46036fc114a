"""The worker's counters in one Redis hash, which the API's /metrics renders in Prometheus format.

Counters only grow (HINCRBY / HINCRBYFLOAT), so any number of workers can add to the same hash.
"""

from __future__ import annotations

from redis import Redis
from redis.client import Pipeline

METRICS_KEY = "imagegen:metrics:worker"
"""Redis hash of every worker's counters."""

BATCH_BUCKETS = ("1", "2", "4", "8", "16", "32", "64", "128", "256", "+Inf")
"""Upper bounds (le) of the histogram of images per model evaluation; cumulative, as in Prometheus."""


def record_step(redis: Redis | Pipeline, batch_images: list[int], seconds: float) -> None:
    """One engine step: its model evaluations, each with its number of images, and its wall time."""
    redis.hincrbyfloat(METRICS_KEY, "sampling_seconds_total", seconds)
    if not batch_images:
        return
    redis.hincrby(METRICS_KEY, "batches_total", len(batch_images))
    redis.hincrby(METRICS_KEY, "batch_images_sum", sum(batch_images))
    redis.hincrby(METRICS_KEY, "batch_images_count", len(batch_images))
    for le in BATCH_BUCKETS:
        n = sum(1 for b in batch_images if le == "+Inf" or b <= int(le))
        if n:
            redis.hincrby(METRICS_KEY, f"batch_images_bucket:{le}", n)


def record_job_end(redis: Redis | Pipeline, status: str, images: int = 0) -> None:
    """A job reached `status` (succeeded, failed, canceled), having made `images` images."""
    redis.hincrby(METRICS_KEY, f"jobs_{status}_total", 1)
    if images:
        redis.hincrby(METRICS_KEY, "images_total", images)


def record_model_event(redis: Redis | Pipeline, kind: str, ref: str, seconds: float = 0.0) -> None:
    """A model loaded (taking `seconds`), evicted, or whose load failed, on some worker; per model ref."""
    if kind == "loaded":
        redis.hincrby(METRICS_KEY, f"model_loads_total:{ref}", 1)
        redis.hincrbyfloat(METRICS_KEY, f"model_load_seconds_total:{ref}", seconds)
    elif kind == "evicted":
        redis.hincrby(METRICS_KEY, f"model_evictions_total:{ref}", 1)
    elif kind == "load_failed":
        redis.hincrby(METRICS_KEY, f"model_load_failures_total:{ref}", 1)
