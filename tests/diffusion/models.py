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
