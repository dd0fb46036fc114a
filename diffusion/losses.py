"""Training objectives: the simple eps-MSE with label dropout, and the noise-aware classifier's loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffusion.eval_classifier import augment
from diffusion.schedules import NoiseSchedule


def drop_labels(y: torch.Tensor, null_class: int, p_uncond: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Ho & Salimans 2022, Alg. 1: replace each label by the null class with probability p_uncond,
    so that one network learns both eps(x_t, y) and eps(x_t)."""
    drop = torch.rand(y.shape, device=y.device, generator=generator) < p_uncond
    return torch.where(drop, torch.full_like(y, null_class), y)


def eps_loss(model: nn.Module, schedule: NoiseSchedule, x0: torch.Tensor, y: torch.Tensor, null_class: int,
             p_uncond: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Ho et al. 2020, eq. 14 (L_simple):
    E_{t, x0, eps} || eps - eps_theta(sqrt(ab_t) x0 + sqrt(1 - ab_t) eps, t) ||^2."""
    b = x0.shape[0]
    t = torch.randint(0, schedule.num_train_steps, (b,), device=x0.device, generator=generator)
    eps = torch.randn(x0.shape, device=x0.device, generator=generator)
    x_t = schedule.q_sample(x0, t, eps)
    pred = model(x_t, t, drop_labels(y, null_class, p_uncond, generator))
    return F.mse_loss(pred.float(), eps)


def noisy_classifier_loss(classifier: nn.Module, schedule: NoiseSchedule, x0: torch.Tensor, y: torch.Tensor,
                          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Dhariwal & Nichol 2021, sec. 4: cross-entropy of p_phi(y | x_t, t) on images noised to a uniform t.
    Returns (loss, accuracy)."""
    b = x0.shape[0]
    t = torch.randint(0, schedule.num_train_steps, (b,), device=x0.device, generator=generator)
    eps = torch.randn(x0.shape, device=x0.device, generator=generator)
    logits = classifier(schedule.q_sample(x0, t, eps), t).float()
    return F.cross_entropy(logits, y), (logits.argmax(-1) == y).float().mean()


def clean_classifier_loss(classifier: nn.Module, x0: torch.Tensor, y: torch.Tensor,
                          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of the evaluation classifier on clean, augmented images. Returns (loss, accuracy)."""
    logits = classifier(augment(x0, generator)).float()
    return F.cross_entropy(logits, y), (logits.argmax(-1) == y).float().mean()
