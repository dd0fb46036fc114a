"""GET /models and GET /models/{ref} for imported diffusers models: what a client needs to know of a
model it did not train (backbone, pixel or latent, latent shape, T, null class, classes, size,
channels and defaults), read by the real app from a store the tiny models were imported into."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

pytest.importorskip("diffusers")

from diffusers_folders import CLASS_NAMES, NUM_CLASSES, save_dit_folder, save_unet_folder  # noqa: E402

from contract.settings import Settings  # noqa: E402
from model_store import ModelStore  # noqa: E402
from model_store.diffusers_import import import_folder  # noqa: E402
from service.app import create_app  # noqa: E402


@pytest.fixture(scope="module")
def imported_root(tmp_path_factory) -> Path:
    """`pixel` (a UNet2DModel with names and a null class), `short` (the same with T = 40 and no null
    class) and `dit` (a DiTPipeline: 1,000 classes, its own null class, 4x8x8 latents, 16 px RGB)."""
    root = tmp_path_factory.mktemp("diffusers-models")
    store = ModelStore(root / "store")
    import_folder(store, save_unet_folder(root / "u"), "pixel", class_names=CLASS_NAMES, null_class=NUM_CLASSES)
    import_folder(store, save_unet_folder(root / "s", num_train_timesteps=40), "short")
    import_folder(store, save_dit_folder(root / "dit"), "dit")
    return root / "store"


@pytest.fixture
def client(redis_url, imported_root) -> Iterator[TestClient]:
    settings = Settings(redis_url=redis_url, model_store=str(imported_root), default_model="pixel")
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def defaults(steps: int, guidance_scale: float) -> dict:
    return {"sampler": "ddim", "steps": steps, "guidance": "cfg", "guidance_scale": guidance_scale, "eta": 0.0,
            "num_images": 4}


def test_models_show_what_an_imported_pixel_unet_is(client):
    models = {m["ref"]: m for m in client.get("/models").json()}
    assert set(models) == {"pixel@1", "short@1", "dit@1"}
    pixel = models["pixel@1"]
    assert (pixel["kind"], pixel["backbone"], pixel["space"], pixel["latent_shape"]) == (
        "generator", "diffusers-unet2d", "pixel", None)
    assert (pixel["image_size"], pixel["channels"], pixel["num_train_steps"]) == (32, 3, 1000)
    assert pixel["class_names"] == CLASS_NAMES and pixel["null_class"] == NUM_CLASSES
    # a null class: CFG at DiTPipeline's scale; the card's steps capped by T
    assert pixel["defaults"] == defaults(50, 4.0) and pixel["default"] and pixel["latest"]

    short = models["short@1"]
    assert (short["backbone"], short["space"], short["num_train_steps"]) == ("diffusers-unet2d", "pixel", 40)
    # no --null-class: every embedding is a class, named by its index, and CFG is off
    assert short["null_class"] is None and short["class_names"] == [str(i) for i in range(NUM_CLASSES + 1)]
    assert short["defaults"] == defaults(40, 1.0) and not short["default"]


def test_models_show_what_an_imported_dit_is(client):
    dit = client.get("/models/dit").json()
    assert dit == client.get("/models/dit@1").json()
    assert (dit["ref"], dit["kind"], dit["backbone"], dit["space"]) == ("dit@1", "generator", "diffusers-dit", "latent")
    # 8x8 latents of 4 channels, decoded by the VAE (two blocks: one 2x upsampling) to 16 px RGB
    assert dit["latent_shape"] == [4, 8, 8] and (dit["image_size"], dit["channels"]) == (16, 3)
    assert dit["num_train_steps"] == 1000 and dit["null_class"] == 1000
    assert len(dit["class_names"]) == 1000 and dit["class_names"][207] == "207"
    assert dit["defaults"] == defaults(50, 4.0)
    assert "imagegen import-model" in dit["notes"] and dit["links"] == {}
