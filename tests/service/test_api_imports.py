"""The service imports no torch and no diffusers (habit 1 of the style guide, and the API image has
neither): the API must start fast and small."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_app_imports_no_torch_and_no_diffusers():
    code = ("import sys; from service.app import create_app; create_app(); "
            "import service.__main__, contract.webhooks; "
            "leaked = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'diffusers')); "
            "assert not leaked, leaked")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_no_module_of_the_service_mentions_torch_or_diffusers():
    for path in (REPO / "service").rglob("*.py"):
        text = path.read_text()
        for package in ("torch", "diffusers"):
            assert f"import {package}" not in text and f"from {package}" not in text, (path, package)
