"""Load: 1,000 one-image jobs from 50 concurrent clients (httpx async over loopback) against `imagegen
serve` and 2 `imagegen worker` processes on the tiny CPU model. All succeed, none is lost, none runs
twice (each record was started once), every PNG decodes, the two jobs of each seed (every request is
sent twice, from different clients) give the same bytes, and those bytes are the image the engine
makes for that seed in-process. The figures are printed and written to load-figures.json."""

from __future__ import annotations

import asyncio
import io
import json
import statistics
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from e2e_support import Processes, Service, imagegen_command, service_env, wait_ready
from PIL import Image
from redis import Redis

from contract.jobs import JobStore
from diffusion.images import png_bytes
from model_store import ModelStore
from model_store.loading import load_generator
from service.redis_local import LocalRedis, free_port
from worker.engine import BatchEngine

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

JOBS = 1000
CLIENTS = 50
STEPS = 2
WAIT_S = 60  # each POST holds its answer until the job ends (?wait=), then polls if need be
DEADLINE_S = 300.0


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory, tiny_store_root) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("load")
    with LocalRedis(tmp / "redis") as redis:
        env = service_env(tiny_store_root, REDIS_URL=redis.url, RATE_LIMIT_PER_MINUTE="0", LOG_LEVEL="warning")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        processes = Processes(tmp)
        try:
            processes.start("api", [*imagegen_command(), "serve", "--port", str(port)], env)
            for name in ("worker-a", "worker-b"):
                processes.start(name, [*imagegen_command(), "worker", "--device", "cpu", "--name", name], env)
            wait_ready(url, processes)
            deadline = time.monotonic() + 120
            while httpx.get(f"{url}/readyz", timeout=10).json().get("workers", 0) < 2:  # both, not just one
                assert time.monotonic() < deadline, processes.report()
                time.sleep(0.5)
            yield Service(url, redis.url, processes)
        finally:
            processes.stop()


def request_of(i: int) -> dict[str, Any]:
    # job i and job i + JOBS/2 ask for the same image; they go to different clients
    k = i % (JOBS // 2)
    return {"class_label": k % 10, "num_images": 1, "steps": STEPS, "seed": 10_000 + k, "guidance_scale": 2.0}


async def run_job(http: httpx.AsyncClient, i: int) -> dict[str, Any]:
    started = time.monotonic()
    r = await http.post("/generate", params={"wait": WAIT_S}, json=request_of(i))
    assert r.status_code in (200, 202), r.text
    doc = r.json()
    while doc["status"] in ("queued", "running"):
        await asyncio.sleep(0.5)
        doc = (await http.get(f"/jobs/{doc['id']}")).json()
    assert doc["status"] == "succeeded", doc
    png = await http.get(doc["images"][0]["url"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    return {"i": i, "id": doc["id"], "png": png.content, "seconds": time.monotonic() - started}


async def client(base: str, jobs: list[int]) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=base, timeout=WAIT_S + 30) as http:
        return [await run_job(http, i) for i in jobs]


async def load(base: str) -> tuple[list[dict[str, Any]], float]:
    started = time.monotonic()
    shares = [list(range(c, JOBS, CLIENTS)) for c in range(CLIENTS)]
    results = await asyncio.wait_for(asyncio.gather(*(client(base, share) for share in shares)), DEADLINE_S)
    return [r for share in results for r in share], time.monotonic() - started


def expected_pixels(store_root, requests: list[dict[str, Any]]) -> list[np.ndarray]:
    """Each request's image made in-process by the engine (in one batch: an image depends only on its
    seed), normalized as the API normalizes it, decoded from PNG as the worker's is."""
    generator = load_generator(ModelStore(store_root), "fashion-mnist")
    engine = BatchEngine({generator.card.ref: generator}, max_batch_images=len(requests))
    for n, q in enumerate(requests):
        engine.add(str(n), generator.card.ref, {**q, "guidance": "cfg", "sampler": "ddim", "eta": 0.0})
    finished: dict[str, Any] = {}
    while engine.jobs():
        finished.update(engine.step().finished)
    out = []
    for n in range(len(requests)):
        with Image.open(io.BytesIO(png_bytes(finished[str(n)][0]))) as img:
            out.append(np.asarray(img).astype(np.int16))
    return out


def test_1000_jobs_from_50_clients_on_2_workers_all_succeed_once_with_their_seeds_images(two_workers,
                                                                                        tiny_store_root, tmp_path):
    results, wall = asyncio.run(load(two_workers.url))
    two_workers.processes.check_alive()

    # none lost: 1,000 answers, 1,000 distinct jobs, 1,000 records, each succeeded and started once
    assert len(results) == JOBS and len({r["id"] for r in results}) == JOBS
    redis = Redis.from_url(two_workers.redis_url)
    records = JobStore(redis).get_many([r["id"] for r in results])
    assert all(rec and rec["status"] == "succeeded" for rec in records)
    assert {rec["attempts"] for rec in records} == {"1"}, "a job ran twice"
    per_worker = {w: sum(rec["worker"] == w for rec in records) for w in ("worker-a", "worker-b")}
    assert len(redis.keys("imagegen:job:*")) == JOBS

    # every PNG decodes; the same request gives the same bytes, whichever worker and batch ran it
    by_index = {r["i"]: r for r in results}
    for r in results:
        with Image.open(io.BytesIO(r["png"])) as img:
            assert img.size == (28, 28)
    for k in range(JOBS // 2):
        assert by_index[k]["png"] == by_index[k + JOBS // 2]["png"], k
    # and they are the images of their seeds (a sample of 50: the engine is slow on this machine)
    sample = list(range(0, JOBS // 2, 10))
    for k, want in zip(sample, expected_pixels(tiny_store_root, [request_of(k) for k in sample])):
        with Image.open(io.BytesIO(by_index[k]["png"])) as img:
            assert np.abs(np.asarray(img).astype(np.int16) - want).max() <= 1, k
    assert len({by_index[k]["png"] for k in range(JOBS // 2)}) == JOBS // 2  # distinct seeds, distinct images

    latencies = sorted(r["seconds"] for r in results)
    figures = {
        "jobs": JOBS, "clients": CLIENTS, "workers": 2, "steps": STEPS, "wall_s": round(wall, 1),
        "jobs_per_s": round(JOBS / wall, 1), "latency_median_s": round(statistics.median(latencies), 2),
        "latency_p95_s": round(latencies[int(0.95 * JOBS) - 1], 2), "latency_max_s": round(latencies[-1], 2),
        "jobs_per_worker": per_worker,
    }
    (tmp_path / "load-figures.json").write_text(json.dumps(figures, indent=2))
    print(f"\nload: {json.dumps(figures)}")
