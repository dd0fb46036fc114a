"""The client's pure parts: problem documents to ApiError, Retry-After, the SSE decoder, the request
body (omitted arguments are not sent), and the Job dataclass. No server needed."""

from __future__ import annotations

import base64
import io
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from PIL import Image

from imagegen.client import ApiError, Job, JobError
from imagegen.client.errors import error_from, retry_after, retry_delay
from imagegen.client.jobs import terminal_event
from imagegen.client.wire import SSEDecoder, generate_body, generate_call

PROBLEM = "application/problem+json"


def problem(status: int, body: dict, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers={"content-type": PROBLEM, **headers})


def test_problem_document_becomes_api_error():
    r = problem(422, {"type": "tag:imagegen,2026:problem/invalid-request", "title": "Invalid request",
                      "status": 422, "detail": "invalid request: steps: must be between 1 and 1000 (got 0)",
                      "errors": [{"field": "steps", "message": "must be between 1 and 1000 (got 0)"}]})
    e = error_from(r)
    assert (e.status, e.title, e.type) == (422, "Invalid request", "tag:imagegen,2026:problem/invalid-request")
    assert e.errors == [{"field": "steps", "message": "must be between 1 and 1000 (got 0)"}]
    # the detail already names the field: it is not said twice
    assert str(e) == "invalid request: steps: must be between 1 and 1000 (got 0)"


def test_field_errors_the_detail_does_not_say_are_appended():
    r = problem(422, {"title": "Invalid request", "status": 422, "detail": "2 invalid fields",
                      "errors": [{"field": "eta", "message": "only for ddim"},
                                 {"loc": ["body", "class_label"], "msg": "unknown class 'hoodie'"},
                                 {"pointer": "#/seed", "detail": "must be >= 0"}]})
    assert str(error_from(r)) == ("2 invalid fields; eta: only for ddim; class_label: unknown class 'hoodie'; "
                                  "seed: must be >= 0")


def test_fastapi_default_validation_body_is_read_too():
    r = httpx.Response(422, json={"detail": [{"loc": ["body", "steps"], "msg": "Input should be >= 1"}]})
    e = error_from(r)
    assert e.status == 422 and "steps: Input should be >= 1" in str(e)


def test_a_body_that_is_not_json_still_gives_a_one_line_error():
    e = error_from(httpx.Response(502, text="<html>\n<h1>Bad gateway</h1>\n</html>"))
    assert e.status == 502 and e.title == "Bad Gateway"
    assert "\n" not in str(e) and "Bad gateway" in str(e)


def test_retry_after_in_seconds_and_as_a_date():
    assert retry_after(httpx.Response(503, headers={"Retry-After": "5"})) == 5.0
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= retry_after(httpx.Response(503, headers={"Retry-After": when})) <= 31
    assert retry_after(httpx.Response(503)) is None
    assert retry_after(httpx.Response(503, headers={"Retry-After": "soon"})) is None


@pytest.mark.parametrize("status, header, attempt, retries, expected", [
    (503, "2", 0, 0, None),       # the default: raise at once
    (503, "2", 0, 1, 2.0),
    (503, "2", 1, 1, None),       # retried once already
    (429, "1", 0, 3, 1.0),
    (503, None, 0, 3, None),      # no Retry-After: the server did not say a retry helps
    (500, "2", 0, 3, None),
    (422, "2", 0, 3, None),
])
def test_only_503_and_429_with_retry_after_are_retried(status, header, attempt, retries, expected):
    headers = {"Retry-After": header} if header else {}
    e = error_from(problem(status, {"title": "x", "status": status, "detail": "x"}, **headers))
    assert retry_delay(e, attempt, retries) == expected


def test_omitted_arguments_are_not_sent():
    body = generate_body("sneaker", {"model": None, "steps": 10, "eta": None, "seed": 0, "guidance_scale": 0.0})
    assert body == {"class_label": "sneaker", "steps": 10, "seed": 0, "guidance_scale": 0.0}


def test_unconditional_is_sent_as_null():
    assert generate_body(None, {"steps": None}) == {"class_label": None}


def test_images_are_sent_as_base64_png():
    image = Image.new("L", (28, 28), 200)
    body = generate_body(1, {"init_image": image, "mask": b"\x89PNG raw", "strength": 0.5})
    decoded = Image.open(io.BytesIO(base64.b64decode(body["init_image"])))
    assert decoded.size == (28, 28) and decoded.getpixel((3, 3)) == 200
    assert base64.b64decode(body["mask"]) == b"\x89PNG raw"


def test_wait_goes_in_the_query_and_lengthens_the_timeout():
    call = generate_call(30, "key-1", 10.0)
    assert call == {"params": {"wait": 30}, "headers": {"Idempotency-Key": "key-1"}, "timeout": 40.0}
    assert generate_call(None, None, 10.0) == {"params": {}, "headers": {}, "timeout": 10.0}


def feed(lines: list[str]) -> list[dict]:
    decoder = SSEDecoder()
    return [e for e in map(decoder.feed, lines) if e is not None]


def test_sse_decoder_reads_named_events_comments_and_multiline_data():
    events = feed([
        ": ping", "",
        "event: progress", 'data: {"step": 1, "total": 4}', "",
        "id: 7", "data: two", "data:lines", "",
        "event: end", 'data: {"id": "j", "status": "succeeded"}', "",
        "event: ignored-without-data", "",
    ])
    assert events == [
        {"event": "progress", "data": {"step": 1, "total": 4}, "id": None},
        {"event": "message", "data": "two\nlines", "id": "7"},
        {"event": "end", "data": {"id": "j", "status": "succeeded"}, "id": "7"},
    ]


def test_terminal_events_with_and_without_the_document():
    assert terminal_event({"event": "progress", "data": {"step": 4, "total": 4}}) == (False, None)
    assert terminal_event({"event": "end", "data": {"status": "canceled"}}) == (True, None)
    doc = {"id": "j", "status": "failed", "error": {"code": "x", "message": "y"}}
    assert terminal_event({"event": "end", "data": doc}) == (True, doc)


def test_job_keeps_unknown_fields_in_its_document():
    doc = {"id": "j", "status": "queued", "queue_position": 2, "new_field": 1}
    job = Job.parse(doc, client=None)
    assert (job.id, job.status, job.queue_position, job.done) == ("j", "queued", 2, False)
    assert job.document == doc


def test_images_of_a_job_that_did_not_succeed_raise_job_error():
    job = Job.parse({"id": "j", "status": "failed", "error": {"code": "oom", "message": "out of memory"}},
                    client=None)
    with pytest.raises(JobError, match="job j is failed: out of memory"):
        job.image_urls()
    done = Job.parse({"id": "j", "status": "succeeded", "grid_url": "/jobs/j/grid.png",
                      "images": [{"index": 1, "url": "/b"}, {"index": 0, "url": "/a"}]}, client=None)
    assert done.image_urls() == ["/a", "/b"] and done.grid_path() == "/jobs/j/grid.png"


def test_a_job_without_a_client_says_where_to_get_one():
    with pytest.raises(RuntimeError, match="no client"):
        Job(id="j", status="queued").wait()


def test_api_error_is_an_exception_with_the_message_as_str():
    e = ApiError(404, "Job not found", "unknown job 'x'")
    assert str(e) == "unknown job 'x'" and e.args == ("unknown job 'x'",) and e.retry_after is None


def test_images_is_the_documents_list_and_downloads_when_called():
    entries = [{"index": 0, "seed": 1, "url": "/jobs/j/images/0.png"}]
    job = Job.parse({"id": "j", "status": "succeeded", "images": entries}, client=None)
    assert job.images == entries and job.images[0]["seed"] == 1
    assert asdict(job)["images"] == entries  # still a plain dataclass to the standard library
    with pytest.raises(RuntimeError, match="no client"):
        job.images()


def png_bytes(value: int = 200, size: tuple[int, int] = (28, 28)) -> bytes:
    buf = io.BytesIO()
    Image.new("L", size, value).save(buf, format="PNG")
    return buf.getvalue()


def test_an_image_may_be_a_path_a_str_path_or_base64_text(tmp_path):
    path = tmp_path / "init.png"
    path.write_bytes(png_bytes(90))
    encoded = base64.b64encode(png_bytes(90)).decode()
    for value in (path, str(path), encoded, f"data:image/png;base64,{encoded}"):
        body = generate_body(1, {"init_image": value})
        assert body["init_image"].endswith(encoded), value
    with pytest.raises(FileNotFoundError):
        generate_body(1, {"mask": str(tmp_path / "missing.png")})


def test_progress_events_decode_their_preview():
    from imagegen.client.wire import Progress, progress_event

    grid = png_bytes(77, (62, 32))
    event = {"event": "progress", "data": {"step": 5, "total": 50, "preview": base64.b64encode(grid).decode()}}
    p = progress_event(event)
    assert (p.step, p.total) == (5, 50) and p.preview.size == (62, 32) and p.preview.getpixel((0, 0)) == 77
    assert progress_event({"event": "progress", "data": {"step": 6, "total": 50}}) == Progress(6, 50)
    assert progress_event({"event": "end", "data": {"id": "j", "status": "succeeded"}}) is None


def test_a_progress_report_skips_a_polled_step_already_seen():
    from imagegen.client.wire import Progress, ProgressReport

    seen = []
    report = ProgressReport(seen.append)
    preview = Image.new("L", (2, 2))
    for p in (Progress(1, 4), Progress(1, 4), Progress(2, 4, preview), Progress(2, 4), Progress(3, 4), None):
        report(p)
    assert [(p.step, p.preview is not None) for p in seen] == [(1, False), (2, True), (3, False)]
    ProgressReport(None)(Progress(1, 4))  # no callback: nothing to call


def test_job_documents_carry_their_notes():
    job = Job.parse({"id": "j", "status": "queued", "notes": ["init_image was resized from 56x56 to 28x28"]},
                    client=None)
    assert job.notes == ["init_image was resized from 56x56 to 28x28"]
    assert Job.parse({"id": "j", "status": "queued"}, client=None).notes == []
