"""Stored models for tests of every layer: the tiny U-Net and the tiny noise classifier with random
weights, saved as served artifacts are (fp16 safetensors plus a card)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import asdict

import torch

from diffusion.classifier import CLASSIFIER_PRESETS, NoiseClassifier
from diffusion.data import FASHION_MNIST_CLASSES
from diffusion.schedules import ScheduleConfig
from diffusion.unet import UNET_PRESETS, UNet

# few steps by default, so that a test that leaves --steps out stays fast; also shows the card's
# defaults are the ones used
CARD_DEFAULTS = {"sampler": "ddim", "steps": 4, "guidance_scale": 2.0, "guidance": "cfg"}


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: the 2-core machine is shared, and contended OpenMP threads make the tiny
    networks some 40x slower than one thread does."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fp16(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().half() if v.is_floating_point() else v for k, v in model.state_dict().items()}


def generator_fields(**overrides) -> dict:
    fields = {
        "kind": "generator",
        "architecture": {"type": "unet", "config": UNET_PRESETS["tiny"].to_dict()},
        "schedule": asdict(ScheduleConfig("linear")),
        "prediction_type": "epsilon",
        "class_names": list(FASHION_MNIST_CLASSES),
        "image_size": 28,
        "channels": 1,
        "dtype": "float16",
        "defaults": dict(CARD_DEFAULTS),
    }
    return {**fields, **overrides}


def classifier_fields() -> dict:
    return {
        "kind": "guidance-classifier",
        "architecture": {"type": "noise-classifier", "config": CLASSIFIER_PRESETS["tiny"].to_dict()},
        "schedule": asdict(ScheduleConfig("linear")),
        "class_names": list(FASHION_MNIST_CLASSES),
        "image_size": 28,
        "channels": 1,
    }


def randomized_classifier(seed: int = 1, std: float = 0.05) -> NoiseClassifier:
    # random everywhere, like tests/conftest.py's randomized_unet, so the guidance gradient is not zero
    g = torch.Generator().manual_seed(seed)
    model = NoiseClassifier(CLASSIFIER_PRESETS["tiny"]).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def randomized_unet(seed: int = 0, std: float = 0.03) -> UNet:
    """The tiny preset with every parameter random (the real init zeroes output layers, which would
    make every prediction 0 and every check trivial)."""
    g = torch.Generator().manual_seed(seed)
    model = UNet(UNET_PRESETS["tiny"]).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def fashion_mnist_or_skip(split: str = "train"):
    """The real Fashion-MNIST split; skipped when absent, but a failure where the test set-up had to
    install it (REQUIRE_DATASETS, set by scripts/test.sh)."""
    import pytest

    from diffusion.data import load_fashion_mnist

    try:
        return load_fashion_mnist(split)
    except FileNotFoundError as e:
        if os.environ.get("REQUIRE_DATASETS"):
            raise
        pytest.skip(str(e))
