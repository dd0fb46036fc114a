"""The API as it runs: `python -m service` under uvicorn on a free loopback port, spoken to over
real HTTP; the event stream of a job that a stand-in worker drives from a thread."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from api_helpers import FakeWorker, api_process, queue_of
from redis import Redis


@pytest.fixture(scope="module")
def server(redis_server, tiny_store_root, tmp_path_factory) -> Iterator[str]:
    with api_process(redis_server.url, tiny_store_root, tmp_path_factory.mktemp("uvicorn") / "server.log") as base:
        yield base


@pytest.fixture
def worker(redis_url) -> FakeWorker:
    redis = Redis.from_url(redis_url)
    return FakeWorker(redis, queue_of(redis))


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event, data) of each event of a text/event-stream; ("comment", text) for a comment."""
    event, data = "message", []
    for line in lines:
        if line == "":
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            yield "comment", line[1:].strip()
        elif line.startswith("event:"):
            event = line[len("event:"):].strip()
        elif line.startswith("data:"):
            data.append(line[len("data:"):].strip())


def test_submit_and_poll_over_http(server):
    r = httpx.post(f"{server}/generate", json={"class_label": "Sneaker", "num_images": 1}, timeout=10)
    assert r.status_code == 202 and r.headers["location"] == f"/jobs/{r.json()['id']}"
    doc = httpx.get(server + r.headers["location"], timeout=10).json()
    assert doc["status"] == "queued" and doc["request"]["class_label"] == 7
    problem = httpx.post(f"{server}/generate", json={"class_label": 1, "steps": 0}, timeout=10)
    assert problem.status_code == 422 and problem.headers["content-type"] == "application/problem+json"


def test_event_stream_yields_progress_then_the_final_document(server, worker):
    job_id = httpx.post(f"{server}/generate", json={"class_label": 1, "num_images": 2, "steps": 4},
                        timeout=10).json()["id"]

    def run_job() -> None:
        worker.start(job_id)
        for step in range(1, 5):
            time.sleep(0.05)
            worker.progress(job_id, step, 4)
        worker.succeed(job_id)

    events = []
    with httpx.stream("GET", f"{server}/jobs/{job_id}/events", timeout=20) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        # the stream subscribed before answering: nothing the job publishes from now on is missed
        thread = threading.Thread(target=run_job)
        thread.start()
        for event, data in sse_events(r.iter_lines()):
            if event != "comment":
                events.append((event, json.loads(data)))
    thread.join()
    assert [e for e, _ in events] == ["progress"] * 4 + ["end"]
    assert [d["step"] for _, d in events[:4]] == [1, 2, 3, 4] and all(d["total"] == 4 for _, d in events[:4])
    final = events[-1][1]
    assert final["id"] == job_id and final["status"] == "succeeded" and final["progress"] == {"step": 4, "total": 4}
    assert [im["url"] for im in final["images"]] == [f"/jobs/{job_id}/images/{i}.png" for i in range(2)]
    png = httpx.get(server + final["images"][1]["url"], timeout=10)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
