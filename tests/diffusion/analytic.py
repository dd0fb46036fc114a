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
