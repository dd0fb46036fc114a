"""Helpers shared by the CLI tests: card fields, fp16 weights, a stand-in image folder, the console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from stores import CARD_DEFAULTS, classifier_fields, fp16, generator_fields, one_torch_thread, randomized_classifier  # noqa: F401,E402

REPO = Path(__file__).resolve().parents[2]


def write_image_folder(root: Path, classes: tuple[str, ...] = ("bag", "boot", "shirt"), per_class: int = 4,
                       size: int = 28) -> Path:
    """A tiny labelled image folder (one subfolder per class) standing in for Fashion-MNIST."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 64, (size, size), dtype=np.uint8) + np.uint8(60 * c)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def pixels(path: str | Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img).copy()


def last_json(out: str) -> dict:
    """The JSON summary a command prints as its last stdout line."""
    return json.loads(out.strip().splitlines()[-1])


def console_command() -> list[str]:
    """The installed `imagegen` script beside this Python, else `python -m imagegen`."""
    script = Path(sys.executable).with_name("imagegen")
    return [str(script)] if script.exists() else [sys.executable, "-m", "imagegen"]


def run_console(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    # one thread, as in-process tests use (see conftest.one_torch_thread)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*console_command(), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env=env)
