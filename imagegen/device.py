"""Turning `--device cpu|cuda|auto` into a device name, refusing cuda where there is none."""

from __future__ import annotations

from contract.errors import UsageError

DEVICES = ("cpu", "cuda", "auto")
"""The values `--device` accepts."""


def check_device(name: str, flag: str = "--device") -> str:
    """"cpu" or "cuda" for `name`; "auto" picks cuda when torch sees a GPU."""
    if name == "cpu":
        # no torch import: a CPU run's input errors stay fast to report
        return "cpu"
    import torch

    available = torch.cuda.is_available()
    if name == "cuda" and not available:
        raise UsageError(
            f"{flag} cuda: CUDA is not available here (torch {torch.__version__}, "
            f"CUDA build {torch.version.cuda or 'none'}); use {flag} cpu or {flag} auto"
        )
    if name not in DEVICES:
        raise UsageError(f"{flag} must be one of {', '.join(DEVICES)} (got {name!r})")
    return "cuda" if available else "cpu"
