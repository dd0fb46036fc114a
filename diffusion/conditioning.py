"""Image-conditioned sampling with an unconditionally trained model: img2img and inpainting, per image.

- img2img (SDEdit, Meng et al. 2022, sec. 3): noise the input to the timestep that `strength`
  selects, then run only the rest of the image's step subsequence from there.
- Inpainting (RePaint, Lugmayr et al. 2022): after every sampler step to t', the kept region is
  replaced by the input noised to t'; optionally each step but the last (the one to the clean image,
  as in RePaint's Alg. 1, line 9: "if u < U and t > 1") is resampled, re-noised back to t and taken
  again, so that the regenerated region blends into the kept one.

These are pure helpers over per-sample tensors; `diffusion.sampling` holds them in its state and
calls them from its one driver loop. Masks are 1 (True) where the image is regenerated, 0 where the
input is kept; RePaint's m is the opposite (1 = known).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence

import torch
from torch import Tensor

from diffusion.noise import ImageNoise
from diffusion.schedules import timestep_subsequence

MAX_RESAMPLE_STEPS = 10
"""Most RePaint resampling repetitions per inpainting step (U in RePaint's Alg. 1)."""


def strength_steps(steps: int, strength: float) -> int:
    """The steps that img2img with `strength` runs: int(steps * strength), the convention of
    diffusers' img2img pipelines (so a strength and step count mean the same number of steps there);
    strength 1 runs them all, strength 0 none."""
    return min(int(steps * strength), steps)


@functools.lru_cache(maxsize=4096)
def strength_timesteps(steps: int, strength: float, num_train_steps: int) -> tuple[int, ...]:
    """The tail of the `steps`-step subsequence that `strength` runs, still ending with CLEAN
    (SDEdit's t0 is its first element; strength 0 leaves only CLEAN: the input is the output).
    Cached, since every image of every job asks for one (a tuple, so that no caller can change it)."""
    full = timestep_subsequence(steps, num_train_steps)
    return tuple(full[steps - strength_steps(steps, strength):])


def noised_start(z: Tensor, init: Tensor, ab: Tensor, noised: Tensor) -> Tensor:
    """SDEdit's start x(t0) in VP form, x_t0 = sqrt(ab_t0) x_init + sqrt(1 - ab_t0) z (Ho et al. 2020,
    eq. 4), where `noised` [B] is set; plain noise z elsewhere. Rows that run their whole subsequence
    keep z itself rather than the formula at t = T-1: plain generation starts from x_T = z, and
    sqrt(ab_{T-1}) x_init (about 6e-3 x_init on the linear schedule) would make strength 1 differ from
    it. At t0 = CLEAN (ab = 1) the formula gives x_init exactly: strength 0 returns the input."""
    x = ab.sqrt() * init + (1 - ab).sqrt() * z
    return torch.where(noised.view(-1, 1, 1, 1), x, z)


def keep_known(x: Tensor, init: Tensor, regenerate: Tensor, ab: Tensor, eps: Tensor) -> Tensor:
    """RePaint (Lugmayr et al. 2022, eqs. 8-10): x_{t'} = m * x_known + (1 - m) * x_unknown with
    x_known = sqrt(ab_t') x_init + sqrt(1 - ab_t') eps, x_unknown the sampler's step (`x`), written
    with our mask (`regenerate` = 1 - m, bool). A select, not a blend, so that each region is exactly
    its source: at t' = CLEAN (ab = 1) the kept region is the input itself."""
    known = ab.sqrt() * init + (1 - ab).sqrt() * eps
    return torch.where(regenerate, x, known)


def renoise(x: Tensor, ab_t: Tensor, ab_next: Tensor, z: Tensor) -> Tensor:
    """RePaint's resampling jump (Lugmayr et al. 2022, sec. 4.2, Alg. 1 line 10) from t' back to t over
    a respaced step: x_t ~ q(x_t | x_t') = N(sqrt(ab_t / ab_t') x_t', (1 - ab_t / ab_t') I), the forward
    process of Ho et al. 2020 (eq. 2) composed over the training steps between t' and t."""
    ratio = ab_t / ab_next
    return ratio.sqrt() * x + (1 - ratio).clamp_min(0).sqrt() * z


def inpaint_noise(seed: int) -> ImageNoise:
    """The noise stream of an inpainted image's kept region and resampling jumps, seeded from the
    image's seed alone. It is apart from the sampler's own stream so that the sampler's draws
    (x_T, DDPM's and DDIM's z) are those of plain generation whatever the mask: an all-regenerate
    mask then gives exactly the plain image."""
    digest = hashlib.sha256(f"inpaint/{seed}".encode()).digest()
    return ImageNoise(int.from_bytes(digest[:8], "big") >> 1)


def image_inputs(
    specs: Sequence, shape: tuple[int, int, int], init_images: Sequence[Tensor | None] | None,
    masks: Sequence[Tensor | None] | None, device: torch.device | str,
) -> tuple[Tensor, Tensor, list[bool]]:
    """Check each image's input image and mask against its spec (ValueError naming the field) and
    stack them: (init [B, C, H, W], zeros where none; regenerate [B, C, H, W] bool, all True where no
    mask; whether each image has a mask)."""
    n = len(specs)
    init_list = [None] * n if init_images is None else list(init_images)
    mask_list = [None] * n if masks is None else list(masks)
    if len(init_list) != n:
        raise ValueError(f"init_images must have one entry (or None) per image: {len(init_list)} for {n} images")
    if len(mask_list) != n:
        raise ValueError(f"masks must have one entry (or None) per image: {len(mask_list)} for {n} images")
    init = torch.zeros((n, *shape), dtype=torch.float32, device=device)
    regenerate = torch.ones((n, *shape), dtype=torch.bool, device=device)
    for i, (spec, image, mask) in enumerate(zip(specs, init_list, mask_list)):
        if image is not None:
            if tuple(image.shape) != tuple(shape):
                raise ValueError(f"init_image must have the model's shape {tuple(shape)} (C, H, W), "
                                 f"got {tuple(image.shape)}")
            if not torch.isfinite(image).all():
                raise ValueError("init_image must be finite")
            init[i] = image.to(device=device, dtype=torch.float32)
        elif spec.strength != 1:
            raise ValueError(f"strength {spec.strength} needs an init_image (strength 1 is plain generation)")
        if mask is not None:
            if image is None:
                raise ValueError("mask needs an init_image: the kept region comes from it")
            if mask.dim() != 3 or mask.shape[0] not in (1, shape[0]) or tuple(mask.shape[1:]) != tuple(shape[1:]):
                raise ValueError(f"mask must have shape (1 or {shape[0]}, {shape[1]}, {shape[2]}), "
                                 f"got {tuple(mask.shape)}")
            if not ((mask == 0) | (mask == 1)).all():
                raise ValueError("mask values must be 0 (keep) or 1 (regenerate)")
            regenerate[i] = (mask == 1).to(device).expand(shape)
        elif spec.resample_steps != 1:
            raise ValueError(f"resample_steps {spec.resample_steps} needs a mask (it resamples inpainting steps)")
    return init, regenerate, [m is not None for m in mask_list]
