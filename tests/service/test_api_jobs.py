"""GET /jobs/{id}, its PNGs, its events (for an ended job), POST /jobs/{id}/cancel and DELETE, with
a stand-in worker driving the records through JobStore and the result store."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
from api_helpers import assert_problem, submit

from contract.jobs import JobStatus, new_job_id


def test_unknown_job_is_404(client):
    for job_id in (new_job_id(), "not-an-id"):
        problem = assert_problem(client.get(f"/jobs/{job_id}"), 404)
        assert "unknown job" in problem["detail"] and "expired" not in problem["detail"]
        assert problem["type"].endswith("job-not-found")
    assert_problem(client.delete(f"/jobs/{new_job_id()}"), 404)
    assert_problem(client.post(f"/jobs/{new_job_id()}/cancel"), 404)
    assert_problem(client.get(f"/jobs/{new_job_id()}/grid.png"), 404)
    assert_problem(client.get(f"/jobs/{new_job_id()}/events"), 404)


def test_a_job_older_than_the_result_ttl_is_404_expired(client, settings):
    made_ms = int((time.time() - settings.result_ttl - 60) * 1000)
    old_id = f"{made_ms:012x}{os.urandom(10).hex()}"
    for path in (f"/jobs/{old_id}", f"/jobs/{old_id}/images/0.png", f"/jobs/{old_id}/grid.png"):
        problem = assert_problem(client.get(path), 404)
        assert "expired" in problem["detail"] and problem["type"].endswith("job-expired")


def test_progress_then_success_gives_urls_and_pngs(client, fake_worker):
    doc = submit(client, class_label="bag", num_images=3, seed=7)
    job_id = doc["id"]

    fake_worker.start(job_id)
    fake_worker.progress(job_id, 2, 4)
    running = client.get(f"/jobs/{job_id}").json()
    assert running["status"] == "running" and running["queue_position"] is None
    assert running["progress"] == {"step": 2, "total": 4} and running["started_at"]
    assert_problem(client.get(f"/jobs/{job_id}/images/0.png"), 404)  # no images before success

    images = fake_worker.succeed(job_id)
    done = client.get(f"/jobs/{job_id}").json()
    assert done["status"] == "succeeded" and done["finished_at"] and done["error"] is None
    assert done["images"] == [{"index": i, "seed": 7 + i, "url": f"/jobs/{job_id}/images/{i}.png"} for i in range(3)]
    assert done["grid_url"] == f"/jobs/{job_id}/grid.png"
    for image, data in zip(done["images"], images):
        r = client.get(image["url"])
        assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content == data
    grid = client.get(done["grid_url"])
    assert grid.status_code == 200 and grid.headers["content-type"] == "image/png"
    assert grid.content.startswith(b"\x89PNG")
    problem = assert_problem(client.get(f"/jobs/{job_id}/images/3.png"), 404)
    assert "0..2" in problem["detail"]
    assert client.get(f"/jobs/{job_id}/images/x.png").status_code == 404


def test_get_with_wait_is_a_long_poll(client, fake_worker):
    doc = submit(client, class_label=1, num_images=2)
    job_id = doc["id"]
    # nothing happens: held for the wait, then the document as it is (200, as any GET)
    started = time.monotonic()
    r = client.get(f"/jobs/{job_id}?wait=1")
    assert r.status_code == 200 and r.json()["status"] == "queued" and r.json()["queue_position"] == 0
    assert 0.9 <= time.monotonic() - started < 5

    # the job ends during the wait: the answer comes as it ends, with the final document
    fake_worker.start(job_id)
    finisher = threading.Timer(0.5, fake_worker.succeed, args=(job_id,))
    started = time.monotonic()
    finisher.start()
    try:
        r = client.get(f"/jobs/{job_id}?wait=30")
    finally:
        finisher.join()
    elapsed = time.monotonic() - started
    assert r.status_code == 200 and r.json()["status"] == "succeeded" and len(r.json()["images"]) == 2
    assert 0.4 <= elapsed < 10, elapsed

    # an ended job is answered at once
    started = time.monotonic()
    assert client.get(f"/jobs/{job_id}?wait=30").json()["status"] == "succeeded"
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("wait", ["-1", "61", "soon"])
def test_get_wait_out_of_range_names_the_field(client, wait):
    job_id = submit(client, class_label=1)["id"]
    problem = assert_problem(client.get(f"/jobs/{job_id}?wait={wait}"), 422)
    assert problem["errors"][0]["field"] == "wait"


def test_a_failed_job_shows_its_error(client, fake_worker):
    job_id = submit(client)["id"]
    fake_worker.start(job_id)
    fake_worker.fail(job_id, "sampling_error", "NaN in the sample")
    doc = client.get(f"/jobs/{job_id}").json()
    assert doc["status"] == "failed" and doc["error"] == {"code": "sampling_error", "message": "NaN in the sample"}
    assert doc["images"] == [] and doc["grid_url"] is None


def test_images_gone_from_the_result_store_are_404_expired(client, fake_worker, redis):
    job_id = submit(client, num_images=1)["id"]
    fake_worker.start(job_id)
    fake_worker.succeed(job_id)
    redis.delete(fake_worker.results.key(job_id, "0.png"))
    problem = assert_problem(client.get(f"/jobs/{job_id}/images/0.png"), 404)
    assert "expired" in problem["detail"]


def test_cancel_a_queued_job(client, queue):
    keep, cancel = submit(client)["id"], submit(client)["id"]
    assert queue.job_ids == [keep, cancel]
    r = client.post(f"/jobs/{cancel}/cancel")
    assert r.status_code == 200
    doc = r.json()
    assert doc["status"] == "canceled" and doc["finished_at"] and doc["queue_position"] is None
    assert queue.job_ids == [keep]
    # RQ's own bookkeeping agrees: the job is in its canceled registry, not left "queued"
    assert cancel in queue.canceled_job_registry.get_job_ids()
    assert queue.fetch_job(cancel).get_status() == "canceled"
    # canceled is not deleted: the job stays readable
    assert client.get(f"/jobs/{cancel}").json()["status"] == "canceled"
    # again: nothing changes
    assert client.post(f"/jobs/{cancel}/cancel").json()["status"] == "canceled"


def test_cancel_a_running_job_is_accepted_for_the_worker(client, fake_worker, redis):
    job_id = submit(client)["id"]
    fake_worker.start(job_id)
    r = client.post(f"/jobs/{job_id}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "running"
    assert fake_worker.jobs.cancel_requested([job_id]) == {job_id}
    assert client.get(f"/jobs/{job_id}").status_code == 200


def test_cancel_an_ended_job_answers_it_as_it_is(client, fake_worker):
    job_id = submit(client, num_images=1)["id"]
    fake_worker.start(job_id)
    fake_worker.succeed(job_id)
    r = client.post(f"/jobs/{job_id}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "succeeded" and len(r.json()["images"]) == 1
    assert client.get(f"/jobs/{job_id}/images/0.png").status_code == 200


def assert_gone(client, job_id: str, num_images: int) -> None:
    """Every read of the job answers 404, as for a job that never existed."""
    paths = [f"/jobs/{job_id}", f"/jobs/{job_id}?wait=5", f"/jobs/{job_id}/grid.png", f"/jobs/{job_id}/events",
             *(f"/jobs/{job_id}/images/{i}.png" for i in range(num_images))]
    for path in paths:
        problem = assert_problem(client.get(path), 404)
        assert problem["type"].endswith("job-not-found"), (path, problem)
    assert_problem(client.post(f"/jobs/{job_id}/cancel"), 404)
    assert_problem(client.delete(f"/jobs/{job_id}"), 404)


def test_delete_a_succeeded_job_removes_it_its_pngs_and_its_idempotency_key(client, fake_worker, redis, queue):
    key = {"Idempotency-Key": "delete-me-1"}
    first = client.post("/generate", json={"class_label": 1, "num_images": 2}, headers=key)
    assert first.status_code == 202
    job_id = first.json()["id"]
    fake_worker.start(job_id)
    fake_worker.succeed(job_id)
    assert client.get(f"/jobs/{job_id}/images/1.png").status_code == 200

    r = client.delete(f"/jobs/{job_id}")
    assert r.status_code == 204 and r.content == b""
    assert_gone(client, job_id, 2)
    # nothing of it is left in Redis: no record, no PNG, no idempotency entry, no RQ job
    assert [k for k in redis.keys("*") if job_id.encode() in k] == []
    assert redis.keys("imagegen:idem:*") == [] and redis.smembers("imagegen:running") == set()
    assert queue.fetch_job(job_id) is None and job_id not in queue.finished_job_registry.get_job_ids()

    # the key is free again: the same request with it makes a new job
    again = client.post("/generate", json={"class_label": 1, "num_images": 2}, headers=key)
    assert again.status_code == 202 and again.json()["id"] != job_id
    assert client.post("/generate", json={"class_label": 1, "num_images": 2}, headers=key).json()["id"] == \
        again.json()["id"]


def test_delete_a_queued_job_takes_it_off_the_queue(client, queue, redis):
    keep, gone = submit(client)["id"], submit(client)["id"]
    assert client.delete(f"/jobs/{gone}").status_code == 204
    assert queue.job_ids == [keep] and queue.fetch_job(gone) is None
    assert_gone(client, gone, 4)
    assert client.get(f"/jobs/{keep}").json()["queue_position"] == 0


def test_delete_a_running_job_stops_its_worker_and_a_late_finish_writes_no_record(client, fake_worker, redis):
    job_id = submit(client, num_images=1)["id"]
    fake_worker.start(job_id)
    fake_worker.progress(job_id, 1, 4)
    assert client.delete(f"/jobs/{job_id}").status_code == 204
    # the worker's next check finds the record gone, which it treats as a cancel
    assert fake_worker.jobs.cancel_requested([job_id]) == {job_id}
    # a worker that writes progress or its end after the delete brings no record back
    fake_worker.progress(job_id, 2, 4)
    assert fake_worker.jobs.finish(job_id, JobStatus.SUCCEEDED, images=[{"index": 0, "seed": 1}]) is False
    assert redis.exists(f"imagegen:job:{job_id}") == 0
    assert_gone(client, job_id, 1)


def test_a_delete_ends_a_wait_and_an_event_stream_at_once(client, fake_worker):
    job_id = submit(client)["id"]
    fake_worker.start(job_id)

    def delete_later() -> None:
        time.sleep(0.5)
        assert client.delete(f"/jobs/{job_id}").status_code == 204

    thread = threading.Thread(target=delete_later)
    thread.start()
    started = time.monotonic()
    with client.stream("GET", f"/jobs/{job_id}/events") as r:
        lines = list(r.iter_lines())
    thread.join()
    # the stream closes without an end event (there is no job to end), well before RECHECK_S
    assert r.status_code == 200 and "event: end" not in lines
    assert time.monotonic() - started < 3

    # a long poll on a job deleted while it waits answers what every later read answers: 404
    job_id = submit(client)["id"]
    fake_worker.start(job_id)
    thread = threading.Thread(target=delete_later)
    thread.start()
    started = time.monotonic()
    assert_problem(client.get(f"/jobs/{job_id}?wait=30"), 404)
    thread.join()
    assert time.monotonic() - started < 3


def test_events_of_an_ended_job_are_one_end_event(client, fake_worker):
    job_id = submit(client, num_images=1)["id"]
    fake_worker.start(job_id)
    fake_worker.succeed(job_id)
    with client.stream("GET", f"/jobs/{job_id}/events") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    assert "event: end" in text and "event: progress" not in text
    data = next(line for line in text.splitlines() if line.startswith("data: "))
    doc = json.loads(data[len("data: "):])
    assert doc["id"] == job_id and doc["status"] == "succeeded" and doc["images"][0]["url"].endswith("/0.png")




def test_events_send_keep_alive_comments_until_the_job_ends(client, fake_worker):
    import threading

    client.app.state.sse_ping_s = 0.1
    job_id = submit(client)["id"]

    def cancel_later() -> None:
        time.sleep(0.5)
        fake_worker.jobs.cancel(job_id)

    thread = threading.Thread(target=cancel_later)
    thread.start()
    with client.stream("GET", f"/jobs/{job_id}/events") as r:
        lines = list(r.iter_lines())
    thread.join()
    assert any(line.startswith(": ping") for line in lines), lines
    assert "event: end" in lines
    doc = json.loads(lines[lines.index("event: end") + 1][len("data: "):])
    assert doc["status"] == "canceled"
