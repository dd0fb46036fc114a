"""Noise schedules over T discrete training steps, and the timestep subsequences samplers walk."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

NUM_TRAIN_STEPS = 1000
"""T: the number of training (noising) steps of every schedule unless its config says otherwise."""

CLEAN = -1
"""The timestep index of a clean image (alpha_bar = 1): where every subsequence ends."""


@dataclass(frozen=True)
class ScheduleConfig:
    kind: str = "linear"  # "linear" (DDPM), "scaled_linear" (latent diffusion) or "cosine" (Improved DDPM)
    num_train_steps: int = NUM_TRAIN_STEPS  # T
    beta_start: float = 1e-4  # linear, scaled_linear: beta_1
    beta_end: float = 0.02  # linear, scaled_linear: beta_T
    cosine_s: float = 0.008  # cosine: offset s that keeps beta_1 from being tiny
    max_beta: float = 0.999  # cosine: clip so the last step does not reach alpha_bar = 0


def linear_betas(cfg: ScheduleConfig) -> np.ndarray:
    """Ho et al. 2020, sec. 4: betas linear from 1e-4 to 0.02."""
    return np.linspace(cfg.beta_start, cfg.beta_end, cfg.num_train_steps, dtype=np.float64)


def scaled_linear_betas(cfg: ScheduleConfig) -> np.ndarray:
    """Rombach et al. 2022 (latent diffusion): sqrt(beta) linear from sqrt(beta_1) to sqrt(beta_T)."""
    return np.linspace(cfg.beta_start**0.5, cfg.beta_end**0.5, cfg.num_train_steps, dtype=np.float64) ** 2


def cosine_betas(cfg: ScheduleConfig) -> np.ndarray:
    """Nichol & Dhariwal 2021, eq. 17: alpha_bar(t) = cos^2(((t/T + s)/(1 + s)) * pi/2)."""
    T = cfg.num_train_steps

    def f(t: float) -> float:
        return math.cos((t / T + cfg.cosine_s) / (1 + cfg.cosine_s) * math.pi / 2) ** 2

    betas = [min(1 - f(t + 1) / f(t), cfg.max_beta) for t in range(T)]
    return np.array(betas, dtype=np.float64)


_BETAS = {"linear": linear_betas, "scaled_linear": scaled_linear_betas, "cosine": cosine_betas}


class NoiseSchedule:
    """alpha_bar_t for t = 0..T-1 (t = 0 is the first noising step), and alpha_bar = 1 at CLEAN.

    Tables are float64 and cast to the caller's dtype at lookup, so that sqrt(alpha_bar) near
    t = T-1 (about 6e-3 for the linear schedule) keeps its relative precision.
    """

    def __init__(self, cfg: ScheduleConfig | None = None):
        self.cfg = cfg or ScheduleConfig()
        if self.cfg.kind not in _BETAS:
            raise ValueError(f"unknown schedule kind {self.cfg.kind!r}; known: {sorted(_BETAS)}")
        betas = _BETAS[self.cfg.kind](self.cfg)
        self.num_train_steps = len(betas)
        self.betas = torch.from_numpy(betas)
        alpha_bar = np.cumprod(1.0 - betas)
        # index T holds the clean image, so that t = CLEAN (-1) wraps onto it
        self._alpha_bar = torch.from_numpy(np.append(alpha_bar, 1.0))
        self._tables: dict[torch.device, torch.Tensor] = {}  # _alpha_bar per device, copied once

    def _table(self, device: torch.device) -> torch.Tensor:
        # a lookup must not copy the table to the device each time: that copy would wait on the device
        if device not in self._tables:
            self._tables[device] = self._alpha_bar.to(device)
        return self._tables[device]

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """alpha_bar_t for t = 0..T-1, float64."""
        return self._alpha_bar[:-1]

    def alpha_bar(self, t: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """alpha_bar_t per element of `t` (long, CLEAN allowed), on `t`'s device."""
        return self._table(t.device)[t.long()].to(dtype)

    def sigma(self, t: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """sigma_t = sqrt((1 - alpha_bar) / alpha_bar), the noise level of x_t / sqrt(alpha_bar)."""
        ab = self.alpha_bar(t, torch.float64)
        return ((1 - ab) / ab).sqrt().to(dtype)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Ho et al. 2020, eq. 4: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps."""
        ab = self.alpha_bar(t, x0.dtype).view(-1, *([1] * (x0.dim() - 1)))
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps


def timestep_subsequence(steps: int, num_train_steps: int = NUM_TRAIN_STEPS) -> list[int]:
    """The `steps` timesteps a sampler visits, then CLEAN: trailing spacing (Lin et al. 2024, tab. 2).

    Starts at the last trained step T-1, so sampling starts from pure noise, and the last step
    lands on alpha_bar = 1, so no residual noise is left. The step after t_i is always the next
    element of this list (never t_i - T // steps, which is off by one when steps does not divide T).
    """
    if not 1 <= steps <= num_train_steps:
        raise ValueError(f"steps must be in 1..{num_train_steps}, got {steps}")
    ratio = num_train_steps / steps
    ts = np.round(np.arange(num_train_steps, 0, -ratio)).astype(np.int64) - 1
    return [int(t) for t in ts[:steps]] + [CLEAN]
