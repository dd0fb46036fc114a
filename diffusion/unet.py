"""The class-conditional U-Net that predicts eps (Ho et al. 2020, with ADM's refinements)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from diffusion.config import ArchConfig
from diffusion.layers import Downsample, ResBlock, SelfAttention, TimestepEmbedder, Upsample, group_norm, zero_


@dataclass(frozen=True)
class UNetConfig(ArchConfig):
    image_size: int = 28  # side of the square input; must divide by 2 ** (levels - 1)
    in_channels: int = 1  # 1 for grayscale, 3 for RGB
    num_classes: int = 10  # K; the class embedding has K + 1 rows, row K being "no class"
    base_channels: int = 64  # channels of the first level
    channel_mult: tuple[int, ...] = (1, 2, 2)  # channels per level, as multiples of base_channels
    num_res_blocks: int = 2  # residual blocks per level on the way down (one more on the way up)
    attention_resolutions: tuple[int, ...] = (14, 7)  # feature-map sides that get self-attention
    head_channels: int = 32  # channels per attention head
    dropout: float = 0.1  # dropout inside residual blocks (training only)
    norm_groups: int = 32  # GroupNorm groups (reduced by gcd for narrow layers)

    def __post_init__(self):
        super().__post_init__()
        if self.image_size % 2 ** (len(self.channel_mult) - 1):
            raise ValueError(
                f"image_size {self.image_size} does not divide by 2**{len(self.channel_mult) - 1} "
                f"for {len(self.channel_mult)} levels"
            )


UNET_PRESETS: dict[str, UNetConfig] = {
    # the served Fashion-MNIST model: about 6.5M parameters, 13 MB in fp16
    "fmnist": UNetConfig(),
    # small enough to train on a laptop CPU in an hour
    "fmnist-small": UNetConfig(base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
                               attention_resolutions=(7,), head_channels=32, dropout=0.0),
    # for tests: a forward pass in milliseconds
    "tiny": UNetConfig(base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                       attention_resolutions=(14,), head_channels=16, dropout=0.0, norm_groups=8),
}
"""Named U-Net configurations."""


class UNet(nn.Module):
    """eps_theta(x_t, t, y): a U-Net over x_t conditioned on t and a class label y in 0..K (K = none)."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        ch0 = cfg.base_channels
        emb_dim = 4 * ch0
        self.time_embed = TimestepEmbedder(ch0, emb_dim)
        self.class_embed = nn.Embedding(cfg.num_classes + 1, emb_dim)
        self.null_class = cfg.num_classes

        def res(i: int, o: int) -> ResBlock:
            return ResBlock(i, o, emb_dim, cfg.dropout, cfg.norm_groups)

        def attn(c: int, size: int) -> nn.Module:
            if size not in cfg.attention_resolutions:
                return nn.Identity()
            return SelfAttention(c, cfg.head_channels, cfg.norm_groups)

        self.conv_in = nn.Conv2d(cfg.in_channels, ch0, 3, padding=1)
        self.down = nn.ModuleList()
        skip_channels, ch, size = [ch0], ch0, cfg.image_size
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                self.down.append(nn.ModuleList([res(ch, ch0 * mult), attn(ch0 * mult, size)]))
                ch = ch0 * mult
                skip_channels.append(ch)
            if level < len(cfg.channel_mult) - 1:
                self.down.append(Downsample(ch))
                skip_channels.append(ch)
                size //= 2
        self.mid = nn.ModuleList([res(ch, ch), SelfAttention(ch, cfg.head_channels, cfg.norm_groups), res(ch, ch)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for _ in range(cfg.num_res_blocks + 1):
                self.up.append(nn.ModuleList([res(ch + skip_channels.pop(), ch0 * mult), attn(ch0 * mult, size)]))
                ch = ch0 * mult
            if level > 0:
                self.up.append(Upsample(ch))
                size *= 2
        self.norm_out = group_norm(ch, cfg.norm_groups)
        self.conv_out = zero_(nn.Conv2d(ch, cfg.in_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] noisy images; t: [B] timesteps in 0..T-1; y: [B] labels in 0..K."""
        emb = self.time_embed(t) + self.class_embed(y)
        h = self.conv_in(x)
        skips = [h]
        for block in self.down:
            if isinstance(block, Downsample):
                h = block(h)
            else:
                h = block[1](block[0](h, emb))
            skips.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
        for block in self.up:
            if isinstance(block, Upsample):
                h = block(h)
            else:
                h = block[1](block[0](torch.cat([h, skips.pop()], dim=1), emb))
        return self.conv_out(nn.functional.silu(self.norm_out(h)))
