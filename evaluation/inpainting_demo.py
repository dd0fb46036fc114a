"""The inpainting example the README shows and a test checks on the shipped generator: the first
test image of each class, sent as a client sends it (a PNG), with its left half regenerated for the
image's own class at the card's default settings. One definition, so that the README's figure is
the case the test checks."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffusion.data import ImageDataset
from diffusion.images import from_png, png_bytes
from diffusion.sampling import SampleSpec, sample
from model_store.loading import Generator

FIRST_SEED = 100
"""Class c's image is regenerated with seed FIRST_SEED + c."""


@dataclass
class HalfInpainting:
    inits: list[torch.Tensor]  # the test images, read back from PNGs, in [-1, 1]
    mask: torch.Tensor  # 1 where regenerated: the left half
    blanked: torch.Tensor  # the inputs with the left half set to the background (-1)
    regenerated: torch.Tensor  # the samples: the left half new, the right half the input's


def half_inpainting(gen: Generator, test: ImageDataset) -> HalfInpainting:
    """Regenerate the left half of the first test image of each class with `gen` (a loaded
    generator) at its card's defaults."""
    classes = range(gen.num_classes)
    side = gen.image_shape[-1]
    inits = [from_png(png_bytes(test.images[int((test.labels == c).nonzero()[0][0])].float() / 127.5 - 1),
                      gen.image_shape[0]) for c in classes]
    mask = torch.zeros(1, side, side)
    mask[:, :, : side // 2] = 1
    d = gen.card.defaults
    specs = [SampleSpec(c, float(d["guidance_scale"]), "cfg", d["sampler"], int(d["steps"]), seed=FIRST_SEED + c)
             for c in classes]
    with torch.no_grad():
        out = sample(gen.model, gen.schedule, specs, gen.image_shape, gen.num_classes, clip_x0=gen.clip_x0,
                     init_images=inits, masks=[mask] * len(inits))
    blanked = torch.stack(inits).clone()
    blanked[:, :, :, : side // 2] = -1
    return HalfInpainting(inits, mask, blanked, out)
