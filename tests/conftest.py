import os
import sys
from pathlib import Path

import pytest
import torch

# helpers shared by tests (analytic models) live beside them
sys.path.insert(0, str(Path(__file__).parent / "diffusion"))
sys.path.insert(0, str(Path(__file__).parent))

from stores import randomized_unet  # noqa: E402

from diffusion.schedules import NoiseSchedule, ScheduleConfig  # noqa: E402
from diffusion.unet import UNet  # noqa: E402
from model_store.weights import save_model

REPO = Path(__file__).resolve().parents[1]

# The suite's networks are tiny: one intra-op thread is as fast as two, and on the shared 2-core
# machine (a server or a training run beside the tests) two contended OpenMP threads are many times
# slower. Subprocesses the tests start get OMP_NUM_THREADS=1 for the same reason.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session", autouse=True)
def _onnx_cache(tmp_path_factory) -> None:
    """The workers the tests start (and the engines built from their settings) export the tests' random
    models to ONNX: into a folder of this run, not the user's ~/.cache."""
    os.environ["WORKER_CACHE_DIR"] = str(tmp_path_factory.mktemp("onnx-cache"))


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
    from stores import classifier_fields, fp16, generator_fields, randomized_classifier

    from model_store import ModelStore

    root = tmp_path_factory.mktemp("store")
    store = ModelStore(root)
    clf = save_model(store, "fmnist-classifier", fp16(randomized_classifier()), classifier_fields())
    weights = fp16(tiny_unet)
    save_model(store, "fashion-mnist", weights, generator_fields(links={"guidance_classifier": clf.ref}))
    save_model(store, "plain", weights, generator_fields(defaults={}))
    return root
