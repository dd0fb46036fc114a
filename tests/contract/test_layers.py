"""The layers of docs/layout.md, as import-linter checks them in the test command: they hold on this
tree, and a change that breaks one fails the check (shown on a copy of the tree with a bad import)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("diffusion", "model_store", "contract", "service", "worker", "imagegen", "evaluation", "bench")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
RUFF = Path(sys.executable).with_name("ruff")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=120)


@pytest.fixture
def tree(tmp_path) -> Path:
    """A copy of the packages and pyproject.toml, to break."""
    for name in PACKAGES:
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    return tmp_path


def test_the_layers_hold_on_this_tree():
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(("module", "line", "broken"), [
    ("service/leak.py", "import torch\n", "service is not allowed to import torch"),
    ("service/leak.py", "from imagegen import cli\n", "service is not allowed to import imagegen"),
    ("contract/leak.py", "from diffusion.sampling import SampleSpec\n", "contract is not allowed to import diffusion"),
    ("worker/leak.py", "from service.app import create_app\n", "Layers point down"),
    ("diffusion/leak.py", "from model_store import ModelStore\n", "Layers point down"),
])
def test_an_import_across_a_layer_fails_the_check(tree, module, line, broken):
    (tree / module).write_text(line)
    done = lint_imports(tree)
    assert done.returncode != 0 and broken in done.stdout, done.stdout + done.stderr


def test_ruff_holds_on_this_tree_and_a_long_line_fails_it(tmp_path):
    done = subprocess.run([str(RUFF), "check", "."], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout
    bad = tmp_path / "bad.py"
    bad.write_text("x = " + " + ".join(["1"] * 60) + "\n")  # 240 characters
    done = subprocess.run([str(RUFF), "check", "--config", str(REPO / "pyproject.toml"), str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "E501" in done.stdout, done.stdout
