"""The service imports no torch (habit 1 of the style guide): the API must start fast and small."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_app_imports_no_torch():
    code = ("import sys; from service.app import create_app; create_app(); "
            "import service.__main__, contract.webhooks; "
            "leaked = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')); "
            "assert not leaked, leaked")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_no_module_of_the_service_mentions_torch():
    for path in (REPO / "service").rglob("*.py"):
        text = path.read_text()
        assert "import torch" not in text and "from torch" not in text, path
