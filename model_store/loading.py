"""Rebuild stored models as torch modules: the bridge between the store and the math core.

Imports torch and `diffusion`; the service never imports this module (it reads cards only).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from diffusion.classifier import NoiseClassifier, NoiseClassifierConfig
from diffusion.eval_classifier import EvalClassifier, EvalClassifierConfig
from diffusion.schedules import NoiseSchedule, ScheduleConfig
from diffusion.unet import UNet, UNetConfig
from model_store.cards import ModelCard
from model_store.store import ModelStore
from model_store.weights import load_tensors

_BUILDERS = {
    "unet": lambda cfg: UNet(UNetConfig.from_dict(cfg)),
    "noise-classifier": lambda cfg: NoiseClassifier(NoiseClassifierConfig.from_dict(cfg)),
    "eval-classifier": lambda cfg: EvalClassifier(EvalClassifierConfig.from_dict(cfg)),
}


def _diffusers_builder(card: ModelCard) -> nn.Module:
    # imported lazily: diffusers is the worker's optional extra, needed by imported models only
    from model_store.diffusers_backbones import LatentDiT, UNet2DEps

    cls = {"diffusers-unet2d": UNet2DEps, "diffusers-dit": LatentDiT}[card.backbone]
    return cls(card.architecture["config"], card.prediction_type or "epsilon",
               NoiseSchedule(ScheduleConfig(**card.schedule)))


DIFFUSERS_TYPES = ("diffusers-unet2d", "diffusers-dit")
"""Architecture types built by diffusers (the card's prediction type and schedule go into the module)."""


def build_module(card: ModelCard) -> nn.Module:
    arch = card.architecture
    if arch["type"] in DIFFUSERS_TYPES:
        return _diffusers_builder(card)
    if arch["type"] not in _BUILDERS:
        raise ValueError(f"{card.ref}: no builder for architecture type {arch['type']!r}")
    return _BUILDERS[arch["type"]](arch["config"])


def load_module(store: ModelStore, ref: str | ModelCard, device: str | torch.device = "cpu",
                dtype: torch.dtype = torch.float32) -> tuple[ModelCard, nn.Module]:
    """The card and its network in eval mode, weights sha256-checked and cast to `dtype`."""
    card, tensors = load_tensors(store, ref)
    module = build_module(card)
    module.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}, strict=True)
    return card, module.to(device=device, dtype=dtype).eval().requires_grad_(False)


@dataclass
class Generator:
    """A generator ready to sample: its card, eps-network, schedule and (optional) guidance classifier."""

    card: ModelCard
    model: nn.Module
    schedule: NoiseSchedule
    classifier: nn.Module | None

    @property
    def num_classes(self) -> int:
        return len(self.card.class_names)

    @property
    def clip_x0(self) -> bool:
        """Whether samplers clip this model's x_0 estimates to [-1, 1] (its card's `sampling`)."""
        return bool(self.card.sampling.get("clip_x0", False))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The shape of the images it makes (decoded, for a latent model)."""
        return (self.card.channels, self.card.image_size, self.card.image_size)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """The shape the samplers work in: the latents of a latent model, else the images."""
        if self.card.space == "latent":
            c, h, w = self.card.architecture["config"]["latent_shape"]
            return (c, h, w)
        return self.image_shape

    @property
    def null_class(self) -> int:
        """The label CFG's unconditional rows get (a model without one is refused guidance by the contract)."""
        null = self.card.null_class
        return self.num_classes if null is None else null

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Samples -> images in model space: the VAE's decoding of a latent model's, else themselves."""
        return self.model.decode(x) if self.card.space == "latent" else x

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] in [-1, 1] -> what the samplers start from (img2img)."""
        return self.model.encode(images) if self.card.space == "latent" else images


def load_generator(store: ModelStore, ref: str, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32, with_classifier: bool = True) -> Generator:
    """A generator and, when its card links one and `with_classifier`, its guidance classifier."""
    card, model = load_module(store, ref, device, dtype)
    if card.kind != "generator":
        raise ValueError(f"{card.ref} is a {card.kind}, not a generator")
    # an imported diffusers network converts its v prediction to eps itself; the trainer's predict eps
    allowed = ("epsilon", "v_prediction") if card.backbone in DIFFUSERS_TYPES else ("epsilon",)
    if card.prediction_type not in allowed:
        raise ValueError(f"{card.ref}: prediction type {card.prediction_type!r} is not supported "
                         f"(supported for {card.backbone}: {', '.join(allowed)})")
    classifier = None
    link = card.links.get("guidance_classifier")
    if with_classifier and link:
        _, classifier = load_module(store, link, device, torch.float32)
    return Generator(card, model, NoiseSchedule(ScheduleConfig(**card.schedule)), classifier)
