"""Models the sampler tests share."""

import torch
from analytic import GaussianEps, PerturbedGaussianEps
from stores import randomized_unet

from diffusion.schedules import NoiseSchedule

IMAGE_SHAPE = (1, 28, 28)
NUM_CLASSES = 10


def perturbed_model(schedule: NoiseSchedule, seed: int = 0) -> PerturbedGaussianEps:
    mu = torch.linspace(-0.6, 0.6, 28 * 28, dtype=torch.float64).view(IMAGE_SHAPE)
    std = torch.full(IMAGE_SHAPE, 0.3, dtype=torch.float64)
    return PerturbedGaussianEps(GaussianEps(schedule, mu, std), randomized_unet(seed, std=0.1)).eval()


def an_input() -> torch.Tensor:
    """A smooth image in [-1, 1], nothing like the model's samples (img2img and inpainting inputs)."""
    u = torch.linspace(-1, 1, IMAGE_SHAPE[1])
    return (torch.cos(3 * u).view(-1, 1) * torch.sin(2 * u).view(1, -1)).view(IMAGE_SHAPE)


class Counting(torch.nn.Module):
    """The model, recording the timesteps of every evaluation."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.t = inner, []

    def forward(self, x, t, y):
        self.t.append([int(v) for v in t])
        return self.inner(x, t, y)
