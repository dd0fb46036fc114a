"""Guidance wraps the eps-model: classifier-free guidance (Ho & Salimans 2022) and classifier
guidance (Dhariwal & Nichol 2021). Both work per sample: each row of a batch has its own class,
method and scale."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Conditioning:
    """Per-sample conditioning, each tensor of shape [B]."""

    class_label: torch.Tensor  # long, 0..K-1, or K (the null class) for unconditional rows
    guidance_scale: torch.Tensor  # float, s >= 0
    classifier: torch.Tensor  # bool: guide this row by the classifier's gradient instead of CFG


@dataclass
class GuidedPrediction:
    eps: torch.Tensor  # [B, C, H, W]: the (CFG-combined) noise prediction
    # [B, C, H, W]: s * grad_x log p(y | x_t) for classifier-guided rows (zero elsewhere);
    # None when no row of the batch uses classifier guidance
    grad: torch.Tensor | None


def cfg_combine(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Ho & Salimans 2022, eq. 6 (with s = 1 + w): eps = eps_u + s * (eps_c - eps_u)."""
    return eps_uncond + scale.view(-1, *([1] * (eps_cond.dim() - 1))) * (eps_cond - eps_uncond)


class GuidedDenoiser:
    """The one model contract every sampler uses: (x_t, t, conditioning) -> eps and guidance gradient.

    Classifier-free guidance runs one forward pass over a batch in which each row that needs both
    predictions appears twice (with its class and with the null class). Rows whose scale makes one
    prediction enough are not doubled: s = 1 is the conditional prediction alone, s = 0 (or a null
    class) the unconditional one alone.
    """

    def __init__(self, model: nn.Module, null_class: int, classifier: nn.Module | None = None,
                 clip_x0: bool = False):
        self.model = model
        self.null_class = null_class
        self.classifier = classifier
        # clip the implied x_0 to the data range [-1, 1] (ADM's clip_denoised); the driver applies it
        self.clip_x0 = clip_x0

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> GuidedPrediction:
        y, s = cond.class_label, cond.guidance_scale
        null = torch.full_like(y, self.null_class)
        is_null = (y == self.null_class) | (~cond.classifier & (s == 0))
        # which rows need the conditional and which the unconditional prediction
        need_c = ~is_null
        need_u = is_null | (~cond.classifier & (s != 1))
        rows_c, rows_u = need_c.nonzero().squeeze(1), need_u.nonzero().squeeze(1)
        n_c = rows_c.numel()
        out = self.model(
            torch.cat([x[rows_c], x[rows_u]]),
            torch.cat([t[rows_c], t[rows_u]]),
            torch.cat([y[rows_c], null[rows_u]]),
        ).float()
        eps_c = torch.zeros_like(x, dtype=out.dtype)
        eps_u = torch.zeros_like(x, dtype=out.dtype)
        eps_c[rows_c], eps_u[rows_u] = out[:n_c], out[n_c:]
        both = need_c & need_u
        eps = torch.where(need_c.view(-1, 1, 1, 1), eps_c, eps_u)
        if both.any():
            eps[both] = cfg_combine(eps_u[both], eps_c[both], s[both].float())
        grad = self._classifier_grad(x, t, y, s, cond.classifier) if cond.classifier.any() else None
        return GuidedPrediction(eps=eps, grad=grad)

    def _classifier_grad(self, x, t, y, s, rows_mask) -> torch.Tensor:
        """Dhariwal & Nichol 2021, Alg. 1 and 2: s * grad_x log p_phi(y | x_t, t) per row."""
        if self.classifier is None:
            raise ValueError("classifier guidance asked for, but this model has no guidance classifier")
        rows = rows_mask.nonzero().squeeze(1)
        grad = torch.zeros_like(x, dtype=torch.float32)
        with torch.enable_grad():
            xr = x[rows].detach().float().requires_grad_(True)
            logits = self.classifier(xr, t[rows]).float()
            log_p = torch.log_softmax(logits, dim=-1).gather(1, y[rows].view(-1, 1)).sum()
            (g,) = torch.autograd.grad(log_p, xr)
        grad[rows] = g * s[rows].float().view(-1, 1, 1, 1)
        return grad
