import sys
from pathlib import Path

import pytest
import torch

# helpers shared by tests (analytic models) live beside them
sys.path.insert(0, str(Path(__file__).parent / "diffusion"))

from diffusion.schedules import NoiseSchedule, ScheduleConfig  # noqa: E402
from diffusion.unet import UNET_PRESETS, UNet  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def randomized_unet(seed: int = 0, std: float = 0.03) -> UNet:
    """The tiny preset with every parameter random (the real init zeroes output layers, which would
    make every prediction 0 and every check trivial)."""
    g = torch.Generator().manual_seed(seed)
    model = UNet(UNET_PRESETS["tiny"]).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


@pytest.fixture(scope="session")
def linear_schedule() -> NoiseSchedule:
    return NoiseSchedule(ScheduleConfig("linear"))


@pytest.fixture(scope="session")
def tiny_unet() -> UNet:
    return randomized_unet()
