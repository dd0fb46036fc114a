"""Fixtures of the worker tests: the tiny store's generators loaded in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model_store import ModelStore
from model_store.loading import Generator, load_generator


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # the 2-core machine is shared; contended OpenMP threads make the tiny networks far slower
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def generators(tiny_store_root: Path) -> dict[str, Generator]:
    """`fashion-mnist` (with its guidance classifier) and `plain` (none), as the worker loads them."""
    store = ModelStore(tiny_store_root)
    return {ref: load_generator(store, ref) for ref in ("fashion-mnist", "plain")}


@pytest.fixture(scope="session")
def models_store_root(tmp_path_factory) -> Path:
    """A store of several generators, for the tests of many models per worker: `alpha`, `beta` and
    `gamma`, the tiny U-Net with weights of their own (so that a job run on the wrong model would
    show), and `big`, the full-size Fashion-MNIST U-Net (about 29 MB in float32), random too."""
    from stores import fp16, generator_fields, randomized_unet

    from diffusion.unet import UNET_PRESETS, UNet
    from model_store.weights import save_model

    root = tmp_path_factory.mktemp("models-store")
    store = ModelStore(root)
    for seed, name in enumerate(("alpha", "beta", "gamma"), start=1):
        save_model(store, name, fp16(randomized_unet(seed=seed)), generator_fields())
    big = UNet(UNET_PRESETS["fmnist"]).eval()
    save_model(store, "big", fp16(big), generator_fields(architecture={"type": "unet",
                                                                       "config": UNET_PRESETS["fmnist"].to_dict()}))
    return root


@pytest.fixture(scope="session")
def models_generators(models_store_root: Path) -> dict[str, Generator]:
    """alpha, beta and gamma of `models_store_root`, loaded in-process as the worker loads them."""
    store = ModelStore(models_store_root)
    return {ref: load_generator(store, ref) for ref in ("alpha@1", "beta@1", "gamma@1")}
