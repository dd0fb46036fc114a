"""End to end: a real Redis, `imagegen serve` and `imagegen worker` as processes, the Python client and
`imagegen submit` over real HTTP (see conftest.py). Submit, poll, fetch; events; webhooks."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import subprocess
import time

import httpx
import numpy as np
import pytest
from e2e_support import WEBHOOK_SECRET, as_json, imagegen_command
from PIL import Image

from imagegen.client import AsyncClient, Client

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SIZE = 28  # the tiny models' image size (tests/stores.py)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WAIT_S = 120.0


@pytest.fixture
def api(service):
    with Client(service.url, timeout=30) as client:
        yield client


def fetch_png(url: str) -> Image.Image:
    r = httpx.get(url, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and r.content.startswith(PNG_MAGIC)
    image = Image.open(io.BytesIO(r.content))
    image.load()
    return image


def contains(grid: np.ndarray, tile: np.ndarray) -> bool:
    """Whether `tile` appears, pixel for pixel, somewhere in `grid`."""
    h, w = tile.shape[:2]
    for top in range(grid.shape[0] - h + 1):
        for left in range(grid.shape[1] - w + 1):
            if np.array_equal(grid[top:top + h, left:left + w], tile):
                return True
    return False


def test_submit_poll_fetch(service, api):
    r = httpx.post(f"{service.url}/generate", json={"class_label": "sneaker", "num_images": 3, "seed": 11},
                   timeout=30)
    assert r.status_code == 202, r.text
    assert r.headers["location"].endswith(f"/jobs/{r.json()['id']}")
    assert r.json()["status"] in ("queued", "running")

    job = api.job(r.json()["id"])
    deadline = time.monotonic() + WAIT_S
    while not job.done:
        assert time.monotonic() < deadline, f"job still {job.status} after {WAIT_S} s\n{service.processes.report()}"
        time.sleep(0.2)
        job = api.job(job.id)
    assert job.status == "succeeded", (job.error, service.processes.report())
    assert [im["seed"] for im in job.images] == [11, 12, 13] and job.progress["step"] == job.progress["total"]

    tiles = [fetch_png(service.url + im["url"]) for im in job.images]
    assert all(t.size == (SIZE, SIZE) and t.mode == "L" for t in tiles)
    grid = fetch_png(service.url + job.grid_url)
    # three tiles side by side, plus whatever padding the grid draws between them
    assert grid.width >= 3 * SIZE and grid.height >= SIZE and grid.height < 2 * SIZE
    pixels = np.asarray(grid)
    assert all(contains(pixels, np.asarray(t)) for t in tiles), "an image is missing from the grid"
    # the client downloads the same images
    assert [np.asarray(im).tolist() for im in job.images()] == [np.asarray(t).tolist() for t in tiles]


def test_wait_follows_the_event_stream(service, api):
    job = api.generate("bag", num_images=2, steps=40, seed=3)
    done = job.wait(timeout=WAIT_S, stream=True)
    assert done.status == "succeeded" and done.id == job.id
    assert [im.size for im in done.images()] == [(SIZE, SIZE)] * 2


def test_events_report_progress_then_the_final_document(service, api):
    # long enough (on the CPU) to be seen running; short enough to keep the suite fast
    job = api.generate(1, num_images=1, steps=60)
    events = list(api.events(job.id, read_timeout=WAIT_S))
    final = events[-1]
    assert final["event"] == "end" and final["data"]["id"] == job.id and final["data"]["status"] == "succeeded"
    progress = [e["data"] for e in events if e["event"] == "progress" and e["data"]]
    assert progress, f"no progress event before the end: {events}"
    assert all(p["total"] == 60 and 0 <= p["step"] <= 60 for p in progress)
    assert [p["step"] for p in progress] == sorted(p["step"] for p in progress)


def test_async_client_end_to_end(service):
    async def go() -> tuple[str, list[tuple[int, int]]]:
        async with AsyncClient(service.url, timeout=30) as client:
            job = await client.generate("Trouser", num_images=2, steps=6)
            done = await job.wait(timeout=WAIT_S, stream=True)
            return done.status, [im.size for im in await done.images()]

    assert asyncio.run(go()) == ("succeeded", [(SIZE, SIZE)] * 2)


def test_webhook_gets_the_signed_final_document(service, api, webhook_receiver):
    job = api.generate("dress", num_images=1, steps=3, webhook_url=webhook_receiver.url)
    headers, body = webhook_receiver.next(timeout=WAIT_S)
    expected = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers.get("x-signature", ""), expected), headers
    doc = as_json(body)
    assert doc["id"] == job.id and doc["status"] == "succeeded" and len(doc["images"]) == 1
    assert doc == api.job(job.id).document


def run_submit(service, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([*imagegen_command(), "submit", "--url", service.url, *flags], capture_output=True,
                          text=True, timeout=WAIT_S + 30)


def test_submit_command_writes_the_pngs(service, tmp_path):
    out = tmp_path / "out"
    done = run_submit(service, "--class-label", "ankle boot", "--num-images", "2", "--steps", "3", "--seed", "5",
                      "--out", str(out))
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["status"] == "succeeded" and doc["request"]["class_label"] == 9 and doc["request"]["seed"] == 5
    assert sorted(p.name for p in out.iterdir()) == ["0.png", "1.png", "grid.png"]
    assert Image.open(out / "0.png").size == (SIZE, SIZE)


def test_submit_command_reports_a_bad_field_in_one_line(service):
    done = run_submit(service, "--class-label", "1", "--steps", "0")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == ["imagegen submit: error: steps: must be between 1 and 1000 (got 0)"]


def test_submit_no_wait_prints_the_queued_job(service):
    done = run_submit(service, "--class-label", "coat", "--num-images", "1", "--steps", "3", "--no-wait")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] in ("queued", "running", "succeeded")
