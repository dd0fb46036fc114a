"""A model store for the CLI tests: the tiny U-Net and the tiny noise classifier with random weights,
saved as served artifacts are (fp16 safetensors plus a card); the store itself is tests/conftest.py's."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import one_torch_thread


@pytest.fixture(autouse=True)
def _one_torch_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def store_root(tiny_store_root) -> Path:
    return tiny_store_root
