"""Tiny diffusers models with fixed seeds, saved as a user's folder would be (save_pretrained with
safetensors): a class-conditional RGB 32x32 UNet2DModel (epsilon or v_prediction) and a DiTPipeline."""

from __future__ import annotations

import json
from pathlib import Path

import torch

NUM_CLASSES = 3
CLASS_NAMES = ["red fox", "golden retriever", "tabby cat"]


def _randomized(module: torch.nn.Module, seed: int, std: float) -> torch.nn.Module:
    # random everywhere (diffusers zero-inits some output layers), so every prediction is informative
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module.eval()


def tiny_unet2d(num_class_embeds: int | None = NUM_CLASSES + 1, seed: int = 0):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=1,
                       block_out_channels=(8, 16), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=8,
                       num_class_embeds=num_class_embeds)
    return _randomized(unet, seed, 0.05)


def ddim_scheduler(prediction_type: str = "epsilon", **overrides):
    from diffusers import DDIMScheduler

    cfg = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
               prediction_type=prediction_type, clip_sample=False, set_alpha_to_one=True, steps_offset=0,
               timestep_spacing="trailing")
    return DDIMScheduler(**{**cfg, **overrides})


def save_unet_folder(root: Path, prediction_type: str = "epsilon", pipeline: bool = False,
                     num_class_embeds: int | None = NUM_CLASSES + 1, **scheduler) -> Path:
    """A bare UNet2DModel folder (or a DDIMPipeline folder) at `root`."""
    unet, sched = tiny_unet2d(num_class_embeds), ddim_scheduler(prediction_type, **scheduler)
    if pipeline:
        from diffusers import DDIMPipeline

        DDIMPipeline(unet=unet, scheduler=sched).save_pretrained(root, safe_serialization=True)
    else:
        unet.save_pretrained(root, safe_serialization=True)
        sched.save_pretrained(root / "scheduler")
    return root


def class_names_file(root: Path, names: list[str] = CLASS_NAMES) -> Path:
    path = root / "classes.json"
    path.write_text(json.dumps(names))
    return path


def tiny_dit_pipeline(seed: int = 0):
    from diffusers import AutoencoderKL, DiTPipeline, DiTTransformer2DModel

    torch.manual_seed(seed)
    # DiTPipeline hard-codes the null class as 1000: the DiT has 1000 classes (and the null row)
    dit = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=1000)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                        norm_num_groups=4, sample_size=16)
    _randomized(dit, seed, 0.05)
    _randomized(vae, seed + 1, 0.05)
    return DiTPipeline(transformer=dit, vae=vae, scheduler=ddim_scheduler(), id2label=None)


def save_dit_folder(root: Path) -> Path:
    tiny_dit_pipeline().save_pretrained(root, safe_serialization=True)
    return root
