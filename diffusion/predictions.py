"""What a network predicts, turned into the one quantity every sampler takes: the noise eps."""

from __future__ import annotations

from torch import Tensor

PREDICTION_TYPES = ("epsilon", "v_prediction")
"""Network outputs this core converts to eps: the noise itself, and v (Salimans & Ho 2022)."""


def eps_from_v(x: Tensor, v: Tensor, ab: Tensor) -> Tensor:
    """Salimans & Ho 2022, sec. 4 and app. D: v = sqrt(ab) eps - sqrt(1 - ab) x_0, so with
    x_t = sqrt(ab) x_0 + sqrt(1 - ab) eps, eps = sqrt(ab) v + sqrt(1 - ab) x_t exactly."""
    return ab.sqrt() * v + (1 - ab).sqrt() * x
