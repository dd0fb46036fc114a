"""An exact eps-model for Gaussian data, so that samplers can be checked against closed forms."""

from __future__ import annotations

import torch
from torch import nn

from diffusion.schedules import NoiseSchedule


class GaussianEps(nn.Module):
    """E[eps | x_t] for data x_0 ~ N(mu, std^2) per pixel, ignoring the class:
    x_t ~ N(sqrt(ab) mu, ab std^2 + 1 - ab), so eps = sqrt(1 - ab) (x_t - sqrt(ab) mu) / (ab std^2 + 1 - ab)."""

    def __init__(self, schedule: NoiseSchedule, mu: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.schedule, self.mu, self.std = schedule, mu, std

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ab = self.schedule.alpha_bar(t, torch.float64).view(-1, 1, 1, 1)
        x = x.double()
        eps = (1 - ab).sqrt() * (x - ab.sqrt() * self.mu) / (ab * self.std**2 + 1 - ab)
        return eps.float()

    def ode_solution(self, x_T: torch.Tensor, t_T: int) -> torch.Tensor:
        """The exact probability-flow ODE endpoint: the flow keeps each pixel's standardized value."""
        ab = self.schedule.alpha_bar(torch.tensor([t_T]), torch.float64).item()
        z = (x_T.double() - ab**0.5 * self.mu) / (ab * self.std**2 + 1 - ab) ** 0.5
        return (self.mu + self.std * z).float()


class PerturbedGaussianEps(nn.Module):
    """The exact Gaussian eps plus a random class-conditional U-Net's output: images stay in a sane
    range (so tolerances mean something) while class, timestep and batch effects of a real network
    are all exercised."""

    def __init__(self, exact: GaussianEps, net: nn.Module, weight: float = 1.0):
        super().__init__()
        self.exact, self.net, self.weight = exact, net, weight

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.exact(x, t, y) + self.weight * self.net(x, t, y)


class GaussianMixture:
    """Two equally likely classes, x_0 | y ~ N(mu_y, std^2 I): the exact conditional and unconditional
    eps and the exact noise-aware classifier p(y | x_t) are all closed-form."""

    def __init__(self, schedule: NoiseSchedule, mu: torch.Tensor, std: float):
        self.schedule, self.mu, self.std = schedule, mu.double(), std  # mu: [2, C, H, W]

    def _terms(self, x: torch.Tensor, t: torch.Tensor):
        ab = self.schedule.alpha_bar(t, torch.float64).view(-1, 1, 1, 1)
        var = ab * self.std**2 + 1 - ab  # variance of x_t given y
        means = ab.sqrt()[:, None] * self.mu[None]  # [B, 2, C, H, W]
        sq = ((x.double()[:, None] - means) ** 2).flatten(2).sum(-1)  # [B, 2]
        logits = -sq / (2 * var.view(-1, 1))
        return ab, var, means, logits

    def logits(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self._terms(x, t)[3]

    def eps(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Label 2 is the null class: the mixture's eps, with the posterior p(y | x_t) weighting the means."""
        ab, var, means, logits = self._terms(x, t)
        w = torch.softmax(logits, dim=1)
        onehot = torch.nn.functional.one_hot(y.clamp(max=1), 2).double()
        weights = torch.where((y == 2).view(-1, 1), w, onehot)
        mean = (weights.view(*weights.shape, 1, 1, 1) * means).sum(1)
        return ((1 - ab).sqrt() * (x.double() - mean) / var).float()


class MixtureEps(nn.Module):
    def __init__(self, mixture: GaussianMixture):
        super().__init__()
        self.mixture = mixture

    def forward(self, x, t, y):
        return self.mixture.eps(x, t, y)


class MixtureClassifier(nn.Module):
    def __init__(self, mixture: GaussianMixture):
        super().__init__()
        self.mixture = mixture

    def forward(self, x, t):
        return self.mixture.logits(x, t).to(x.dtype)
