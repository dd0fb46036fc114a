"""An imported diffusers model served over HTTP by a real worker and Redis: PNGs of RGB images, and the
422s its card implies."""

from __future__ import annotations

import base64
import io
import signal

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from redis import Redis

pytest.importorskip("diffusers")

from diffusers_folders import CLASS_NAMES, NUM_CLASSES, save_dit_folder, save_unet_folder  # noqa: E402

from contract.settings import Settings  # noqa: E402
from diffusion.images import png_bytes  # noqa: E402
from model_store import ModelStore  # noqa: E402
from model_store.diffusers_import import import_folder  # noqa: E402
from model_store.loading import load_generator  # noqa: E402
from service.app import create_app  # noqa: E402
from worker.engine import BatchEngine  # noqa: E402
from worker.main import BatchWorker  # noqa: E402


def work(settings: Settings, generators, redis_url: str) -> None:
    worker = BatchWorker([settings.queue_name], BatchEngine(generators), settings,
                         connection=Redis.from_url(redis_url), name="diffusers-via-api")
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker.work(burst=True)
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def test_imported_models_serve_rgb_pngs_through_the_api(redis_url, tmp_path):
    store = ModelStore(tmp_path / "store")
    import_folder(store, save_unet_folder(tmp_path / "u"), "pixel", class_names=CLASS_NAMES, null_class=NUM_CLASSES)
    import_folder(store, save_unet_folder(tmp_path / "n"), "no-null")
    import_folder(store, save_dit_folder(tmp_path / "dit"), "dit")
    generators = {ref: load_generator(store, ref) for ref in ("pixel", "dit")}
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
