"""The noise-aware classifier p_phi(y | x_t, t) for classifier guidance (Dhariwal & Nichol 2021, sec. 4):
the U-Net's encoder half, conditioned on t only, pooled to class logits. Trained on noised images."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from diffusion.config import ArchConfig
from diffusion.layers import Downsample, ResBlock, SelfAttention, TimestepEmbedder, group_norm


@dataclass(frozen=True)
class NoiseClassifierConfig(ArchConfig):
    image_size: int = 28  # side of the square input
    in_channels: int = 1  # 1 for grayscale, 3 for RGB
    num_classes: int = 10  # K logits (no null class: guidance needs a real class)
    base_channels: int = 32  # channels of the first level
    channel_mult: tuple[int, ...] = (1, 2, 2)  # channels per level, as multiples of base_channels
    num_res_blocks: int = 1  # residual blocks per level
    attention_resolutions: tuple[int, ...] = (7,)  # feature-map sides that get self-attention
    head_channels: int = 32  # channels per attention head
    dropout: float = 0.0  # dropout inside residual blocks
    norm_groups: int = 32  # GroupNorm groups (reduced by gcd for narrow layers)


CLASSIFIER_PRESETS: dict[str, NoiseClassifierConfig] = {
    "fmnist": NoiseClassifierConfig(),
    "tiny": NoiseClassifierConfig(base_channels=16, channel_mult=(1, 2), attention_resolutions=(), norm_groups=8),
}
"""Named noise-aware classifier configurations."""


class NoiseClassifier(nn.Module):
    """logits_phi(x_t, t): residual blocks conditioned on t, downsampling, global average pooling."""

    def __init__(self, cfg: NoiseClassifierConfig):
        super().__init__()
        self.cfg = cfg
        ch0 = cfg.base_channels
        emb_dim = 4 * ch0
        self.time_embed = TimestepEmbedder(ch0, emb_dim)
        self.conv_in = nn.Conv2d(cfg.in_channels, ch0, 3, padding=1)
        self.blocks = nn.ModuleList()
        ch, size = ch0, cfg.image_size
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                attn = (SelfAttention(ch0 * mult, cfg.head_channels, cfg.norm_groups)
                        if size in cfg.attention_resolutions else nn.Identity())
                block = ResBlock(ch, ch0 * mult, emb_dim, cfg.dropout, cfg.norm_groups)
                self.blocks.append(nn.ModuleList([block, attn]))
                ch = ch0 * mult
            if level < len(cfg.channel_mult) - 1:
                self.blocks.append(Downsample(ch))
                size //= 2
        self.norm_out = group_norm(ch, cfg.norm_groups)
        self.head = nn.Linear(ch, cfg.num_classes)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(t)
        h = self.conv_in(x)
        for block in self.blocks:
            h = block(h) if isinstance(block, Downsample) else block[1](block[0](h, emb))
        h = F.silu(self.norm_out(h)).mean(dim=(2, 3))
        return self.head(h)
