"""`imagegen worker`: one generation worker in this process, exactly `python -m worker`.

The flags and the run are the worker package's own (`worker/__main__.py`), so that the two entry
points cannot drift apart; this module adds the imagegen error contract in front of them: a bad
setting in the environment or `--device cuda` without CUDA is one `imagegen worker: error:` line
(exit 2) before torch loads the models.
"""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType

from imagegen.device import check_device
from imagegen.serve_cmd import load_settings


def _worker_main() -> ModuleType:
    # imported on use: building `imagegen --help` must not import the worker's dependencies
    return importlib.import_module("worker.__main__")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `imagegen worker`: `python -m worker`'s (--device, --models, --burst...)."""
    _worker_main().add_arguments(p)


def run(args: argparse.Namespace) -> int:
    """Load the models and work the queue until stopped (or, with --burst, until it is empty)."""
    load_settings()
    if args.device == "cuda":
        check_device("cuda")
    return int(_worker_main().run(args))
