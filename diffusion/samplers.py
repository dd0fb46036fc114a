"""One step of each sampler, as pure per-sample tensor math.

Every function works in the VP parametrization x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps
and takes per-sample coefficients shaped [B, 1, 1, 1], so that each row of a batch can sit at its
own place in its own schedule. `ab_s` is alpha_bar at the current timestep s, `ab_t` at the next
(less noisy) one t; ab_t = 1 on the last step, which lands on a clean image. Noise `z` comes from
the caller (per-image generators); no function here draws random numbers.
"""

from __future__ import annotations

import torch
from torch import Tensor


def predict_x0(x: Tensor, eps: Tensor, ab_s: Tensor) -> Tensor:
    """Ho et al. 2020, eq. 15: x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)."""
    return (x - (1 - ab_s).sqrt() * eps) / ab_s.sqrt()


def ddpm_step(x: Tensor, eps: Tensor, ab_s: Tensor, ab_t: Tensor, z: Tensor, grad: Tensor | None = None) -> Tensor:
    """DDPM ancestral step (Ho et al. 2020, eqs. 6-7), respaced as in Nichol & Dhariwal 2021 (sec. 4):
    beta = 1 - ab_s / ab_t; x_t ~ N(mu~(x_s, x_0), beta~) with the posterior variance
    beta~ = beta (1 - ab_t) / (1 - ab_s). Classifier guidance shifts the mean by beta~ * s * grad
    (Dhariwal & Nichol 2021, Alg. 1)."""
    x0 = predict_x0(x, eps, ab_s)
    alpha = ab_s / ab_t
    beta = 1 - alpha
    mean = (ab_t.sqrt() * beta / (1 - ab_s)) * x0 + (alpha.sqrt() * (1 - ab_t) / (1 - ab_s)) * x
    var = beta * (1 - ab_t) / (1 - ab_s)
    if grad is not None:
        mean = mean + var * grad
    return mean + var.sqrt() * z


def ddim_step(x: Tensor, eps: Tensor, ab_s: Tensor, ab_t: Tensor, eta: Tensor, z: Tensor) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12):
    x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t - sigma^2) eps + sigma z,
    sigma = eta sqrt((1 - ab_t) / (1 - ab_s)) sqrt(1 - ab_s / ab_t) (eq. 16); eta 0 is deterministic."""
    x0 = predict_x0(x, eps, ab_s)
    sigma = eta * ((1 - ab_t) / (1 - ab_s) * (1 - ab_s / ab_t)).clamp_min(0).sqrt()
    return ab_t.sqrt() * x0 + (1 - ab_t - sigma**2).clamp_min(0).sqrt() * eps + sigma * z


def _to_sigma(ab: Tensor) -> Tensor:
    """sigma = sqrt((1 - alpha_bar) / alpha_bar): the noise level of the ODE state x / sqrt(alpha_bar)."""
    return ((1 - ab) / ab).sqrt()


def euler_step(x: Tensor, eps: Tensor, ab_s: Tensor, ab_t: Tensor) -> Tensor:
    """Euler on the probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma = eps in sigma space
    (Karras et al. 2022, eq. 4 with s(t) = 1, sigma(t) = t), on x / sqrt(alpha_bar). With the same
    sigmas this is exactly DDIM with eta 0 (Karras et al. 2022, sec. 3; Song et al. 2021, eq. 14)."""
    x_sig = x / ab_s.sqrt()
    x_sig = x_sig + (_to_sigma(ab_t) - _to_sigma(ab_s)) * eps
    return x_sig * ab_t.sqrt()


def heun_predictor(x: Tensor, eps: Tensor, ab_s: Tensor, ab_t: Tensor) -> tuple[Tensor, Tensor]:
    """Karras et al. 2022, Alg. 1, lines 5-6: an Euler step to sigma_t; returns (x at t, d_s = eps)."""
    return euler_step(x, eps, ab_s, ab_t), eps


def heun_corrector(x_s: Tensor, d_s: Tensor, eps_t: Tensor, ab_s: Tensor, ab_t: Tensor) -> Tensor:
    """Karras et al. 2022, Alg. 1, lines 7-8: the trapezoid x_t = x_s + (sigma_t - sigma_s)(d_s + d_t)/2,
    with d_t = eps predicted at the Euler point. The last step (sigma_t = 0) stays an Euler step."""
    x_sig = x_s / ab_s.sqrt() + (_to_sigma(ab_t) - _to_sigma(ab_s)) * (d_s + eps_t) / 2
    return x_sig * ab_t.sqrt()


def dpmpp_2m_step(
    x: Tensor, eps: Tensor, ab_s: Tensor, ab_t: Tensor, ab_prev: Tensor, x0_prev: Tensor, first_order: Tensor
) -> tuple[Tensor, Tensor]:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2), data prediction, in log-SNR lambda = log(alpha / sigma):
    x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) D, h = lambda_t - lambda_s,
    D = x0_s + (x0_s - x0_prev) / (2 r), r = h_prev / h; D = x0_s (first order) on the first step,
    where no history exists, and on the last step (sigma_t = 0), where the update is x_t = x0_s.
    `ab_prev` is alpha_bar at the previous step's timestep; `first_order` is a [B, 1, 1, 1] bool.
    Returns (x_t, x0_s), the latter kept as the next step's history."""
    x0 = predict_x0(x, eps, ab_s)
    last = ab_t >= 1
    ab_t_safe = torch.where(last, ab_s, ab_t)  # keeps lambda_t finite on the last step; discarded there

    def lam(ab: Tensor) -> Tensor:
        return 0.5 * (torch.log(ab) - torch.log1p(-ab))

    h = lam(ab_t_safe) - lam(ab_s)
    r = (lam(ab_s) - lam(ab_prev)) / h
    d = torch.where(first_order, x0, x0 + (x0 - x0_prev) / (2 * r))
    x_t = ((1 - ab_t_safe) / (1 - ab_s)).sqrt() * x - ab_t_safe.sqrt() * torch.expm1(-h) * d
    return torch.where(last, x0, x_t), x0
