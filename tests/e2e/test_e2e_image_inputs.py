"""End to end (a real Redis, `imagegen serve` and `imagegen worker` processes, real HTTP): img2img and
inpainting give the images the issue promises, a batch mixing them with plain generation gives each
job what it gets alone, and previews stream before the end."""

from __future__ import annotations

import base64
import io
import json
import threading
from datetime import datetime

import httpx
import numpy as np
import pytest
from PIL import Image

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SIZE = 28


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array.astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


INIT_PIXELS = np.clip(np.add.outer(np.arange(SIZE) * 5, np.arange(SIZE) * 4), 0, 255).astype(np.uint8)
INIT = base64.b64encode(png(INIT_PIXELS)).decode()
BLACK = base64.b64encode(png(np.zeros((SIZE, SIZE)))).decode()
WHITE = base64.b64encode(png(np.full((SIZE, SIZE), 255))).decode()
LEFT = base64.b64encode(png(np.concatenate([np.full((SIZE, 14), 255), np.zeros((SIZE, 14))], axis=1))).decode()


def run(url: str, body: dict) -> dict:
    r = httpx.post(f"{url}/generate?wait=60", json=body, timeout=90)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["status"] == "succeeded", doc
    return doc


def pixels(url: str, doc: dict) -> list[np.ndarray]:
    out = []
    for im in doc["images"]:
        r = httpx.get(url + im["url"], timeout=30)
        assert r.status_code == 200
        out.append(np.asarray(Image.open(io.BytesIO(r.content))))
    return out


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


BASE = {"class_label": 3, "num_images": 2, "seed": 1234, "steps": 8}


def test_strength_0_returns_the_input_and_strength_1_is_plain_generation(service):
    copy = run(service.url, {**BASE, "init_image": INIT, "strength": 0.0})
    assert copy["request"]["strength"] == 0.0 and copy["progress"] == {"step": 0, "total": 0}
    assert all(np.array_equal(p, INIT_PIXELS) for p in pixels(service.url, copy))
    plain = pixels(service.url, run(service.url, BASE))
    assert same(pixels(service.url, run(service.url, {**BASE, "init_image": INIT, "strength": 1.0})), plain)
    half = pixels(service.url, run(service.url, {**BASE, "init_image": INIT, "strength": 0.5}))
    assert not same(half, plain) and not all(np.array_equal(p, INIT_PIXELS) for p in half)


def test_inpainting_all_black_keeps_the_input_all_white_is_plain_half_keeps_its_half(service):
    assert all(np.array_equal(p, INIT_PIXELS)
               for p in pixels(service.url, run(service.url, {**BASE, "init_image": INIT, "mask": BLACK})))
    plain = pixels(service.url, run(service.url, BASE))
    assert same(pixels(service.url, run(service.url, {**BASE, "init_image": INIT, "mask": WHITE})), plain)
    for resample in (1, 3):
        half = pixels(service.url, run(service.url, {**BASE, "init_image": INIT, "mask": LEFT,
                                                     "resample_steps": resample}))
        for p in half:
            assert np.array_equal(p[:, 14:], INIT_PIXELS[:, 14:])
            assert not np.array_equal(p[:, :14], INIT_PIXELS[:, :14])


def test_a_batch_mixing_the_three_kinds_gives_each_job_what_it_gets_alone(service):
    bodies = {
        "plain": {**BASE, "steps": 30, "seed": 1},
        "img2img": {**BASE, "steps": 30, "seed": 2, "init_image": INIT, "strength": 0.7, "sampler": "dpmpp_2m"},
        "inpaint": {**BASE, "steps": 30, "seed": 3, "init_image": INIT, "mask": LEFT, "resample_steps": 2,
                    "sampler": "ddpm"},
    }
    together: dict[str, dict] = {}

    def submit(name: str) -> None:
        together[name] = run(service.url, bodies[name])

    threads = [threading.Thread(target=submit, args=(n,)) for n in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert set(together) == set(bodies)
    # they ran at the same time, so in the same batches
    spans = [(datetime.fromisoformat(d["started_at"].replace("Z", "+00:00")),
              datetime.fromisoformat(d["finished_at"].replace("Z", "+00:00"))) for d in together.values()]
    assert max(s for s, _ in spans) < min(e for _, e in spans), spans
    for name, body in bodies.items():
        assert same(pixels(service.url, together[name]), pixels(service.url, run(service.url, body))), name


def test_previews_stream_before_the_end(service):
    r = httpx.post(f"{service.url}/generate", json={**BASE, "steps": 20, "previews": True, "init_image": INIT,
                                                   "mask": LEFT}, timeout=30)
    assert r.status_code == 202, r.text
    events = []
    with httpx.stream("GET", f"{service.url}/jobs/{r.json()['id']}/events", timeout=120) as stream:
        event = None
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((event, json.loads(line.split(":", 1)[1])))
                if event == "end":
                    break
    assert events[-1][0] == "end" and events[-1][1]["status"] == "succeeded"
    previews = [d for e, d in events if e == "progress" and "preview" in d]
    assert previews, [e for e, _ in events]
    assert all(d["step"] < d["total"] for d in previews)
    grid = Image.open(io.BytesIO(base64.b64decode(previews[0]["preview"])))
    # two images side by side in the grid layout of grid.png, the kept half of each showing the input
    assert grid.mode == "L" and grid.width >= 2 * SIZE and SIZE <= grid.height < 2 * SIZE


def test_the_readme_inpainting_request_works_as_written(service):
    import re
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    text = (repo / "README.md").read_text()
    section = text[text.index("\n## Image to image, inpainting and previews\n"):]
    section = section[:section.index("\n## ", 1)]
    (block,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.replace("http://127.0.0.1:8000", service.url)],
                          cwd=repo, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["status"] == "succeeded", doc
    assert doc["request"]["class_label"] == 9 and doc["request"]["mask"].startswith("sha256:")
    assert doc["request"]["previews"] is True and len(doc["images"]) == 4
