"""Conversions between model-space images (float in [-1, 1], [C, H, W]) and pixels, grids and PNGs."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

_MODES = {1: "L", 3: "RGB"}


def _mode(channels: int) -> str:
    if channels not in _MODES:
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    return _MODES[channels]


def from_uint8(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (any layout) -> float32 in [-1, 1]: x / 127.5 - 1, exact at 0 and 255."""
    if x.dtype != torch.uint8:
        raise TypeError(f"expected uint8 pixels, got {x.dtype}")
    # .float() copies a uint8 tensor, so the in-place ops touch only that copy
    return x.float().div_(127.5).sub_(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Float images in [-1, 1], [B, C, H, W] or [C, H, W] -> uint8 [B, H, W, C] or [H, W, C]."""
    if x.ndim not in (3, 4):
        raise ValueError(f"expected [B, C, H, W] or [C, H, W], got shape {tuple(x.shape)}")
    # float32 before scaling: fp16/bf16 cannot hold (x + 1) * 127.5 exactly for every level
    u8 = ((x.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return u8.movedim(-3, -1).cpu().numpy()


def to_pil(x: torch.Tensor) -> Image.Image:
    """One image [C, H, W] in [-1, 1] -> a PIL image, mode "L" (C = 1) or "RGB" (C = 3)."""
    if x.ndim != 3:
        raise ValueError(f"expected one image [C, H, W], got shape {tuple(x.shape)}")
    mode = _mode(x.shape[0])
    pixels = to_uint8(x)
    return Image.fromarray(pixels[..., 0] if mode == "L" else pixels)


def make_grid(x: torch.Tensor, nrow: int, padding: int = 2, pad_value: float = -1.0) -> torch.Tensor:
    """[B, C, H, W] -> one [C, H', W'] image: tiles of nrow images per row, padding between and around."""
    if x.ndim != 4 or x.shape[0] == 0:
        raise ValueError(f"expected a non-empty batch [B, C, H, W], got shape {tuple(x.shape)}")
    if nrow < 1 or padding < 0:
        raise ValueError(f"need nrow >= 1 and padding >= 0, got nrow={nrow}, padding={padding}")
    b, c, h, w = x.shape
    cols = min(nrow, b)
    rows = math.ceil(b / cols)
    step_h, step_w = h + padding, w + padding
    grid = x.new_full((c, rows * step_h + padding, cols * step_w + padding), pad_value)
    for k in range(b):
        top, left = (k // cols) * step_h + padding, (k % cols) * step_w + padding
        grid[:, top : top + h, left : left + w] = x[k]
    return grid


def png_bytes(x: torch.Tensor) -> bytes:
    """One image [C, H, W] in [-1, 1] -> PNG file bytes."""
    buf = io.BytesIO()
    to_pil(x).save(buf, format="PNG")
    return buf.getvalue()


def save_png(x: torch.Tensor, path: str | os.PathLike[str]) -> None:
    """Write one image [C, H, W] in [-1, 1] to a PNG file."""
    to_pil(x).save(Path(path), format="PNG")


def save_grid(x: torch.Tensor, path: str | os.PathLike[str], nrow: int = 8) -> None:
    """Write a batch [B, C, H, W] in [-1, 1] as one PNG grid of nrow images per row."""
    save_png(make_grid(x, nrow), path)


def from_png(data: bytes | str | os.PathLike[str], channels: int) -> torch.Tensor:
    """PNG (or any PIL-readable image) bytes or path -> float [C, H, W] in [-1, 1]; inverse of png_bytes."""
    mode = _mode(channels)
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else Path(data)
    with Image.open(source) as img:
        pixels = np.asarray(img.convert(mode))
    # "L" decodes to [H, W]; give it the channel axis RGB has
    pixels = pixels.reshape(pixels.shape[0], pixels.shape[1], channels)
    return from_uint8(torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous())


def mask_from_png(data: bytes | str | os.PathLike[str]) -> torch.Tensor:
    """A black-and-white mask PNG -> float [1, H, W]: 1 where it is white (regenerate), 0 where black
    (keep); a gray counts as white above the middle level. The service and the CLI pass masks already
    thresholded to 0 and 255 (contract.image_inputs)."""
    return (from_png(data, 1) > 0).float()
