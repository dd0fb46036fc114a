"""The client's img2img, inpainting and preview arguments against the real API (`service.app` on a
real Redis, over real HTTP), as tests/imagegen/test_client_api.py runs it: no worker, a stand-in
plays its part through the job record (`contract.jobs.JobStore`), previews included; `imagegen
submit` runs in this process against the same server."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import threading
import time

import pytest
from PIL import Image
from redis import Redis
from test_client_api import SIZE, api, asgi_client, base_url, png, settings  # noqa: F401

from contract.jobs import JobStatus, JobStore, events_channel, job_key
from contract.results import RedisResultStore
from imagegen.cli import main
from imagegen.client import ApiError, Progress
from service.app import create_app

PREVIEW_STEPS = (2, 4)
"""The steps at which the stand-in worker sends a preview, out of 5."""


def grid_png(n: int, value: int) -> bytes:
    """A stand-in preview: n tiles in a row, as grid.png lays them out."""
    buf = io.BytesIO()
    Image.new("L", (2 + 30 * n, 32), value).save(buf, format="PNG")
    return buf.getvalue()


def run_with_previews(redis_url: str, job_id: str, subscribers: int = 1) -> None:
    """A worker's part for a job with previews: once someone follows its events, five steps, a
    preview at PREVIEW_STEPS (gray level 10 * step), then the PNGs and the end."""
    redis = Redis.from_url(redis_url)
    deadline = time.monotonic() + 20
    # events are published, not stored: wait until the waiter listens
    while dict(redis.pubsub_numsub(events_channel(job_id))).get(events_channel(job_id).encode(), 0) < subscribers:
        assert time.monotonic() < deadline, "nobody subscribed to the job's events"
        time.sleep(0.02)
    jobs, results = JobStore(redis), RedisResultStore(redis)
    request = jobs.get(job_id)["request"]
    n, seed = request["num_images"], request["seed"]
    assert jobs.start(job_id, "stand-in")
    for step in range(1, 6):
        preview = base64.b64encode(grid_png(n, 10 * step)).decode() if step in PREVIEW_STEPS else None
        jobs.set_progress(job_id, step, 5, preview=preview)
    files = {f"{i}.png": png(10 * i) for i in range(n)}
    files["grid.png"] = png(255, (SIZE * n, SIZE))
    results.put_many(job_id, files)
    jobs.finish(job_id, JobStatus.SUCCEEDED, images=[{"index": i, "seed": seed + i} for i in range(n)])


def in_thread(*args) -> threading.Thread:
    thread = threading.Thread(target=run_with_previews, args=args, daemon=True)
    thread.start()
    return thread


def sha256_ref(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def normalized(data: bytes) -> bytes:
    """What the API makes of a PNG that already has the model's size and mode."""
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buf, format="PNG")
    return buf.getvalue()


def test_images_go_as_bytes_paths_or_pil_images_and_are_echoed_by_sha256(api, tmp_path):
    init = png(120)
    path = tmp_path / "init.png"
    path.write_bytes(init)
    mask = Image.new("L", (SIZE, SIZE), 0)
    mask.paste(255, (SIZE // 2, 0, SIZE, SIZE))
    for value in (init, path, str(path)):
        job = api.generate(1, num_images=1, init_image=value, strength=0.5, mask=mask, resample_steps=2)
        r = job.request
        assert r["init_image"] == sha256_ref(normalized(init)), value
        assert r["mask"].startswith("sha256:") and r["mask"] != r["init_image"]
        assert (r["strength"], r["resample_steps"], r["previews"]) == (0.5, 2, False)
        assert job.notes == []
    plain = api.generate(1, num_images=1)
    assert (plain.request["init_image"], plain.request["mask"], plain.request["strength"]) == (None, None, 1.0)


def test_an_image_of_another_size_is_refused_unless_resize(api):
    big = png(50, (2 * SIZE, 2 * SIZE))
    with pytest.raises(ApiError) as e:
        api.generate(1, init_image=big)
    assert e.value.status == 422 and [x["field"] for x in e.value.errors] == ["init_image"]
    assert "resize" in str(e.value)
    job = api.generate(1, num_images=1, init_image=big, resize=True, strength=0.3)
    assert any("resized from 56x56 to 28x28" in note for note in job.notes), job.notes
    assert api.job(job.id).notes == job.notes


@pytest.mark.parametrize("fields, name", [
    ({"mask": png(255)}, "mask"),
    ({"strength": 0.5}, "strength"),
    ({"init_image": png(1), "resample_steps": 3}, "resample_steps"),
    ({"init_image": png(1), "strength": 1.5}, "strength"),
    ({"init_image": b"GIF89a not a png"}, "init_image"),
    ({"init_image": png(1), "mask": png(255, (SIZE, SIZE // 2))}, "mask"),
])
def test_bad_image_fields_raise_api_error_naming_them(api, fields, name):
    with pytest.raises(ApiError) as e:
        api.generate(1, **fields)
    assert e.value.status == 422 and name in {x["field"] for x in e.value.errors}, e.value.errors


def test_wait_hands_on_progress_the_previews_as_images(api, redis_url):
    job = api.generate(1, num_images=2, previews=True)
    assert job.request["previews"] is True
    in_thread(redis_url, job.id)
    seen: list[Progress] = []
    done = job.wait(timeout=20, stream=True, on_progress=seen.append)
    assert done.status == "succeeded"
    assert [p.step for p in seen] == [1, 2, 3, 4, 5] and {p.total for p in seen} == {5}
    previews = {p.step: p.preview for p in seen if p.preview is not None}
    assert sorted(previews) == list(PREVIEW_STEPS)
    for step, image in previews.items():
        assert image.size == (62, 32) and image.getpixel((0, 0)) == 10 * step


def test_polling_reports_progress_without_previews(api, redis_url):
    job = api.generate(1, num_images=1)
    redis = Redis.from_url(redis_url)
    jobs = JobStore(redis)
    assert jobs.start(job.id, "stand-in")
    jobs.set_progress(job.id, 3, 5)
    seen = []

    def finish_later() -> None:
        time.sleep(0.5)
        RedisResultStore(redis).put_many(job.id, {"0.png": png(0), "grid.png": png(0)})
        jobs.finish(job.id, JobStatus.SUCCEEDED, images=[{"index": 0, "seed": job.request["seed"]}])

    threading.Thread(target=finish_later, daemon=True).start()
    assert job.wait(timeout=20, poll=0.05, on_progress=seen.append).status == "succeeded"
    assert seen == [Progress(3, 5)]  # reported once, however often it was polled


def test_async_wait_awaits_a_coroutine_callback(settings, redis_url):
    app = create_app(settings)

    async def go() -> list[Progress]:
        seen = []

        async def on_progress(p: Progress) -> None:
            await asyncio.sleep(0)
            seen.append(p)

        async with asgi_client(app) as client:
            job = await client.generate(2, num_images=1, previews=True, init_image=Image.new("L", (SIZE, SIZE), 9),
                                        strength=0.4)
            assert job.request["strength"] == 0.4 and job.request["init_image"].startswith("sha256:")
            in_thread(redis_url, job.id)
            done = await job.wait(timeout=20, stream=True, on_progress=on_progress)
            assert done.status == "succeeded"
        return seen

    seen = asyncio.run(go())
    assert [p.step for p in seen] == [1, 2, 3, 4, 5]
    assert [p.step for p in seen if p.preview is not None] == list(PREVIEW_STEPS)


def test_submit_with_previews_saves_them_and_the_images(base_url, redis_url, tmp_path, capsys):
    init = tmp_path / "init.png"
    init.write_bytes(png(80))
    out = tmp_path / "out"
    # submit's own job is made inside main(): the stand-in finds it as the one queued job
    redis = Redis.from_url(redis_url)

    def stand_in() -> None:
        deadline = time.monotonic() + 20
        while not (ids := [k.decode()[len(job_key("")):] for k in redis.scan_iter(job_key("*"))]):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        run_with_previews(redis_url, ids[0])

    threading.Thread(target=stand_in, daemon=True).start()
    code = main(["submit", "--url", base_url, "--class-label", "sneaker", "--num-images", "2",
                 "--init-image", str(init), "--strength", "0.6", "--previews", "--out", str(out), "--timeout", "30"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    doc = json.loads(captured.out.strip().splitlines()[-1])
    assert doc["status"] == "succeeded" and doc["request"]["strength"] == 0.6 and doc["request"]["previews"] is True
    assert sorted(p.name for p in out.iterdir()) == ["0.png", "1.png", "grid.png", "preview-2.png", "preview-4.png"]
    assert Image.open(out / "preview-4.png").getpixel((0, 0)) == 40
    assert "step 2/5, preview" in captured.err and f"{out / 'preview-4.png'}" in captured.err


@pytest.mark.parametrize("flags, needles", [
    (["--init-image", "missing.png"], ["--init-image", "missing.png", "cannot read"]),
    (["--previews", "--no-wait"], ["--previews", "--no-wait"]),
    (["--init-image", "init.png", "--mask", "init.png", "--resample-steps", "11"],
     ["resample_steps: must be between 1 and 10"]),
])
def test_bad_submit_input_is_one_line(base_url, tmp_path, capsys, monkeypatch, flags, needles):
    (tmp_path / "init.png").write_bytes(png(1))
    monkeypatch.chdir(tmp_path)
    code = main(["submit", "--url", base_url, "--class-label", "1", *flags])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    line, = captured.err.splitlines()
    assert line.startswith("imagegen submit: error: ")
    for needle in needles:
        assert needle in line, line
