"""An imported diffusers model served over HTTP by a real worker and Redis: PNGs of RGB images, img2img
and inpainting on an RGB pixel UNet2DModel, img2img on a DiT through its VAE, and the 422s its card
implies."""

from __future__ import annotations

import base64
import io
import signal

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from redis import Redis

pytest.importorskip("diffusers")

from diffusers_folders import CLASS_NAMES, NUM_CLASSES, save_dit_folder, save_unet_folder  # noqa: E402
from worker_process import worker_queues  # noqa: E402

from contract.settings import Settings  # noqa: E402
from diffusion.images import png_bytes  # noqa: E402
from model_store import ModelStore  # noqa: E402
from model_store.diffusers_import import import_folder  # noqa: E402
from model_store.loading import load_generator  # noqa: E402
from service.app import create_app  # noqa: E402
from worker.engine import BatchEngine  # noqa: E402
from worker.main import BatchWorker  # noqa: E402


def work(settings: Settings, generators, redis_url: str) -> None:
    worker = BatchWorker(worker_queues(settings, generators), BatchEngine(generators), settings,
                         connection=Redis.from_url(redis_url), name="diffusers-via-api")
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker.work(burst=True)
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ModelStore:
    """`pixel` (RGB 32x32 UNet2DModel with a null class), `no-null` (the same without) and `dit` (16 px)."""
    root = tmp_path_factory.mktemp("diffusers-via-api")
    store = ModelStore(root / "store")
    import_folder(store, save_unet_folder(root / "u"), "pixel", class_names=CLASS_NAMES, null_class=NUM_CLASSES)
    import_folder(store, save_unet_folder(root / "n"), "no-null")
    import_folder(store, save_dit_folder(root / "dit"), "dit")
    return store


@pytest.fixture(scope="module")
def generators(store: ModelStore) -> dict:
    return {ref: load_generator(store, ref) for ref in ("pixel", "dit")}


def test_imported_models_serve_rgb_pngs_through_the_api(redis_url, store, generators):
    settings = Settings(redis_url=redis_url, model_store=str(store.root))
    with TestClient(create_app(settings), raise_server_exceptions=False) as api:
        refused = api.post("/generate", json={"model": "no-null", "class_label": 0, "guidance_scale": 2.0})
        assert refused.status_code == 422 and "guidance_scale" in refused.text
        too_many = api.post("/generate", json={"model": "pixel", "class_label": 0, "steps": 1001})
        assert too_many.status_code == 422 and "steps" in too_many.text
        png = base64.b64encode(png_bytes(torch.zeros(3, 16, 16))).decode()
        masked = api.post("/generate", json={"model": "dit", "class_label": 0, "init_image": png, "mask": png,
                                             "strength": 0.5})
        assert masked.status_code == 422 and "inpainting is not supported" in masked.text, masked.text
        pixel = api.post("/generate", json={"model": "pixel", "class_label": "tabby cat", "num_images": 2,
                                            "steps": 3, "guidance_scale": 2.0, "seed": 1})
        dit = api.post("/generate", json={"model": "dit", "class_label": 207, "num_images": 1, "steps": 3,
                                          "guidance_scale": 4.0, "seed": 2, "previews": True})
        assert pixel.status_code == dit.status_code == 202, (pixel.text, dit.text)
        work(settings, generators, redis_url)
        for job, size, n in ((pixel.json()["id"], 32, 2), (dit.json()["id"], 16, 1)):
            doc = api.get(f"/jobs/{job}").json()
            assert doc["status"] == "succeeded", doc
            for i in range(n):
                png = api.get(f"/jobs/{job}/images/{i}.png")
                assert png.status_code == 200
                with Image.open(io.BytesIO(png.content)) as img:
                    assert (img.mode, img.size) == ("RGB", (size, size))


def rgb_png(pixels: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), mode="RGB" if pixels.ndim == 3 else "L").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def image_of(api: TestClient, job: str, i: int) -> np.ndarray:
    png = api.get(f"/jobs/{job}/images/{i}.png")
    assert png.status_code == 200, png.text
    with Image.open(io.BytesIO(png.content)) as img:
        assert img.mode == "RGB", img.mode
        return np.asarray(img).astype(int)


def test_img2img_and_inpainting_on_an_rgb_pixel_unet_and_img2img_on_a_dit(redis_url, store, generators):
    # a 32x32 RGB picture with structure in every channel; the mask regenerates its right half
    y, x = np.mgrid[0:32, 0:32]
    picture = np.stack([x * 8, y * 8, (x + y) * 4], axis=-1) % 256
    right_half = np.where(x >= 16, 255, 0)
    init, mask = rgb_png(picture), rgb_png(right_half)
    small = rgb_png(picture[::2, ::2])  # the DiT's 16 px
    settings = Settings(redis_url=redis_url, model_store=str(store.root))
    with TestClient(create_app(settings), raise_server_exceptions=False) as api:
        base = {"model": "pixel", "class_label": "red fox", "num_images": 2, "steps": 4, "guidance_scale": 2.0,
                "seed": 7}
        bodies = {
            "copy": {**base, "init_image": init, "strength": 0.0},
            "img2img": {**base, "init_image": init, "strength": 0.6},
            "inpaint": {**base, "init_image": init, "mask": mask, "sampler": "dpmpp_2m"},
            "repaint": {**base, "init_image": init, "mask": mask, "resample_steps": 2, "strength": 0.8},
            "dit": {"model": "dit", "class_label": 207, "num_images": 1, "steps": 3, "seed": 3, "init_image": small,
                    "strength": 0.6},
        }
        jobs = {}
        for name, body in bodies.items():
            r = api.post("/generate", json=body)
            assert r.status_code == 202, (name, r.text)
            assert r.json()["request"]["init_image"].startswith("sha256:"), name
            assert (r.json()["request"]["mask"] is None) == ("mask" not in body), name
            jobs[name] = r.json()["id"]
        work(settings, generators, redis_url)
        docs = {name: api.get(f"/jobs/{job}").json() for name, job in jobs.items()}
        for name, doc in docs.items():
            assert doc["status"] == "succeeded", (name, doc)
            assert doc["notes"] == [], (name, doc["notes"])  # the inputs were the model's size and channels
        out = {name: [image_of(api, jobs[name], i) for i in range(bodies[name]["num_images"])] for name in jobs}

    # RGB at the model's size (image_of checked the mode)
    assert all(img.shape == (32, 32, 3) for name, images in out.items() if name != "dit" for img in images)
    assert out["dit"][0].shape == (16, 16, 3)
    # strength 0 runs no step: each image is the picture, within the rounding of one PNG round trip
    for img in out["copy"]:
        assert np.abs(img - picture).max() <= 1
    # img2img changes the picture; the two images of a job have their own seeds
    assert np.abs(out["img2img"][0] - picture).mean() > 5
    assert not np.array_equal(out["img2img"][0], out["img2img"][1])
    # inpainting keeps the black half of the mask and regenerates the white one
    for name in ("inpaint", "repaint"):
        for img in out[name]:
            assert np.abs(img[:, :16] - picture[:, :16]).max() <= 1, name
            assert np.abs(img[:, 16:] - picture[:, 16:]).mean() > 5, name
    # the DiT regenerated its picture through its VAE: not the input, and not a flat image
    dit = out["dit"][0]
    assert np.abs(dit - picture[::2, ::2]).mean() > 1 and dit.std() > 1
