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
