"""Per-image seeded noise: image i of a request with seed s draws from its own generator seeded s + i,
so an image depends on its seed alone, never on what else shares its batch (like EDM's
StackedRandomGenerator)."""

from __future__ import annotations

import torch

MAX_SEED = 2**63 - 1
"""Largest seed: seeds are 0..2**63-1 (torch generators take 64-bit seeds; the API's range too)."""


class ImageNoise:
    """A stream of Gaussian noise for one image. Draws happen on the CPU, so a seed gives the same
    image on every device, and are then moved to the sampling device."""

    def __init__(self, seed: int):
        if not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed must be in 0..{MAX_SEED}, got {seed}")
        self.seed = seed
        self.generator = torch.Generator(device="cpu").manual_seed(seed)

    def randn(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator, dtype=torch.float32)


def stacked_randn(streams: list[ImageNoise], shape: tuple[int, ...], device: torch.device | str) -> torch.Tensor:
    """One draw of `shape` from each stream, stacked along a new first dimension."""
    if not streams:
        return torch.empty((0, *shape), device=device)
    draws = torch.stack([s.randn(shape) for s in streams])
    if torch.device(device).type == "cuda":
        # pinned and asynchronous: a pageable copy would wait for the device's queued work
        return draws.pin_memory().to(device, non_blocking=True)
    return draws.to(device)
