"""Imported diffusers networks behind the engine's one eps-model contract, `model(x, t, y) -> eps`.

A `UNet2DModel` with class embeddings samples pixels; a DiT (`DiTTransformer2DModel`) samples the
latents of an `AutoencoderKL`, which decodes them. Either may predict eps or v (converted to eps
exactly) and may have learned-sigma output channels (the second half, which the samplers here do not
use: they take the eps half, as diffusers' pipelines do). diffusers is imported here only, when a card
of such a model is loaded: it is the worker's optional `diffusers` extra.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from diffusion.predictions import PREDICTION_TYPES, eps_from_v
from diffusion.schedules import NoiseSchedule


def diffusers_module() -> Any:
    """The diffusers package, or ImportError saying how to install it."""
    try:
        import diffusers
    except ImportError as e:
        raise ImportError("this model is a diffusers model: install the extra (pip install 'imagegen[diffusers]')"
                          ) from e
    return diffusers


def dit_class(config: dict[str, Any]) -> Any:
    """DiTTransformer2DModel; DiT-XL/2's folder names it by its old name, Transformer2DModel with ada_norm_zero."""
    return diffusers_module().DiTTransformer2DModel


class _EpsOutput(nn.Module):
    """The conversion of a network's output to eps, with the schedule's sqrt(alpha_bar) tables."""

    def __init__(self, prediction_type: str, schedule: NoiseSchedule, channels: int) -> None:
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction type {prediction_type!r} is not supported; supported: "
                             f"{', '.join(PREDICTION_TYPES)}")
        self.prediction_type = prediction_type
        self.channels = channels  # the eps half of a learned-sigma output
        ab = schedule.alphas_cumprod
        # not saved with the weights: rebuilt from the card's schedule
        self.register_buffer("sqrt_ab", ab.sqrt().float(), persistent=False)
        self.register_buffer("sqrt_1m_ab", (1 - ab).sqrt().float(), persistent=False)

    def eps(self, x: Tensor, t: Tensor, out: Tensor) -> Tensor:
        out = out[:, : self.channels]
        if self.prediction_type == "epsilon":
            return out
        ab = self.sqrt_ab[t.long()].view(-1, 1, 1, 1) ** 2
        return eps_from_v(x, out.to(x.dtype), ab.to(x.dtype))


class UNet2DEps(nn.Module):
    """A diffusers `UNet2DModel` with `class_labels` as `model(x, t, y) -> eps` (pixel space)."""

    def __init__(self, config: dict[str, Any], prediction_type: str, schedule: NoiseSchedule) -> None:
        super().__init__()
        self.unet = diffusers_module().UNet2DModel.from_config(config)
        self.conditional = config.get("num_class_embeds") is not None
        self.output = _EpsOutput(prediction_type, schedule, config["in_channels"])

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        out = self.unet(x, t, class_labels=y if self.conditional else None).sample
        return self.output.eps(x, t, out)


class LatentDiT(nn.Module):
    """A DiT over an AutoencoderKL's latents: `model(z, t, y) -> eps`, and the VAE's `decode`/`encode`
    between latents and images in [-1, 1] (diffusers' DiTPipeline: z = scaling_factor * E(x))."""

    def __init__(self, config: dict[str, Any], prediction_type: str, schedule: NoiseSchedule) -> None:
        super().__init__()
        d = diffusers_module()
        self.transformer = dit_class(config["transformer"]).from_config(config["transformer"])
        self.vae = d.AutoencoderKL.from_config(config["vae"])
        self.scaling_factor = float(config["scaling_factor"])
        self.output = _EpsOutput(prediction_type, schedule, config["transformer"]["in_channels"])

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        out = self.transformer(x, timestep=t, class_labels=y).sample
        return self.output.eps(x, t, out)

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """Latents [B, C, h, w] -> images [B, 3, H, W] in model space ([-1, 1] is the pixel range)."""
        vae = self.vae
        return vae.decode(z.to(vae.dtype) / self.scaling_factor).sample.float()

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Images [B, 3, H, W] in [-1, 1] -> latents: the mean of the VAE's posterior, scaled (no draw,
        so that an img2img input gives the same latent whatever the seed)."""
        vae = self.vae
        return vae.encode(x.to(vae.dtype)).latent_dist.mean.float() * self.scaling_factor
