"""Guidance wraps the eps-model: classifier-free guidance (Ho & Salimans 2022) and classifier
guidance (Dhariwal & Nichol 2021). Both work per sample: each row of a batch has its own class,
method and scale."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

GUIDANCE_KINDS = ("cfg", "classifier")
"""The guidance methods: classifier-free, and by a noise-aware classifier's gradient."""


@dataclass
class Conditioning:
    """Per-sample conditioning, each tensor of shape [B]."""

    class_label: torch.Tensor  # long, 0..K-1, or K (the null class) for unconditional rows
    guidance_scale: torch.Tensor  # float, s >= 0
    classifier: torch.Tensor  # bool: guide this row by the classifier's gradient instead of CFG


@dataclass
class GuidancePlan:
    """Which rows the forward pass needs, worked out on the host from what each row asked for, so
    that the denoiser never waits on the device to learn it (`nonzero` and `any` would sync)."""

    rows_c: torch.Tensor  # long: rows that need the conditional prediction
    rows_u: torch.Tensor  # long: rows that need the unconditional prediction
    both: torch.Tensor  # long: rows that need both (CFG-combined)
    classifier_rows: torch.Tensor  # long: rows guided by the classifier's gradient

    @staticmethod
    def host_rows(unconditional: np.ndarray, guidance_scale: np.ndarray,
                  classifier: np.ndarray) -> dict[str, np.ndarray]:
        """The plan's rows as host arrays (int64, ascending), from each row's class being null, its
        scale and its method: the one rule of which predictions a row needs. A null class, or CFG at
        s = 0, needs the unconditional prediction alone; CFG at s = 1, and classifier guidance, the
        conditional one alone; CFG at any other s both."""
        unconditional = np.asarray(unconditional, dtype=bool)
        scale = np.asarray(guidance_scale, dtype=np.float64)
        classifier = np.asarray(classifier, dtype=bool)
        is_null = unconditional | (~classifier & (scale == 0))
        need_u = is_null | (~classifier & (scale != 1))
        return {"rows_c": np.flatnonzero(~is_null), "rows_u": np.flatnonzero(need_u),
                "both": np.flatnonzero(need_u & ~is_null), "classifier_rows": np.flatnonzero(classifier)}

    @classmethod
    def from_conditioning(cls, cond: Conditioning, null_class: int) -> GuidancePlan:
        """The plan of `host_rows` for conditioning already on the device (this syncs to read it; the
        driver loop builds its plan on the host instead)."""
        rows = cls.host_rows((cond.class_label == null_class).cpu().numpy(),
                             cond.guidance_scale.double().cpu().numpy(), cond.classifier.cpu().numpy())
        device = cond.class_label.device
        return cls(**{k: torch.as_tensor(v, dtype=torch.long).to(device) for k, v in rows.items()})


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
    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning,
                 plan: GuidancePlan | None = None) -> GuidedPrediction:
        if plan is None:
            plan = GuidancePlan.from_conditioning(cond, self.null_class)
        y, s = cond.class_label, cond.guidance_scale
        rows_c, rows_u = plan.rows_c, plan.rows_u
        n, n_c = x.shape[0], rows_c.numel()
        grad = self._classifier_grad(x, t, y, s, plan.classifier_rows) if plan.classifier_rows.numel() else None
        if n_c == n and rows_u.numel() == n and plan.both.numel() == n:
            # every row CFG-combined (the common batch): the doubled batch as it is, with no gathers or
            # scatters; the same values as the general path below (numel is shape metadata: no sync)
            out = self.model(torch.cat([x, x]), torch.cat([t, t]),
                             torch.cat([y, torch.full_like(y, self.null_class)])).float()
            return GuidedPrediction(eps=cfg_combine(out[n:], out[:n], s.float()), grad=grad)
        out = self.model(
            torch.cat([x[rows_c], x[rows_u]]),
            torch.cat([t[rows_c], t[rows_u]]),
            torch.cat([y[rows_c], torch.full_like(rows_u, self.null_class)]),
        ).float()
        # a row takes its conditional prediction if it has one, else its unconditional one; rows that
        # have both are then CFG-combined
        eps = torch.empty_like(x, dtype=out.dtype)
        eps[rows_u] = out[n_c:]
        eps[rows_c] = out[:n_c]
        if plan.both.numel():
            both = plan.both
            pos_c = torch.searchsorted(rows_c, both)
            pos_u = torch.searchsorted(rows_u, both)
            eps[both] = cfg_combine(out[n_c:][pos_u], out[:n_c][pos_c], s[both].float())
        return GuidedPrediction(eps=eps, grad=grad)

    def _classifier_grad(self, x, t, y, s, rows) -> torch.Tensor:
        """Dhariwal & Nichol 2021, Alg. 1 and 2: s * grad_x log p_phi(y | x_t, t) per row (zero elsewhere)."""
        if self.classifier is None:
            raise ValueError("classifier guidance asked for, but this model has no guidance classifier")
        grad = torch.zeros_like(x, dtype=torch.float32)
        with torch.enable_grad():
            xr = x[rows].detach().float().requires_grad_(True)
            logits = self.classifier(xr, t[rows]).float()
            log_p = torch.log_softmax(logits, dim=-1).gather(1, y[rows].view(-1, 1)).sum()
            (g,) = torch.autograd.grad(log_p, xr)
        grad[rows] = g * s[rows].float().view(-1, 1, 1, 1)
        return grad
