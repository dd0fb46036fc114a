import sys
from pathlib import Path

import pytest
import torch

# helpers shared by tests (analytic models) live beside them
sys.path.insert(0, str(Path(__file__).parent / "diffusion"))
sys.path.insert(0, str(Path(__file__).parent))

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


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real, private Redis on a free loopback port for the whole session (never the machine's
    shared one, so that parallel runs and tests that stop Redis do not disturb each other)."""
    from service.redis_local import LocalRedis

    with LocalRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server):
    """The session Redis, emptied before each test."""
    from redis import Redis

    Redis.from_url(redis_server.url).flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def tiny_store_root(tmp_path_factory, tiny_unet) -> Path:
    """A model store of random tiny models: `fashion-mnist` (linked to `fmnist-classifier`), that
    classifier, and `plain`, a generator with no guidance classifier and no defaults in its card."""
    from model_store import ModelStore
    from stores import classifier_fields, fp16, generator_fields, randomized_classifier

    root = tmp_path_factory.mktemp("store")
    store = ModelStore(root)
    clf = store.save("fmnist-classifier", fp16(randomized_classifier()), classifier_fields())
    weights = fp16(tiny_unet)
    store.save("fashion-mnist", weights, generator_fields(links={"guidance_classifier": clf.ref}))
    store.save("plain", weights, generator_fields(defaults={}))
    return root
