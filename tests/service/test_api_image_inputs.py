"""POST /generate with img2img and inpainting inputs: validation naming the field, normalization of
the inputs (and the notes saying so), what the record carries to the worker, and previews in the
event stream."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
import zlib

import pytest
from api_helpers import assert_problem
from PIL import Image

from contract.jobs import JobStore, record_inputs


def png(size=(28, 28), mode="L", color=128) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def half_mask(size=(28, 28)) -> bytes:
    img = Image.new("L", size, 0)
    img.paste(255, (0, 0, size[0] // 2, size[1]))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def errors_of(r) -> dict[str, str]:
    return {e["field"]: e["message"] for e in assert_problem(r, 422)["errors"]}


def test_img2img_is_accepted_and_the_request_names_the_normalized_input_by_sha256(client, redis):
    init = png(color=200)
    r = client.post("/generate", json={"class_label": 1, "init_image": b64(init), "strength": 0.6, "seed": 3})
    assert r.status_code == 202, r.text
    doc = r.json()
    req = doc["request"]
    assert req["strength"] == 0.6 and req["resample_steps"] == 1 and req["previews"] is False
    assert req["mask"] is None and doc["notes"] == []
    record = JobStore(redis).get(doc["id"])
    inputs = record_inputs(record)
    assert set(inputs) == {"init_image"}
    assert req["init_image"] == "sha256:" + hashlib.sha256(inputs["init_image"]).hexdigest()
    # the worker gets the very pixels that were sent
    assert Image.open(io.BytesIO(inputs["init_image"])).tobytes() == bytes([200]) * 28 * 28


def test_plain_requests_echo_the_image_fields_at_their_defaults(client):
    req = client.post("/generate", json={"class_label": 1}).json()["request"]
    assert {k: req[k] for k in ("strength", "resample_steps", "previews", "init_image", "mask")} == \
        {"strength": 1.0, "resample_steps": 1, "previews": False, "init_image": None, "mask": None}


def test_inpainting_with_a_data_url_and_resampling(client, redis):
    body = {"class_label": "sneaker", "init_image": "data:image/png;base64," + b64(png()),
            "mask": "data:image/png;base64," + b64(half_mask()), "resample_steps": 3, "previews": True}
    r = client.post("/generate", json=body)
    assert r.status_code == 202, r.text
    req = r.json()["request"]
    assert req["resample_steps"] == 3 and req["previews"] is True and req["mask"].startswith("sha256:")
    mask = Image.open(io.BytesIO(record_inputs(JobStore(redis).get(r.json()["id"]))["mask"]))
    assert mask.mode == "L" and mask.getpixel((0, 0)) == 255 and mask.getpixel((27, 0)) == 0


@pytest.mark.parametrize("mode,color,want", [("LA", (200, 0), 0), ("LA", (200, 255), 200), ("LA", (200, 128), 100),
                                             ("RGBA", (255, 255, 255, 0), 0)])
def test_transparency_is_composited_onto_the_black_background(client, redis, mode, color, want):
    init = png(mode=mode, color=color)
    r = client.post("/generate", json={"class_label": 1, "init_image": b64(init), "resize": mode == "RGBA"})
    assert r.status_code == 202, r.text
    image = Image.open(io.BytesIO(record_inputs(JobStore(redis).get(r.json()["id"]))["init_image"]))
    assert image.mode == "L" and set(image.tobytes()) == {want}
    opaque = color[-1] == 255
    assert opaque != any("transparent pixels were composited onto black" in n for n in r.json()["notes"])


def test_resize_converts_and_resizes_and_the_notes_say_so(client, redis):
    init = png(size=(64, 48), mode="RGB", color=(255, 0, 0))
    r = client.post("/generate", json={"class_label": 1, "init_image": b64(init), "mask": b64(half_mask((64, 48))),
                                       "resize": True})
    assert r.status_code == 202, r.text
    notes = r.json()["notes"]
    assert any("converted from RGB (3 channels) to grayscale (1 channel)" in n for n in notes), notes
    assert any("center-cropped from 64x48 to 48x48" in n and "resized from 48x48 to 28x28" in n for n in notes), notes
    assert any(n.startswith("mask was center-cropped") for n in notes), notes
    inputs = record_inputs(JobStore(redis).get(r.json()["id"]))
    image = Image.open(io.BytesIO(inputs["init_image"]))
    assert image.size == (28, 28) and image.mode == "L"
    assert set(Image.open(io.BytesIO(inputs["mask"])).tobytes()) == {0, 255}
    # the notes stay with the job
    assert client.get(f"/jobs/{r.json()['id']}").json()["notes"] == notes


def bomb_header(side: int) -> bytes:
    """A PNG whose header declares side x side pixels, with no pixel data behind it."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))


@pytest.mark.parametrize("fields, field, message", [
    ({"init_image": "not base64!"}, "init_image", "not valid base64"),
    ({"init_image": b64(b"GIF89a....")}, "init_image", "must be a PNG image"),
    ({"init_image": b64(b"\x89PNG\r\n\x1a\nnonsense")}, "init_image", "is not a readable PNG"),
    ({"init_image": b64(png(size=(32, 32)))}, "init_image", "must be a 28x28 grayscale (1 channel) PNG"),
    ({"init_image": b64(png(mode="RGB", color=(1, 2, 3)))}, "init_image", "(got 28x28 RGB (3 channels))"),
    ({"init_image": b64(png(size=(32, 32)))}, "init_image", "send resize true"),
    ({"init_image": "data:image/png,abc"}, "init_image", "data:image/png;base64 URL"),
    ({"init_image": b64(bomb_header(100_000)), "resize": True}, "init_image", "at most 4096x4096"),
    ({"mask": b64(half_mask())}, "mask", "needs init_image"),
    ({"init_image": b64(png()), "mask": b64(half_mask((14, 14)))}, "mask", "must have the size of init_image"),
    ({"init_image": b64(png()), "mask": b64(b"not a png")}, "mask", "must be a PNG image"),
    ({"init_image": b64(png()), "strength": 1.5}, "strength", "between 0 and 1"),
    ({"init_image": b64(png()), "strength": -0.1}, "strength", "between 0 and 1"),
    ({"strength": 0.5}, "strength", "needs init_image"),
    ({"init_image": b64(png()), "resample_steps": 2}, "resample_steps", "needs mask"),
    ({"init_image": b64(png()), "mask": b64(half_mask()), "resample_steps": 11}, "resample_steps",
     "between 1 and 10"),
    ({"init_image": 5}, "init_image", ""),
    ({"previews": "yes"}, "previews", ""),
    ({"resize": 1}, "resize", ""),
], ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None)
def test_bad_image_inputs_are_422_naming_the_field(client, queue, fields, field, message):
    errors = errors_of(client.post("/generate", json={"class_label": 1, **fields}))
    assert field in errors, errors
    assert message in errors[field]
    assert queue.count == 0


def test_previews_pass_through_the_event_stream(client, fake_worker):
    job_id = client.post("/generate", json={"class_label": 1, "previews": True}).json()["id"]
    fake_worker.start(job_id)
    preview = b64(png(color=77))
    fake_worker.jobs.set_progress(job_id, 1, 4)  # recorded before the stream opens: sent first, no preview

    import threading

    def later():
        import time
        time.sleep(0.5)
        fake_worker.jobs.set_progress(job_id, 2, 4, preview=preview)
        fake_worker.jobs.set_progress(job_id, 3, 4)
        fake_worker.succeed(job_id)

    threading.Thread(target=later, daemon=True).start()
    events = []
    with client.stream("GET", f"/jobs/{job_id}/events") as r:
        event = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((event, json.loads(line.split(":", 1)[1])))
                if event == "end":
                    break
    assert [e for e, _ in events] == ["progress", "progress", "progress", "end"]
    assert "preview" not in events[0][1] and "preview" not in events[2][1]
    assert events[1][1] == {"step": 2, "total": 4, "preview": preview}
    assert events[-1][1]["status"] == "succeeded"
