"""The evaluation classifier: a small ResNet on clean images whose penultimate features define the
Fréchet distance of generated images ("Fréchet LeNet distance"), and whose predictions score whether
an image shows the class it was asked for. Never used for guidance: guiding with the network that
scores the samples would be an adversarial attack on the metric."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from diffusion.config import ArchConfig


@dataclass(frozen=True)
class EvalClassifierConfig(ArchConfig):
    image_size: int = 28  # side of the square input
    in_channels: int = 1  # 1 for grayscale, 3 for RGB
    num_classes: int = 10  # K
    stage_channels: tuple[int, ...] = (32, 64, 128)  # channels of each stage; stages after the first halve the size
    blocks_per_stage: int = 2  # residual blocks per stage
    feature_dim: int = 256  # width of the penultimate layer: the FD feature space
    dropout: float = 0.3  # dropout before the last layer (training only)


EVAL_CLASSIFIER_PRESETS: dict[str, EvalClassifierConfig] = {
    "fmnist": EvalClassifierConfig(),
    # a quarter of fmnist's compute (2.3 min per epoch on one core of the 2-core CPU machine, against
    # 7): what a CPU-only session can train to the 93% test accuracy that evaluation.md asks for
    "fmnist-small": EvalClassifierConfig(stage_channels=(16, 32, 64), feature_dim=128, dropout=0.2),
    "tiny": EvalClassifierConfig(stage_channels=(8, 16), blocks_per_stage=1, feature_dim=128, dropout=0.0),
}


class _Block(nn.Module):
    """A pre-activation residual block (He et al. 2016b)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.skip = nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False) if (stride != 1 or in_ch != out_ch) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(x))
        skip = self.skip(h) if self.skip is not None else x
        h = self.conv1(h)
        h = self.conv2(F.relu(self.bn2(h)))
        return skip + h


class EvalClassifier(nn.Module):
    def __init__(self, cfg: EvalClassifierConfig):
        super().__init__()
        self.cfg = cfg
        ch = cfg.stage_channels[0]
        self.stem = nn.Conv2d(cfg.in_channels, ch, 3, padding=1, bias=False)
        blocks = []
        for i, out in enumerate(cfg.stage_channels):
            for j in range(cfg.blocks_per_stage):
                blocks.append(_Block(ch, out, stride=2 if (i > 0 and j == 0) else 1))
                ch = out
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(ch)
        self.fc = nn.Linear(ch, cfg.feature_dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.feature_dim, cfg.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate layer: [B, feature_dim], the space FD is measured in."""
        h = F.relu(self.bn(self.blocks(self.stem(x))))
        return F.relu(self.fc(h.mean(dim=(2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


def augment(x: torch.Tensor, generator: torch.Generator | None = None, max_shift: int = 2) -> torch.Tensor:
    """Random translations by up to `max_shift` pixels (pad with the background, -1, and crop) and
    horizontal flips: the usual Fashion-MNIST augmentation."""
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), device=x.device, generator=generator)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), device=x.device, generator=generator)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None])  # [b, h]
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None])  # [b, w]
    out = padded[torch.arange(b, device=x.device)[:, None, None, None],
                 torch.arange(x.shape[1], device=x.device)[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]
    flip = torch.rand(b, device=x.device, generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), out.flip(-1), out)
