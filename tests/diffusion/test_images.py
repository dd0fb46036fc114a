"""Pixel conversions, grids and PNG round trips."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion.images import from_png, from_uint8, make_grid, png_bytes, save_grid, save_png, to_pil, to_uint8


def levels(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 pixels and the float images k / 127.5 - 1 that stand for them exactly."""
    u8 = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    return u8, u8.float() / 127.5 - 1


def test_to_uint8_exact_on_levels() -> None:
    u8, x = levels((3, 2, 5, 7))
    out = to_uint8(x)
    assert out.dtype == np.uint8 and out.shape == (3, 5, 7, 2)
    np.testing.assert_array_equal(out, u8.permute(0, 2, 3, 1).numpy())
    np.testing.assert_array_equal(to_uint8(x[1]), out[1])  # [C, H, W] gives [H, W, C]
    assert torch.equal(from_uint8(u8), x)


def test_to_uint8_clips_and_rounds() -> None:
    x = torch.tensor([-3.0, -1.0, 1.0, 7.0, 0.0, 2 / 127.5 - 1 + 0.3 / 127.5]).view(1, 1, 6)
    assert to_uint8(x)[..., 0].tolist() == [[0, 0, 255, 255, 128, 2]]


def test_to_pil_modes() -> None:
    assert to_pil(torch.zeros(1, 4, 6)).mode == "L"
    rgb = to_pil(torch.zeros(3, 4, 6))
    assert rgb.mode == "RGB" and rgb.size == (6, 4)  # PIL sizes are (width, height)
    with pytest.raises(ValueError, match="channels"):
        to_pil(torch.zeros(2, 4, 4))


def test_make_grid_shape_and_placement() -> None:
    b, c, h, w, nrow, pad = 7, 3, 4, 5, 3, 2
    x = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, c, h, w) / 10
    grid = make_grid(x, nrow=nrow, padding=pad, pad_value=-1.0)
    rows = 3  # ceil(7 / 3)
    assert grid.shape == (c, rows * (h + pad) + pad, nrow * (w + pad) + pad)
    for k in range(b):
        top, left = (k // nrow) * (h + pad) + pad, (k % nrow) * (w + pad) + pad
        assert torch.equal(grid[:, top : top + h, left : left + w], x[k])
    # padding, and the two tiles past the last image, keep pad_value
    assert torch.all(grid[:, :pad] == -1) and torch.all(grid[:, :, :pad] == -1)
    top, left = 2 * (h + pad) + pad, 1 * (w + pad) + pad
    assert torch.all(grid[:, top:, left:] == -1)


def test_make_grid_fewer_images_than_nrow() -> None:
    grid = make_grid(torch.ones(2, 1, 3, 3), nrow=8, padding=0)
    assert grid.shape == (1, 3, 6) and torch.all(grid == 1)


def test_png_bytes_decode_with_pil() -> None:
    _, x = levels((3, 5, 9))
    img = Image.open(io.BytesIO(png_bytes(x)))
    assert img.format == "PNG" and img.mode == "RGB" and img.size == (9, 5)
    assert Image.open(io.BytesIO(png_bytes(x[:1]))).mode == "L"


@pytest.mark.parametrize("channels", [1, 3])
def test_from_png_inverts_png_bytes(channels: int) -> None:
    u8, x = levels((channels, 6, 8), seed=channels)
    back = from_png(png_bytes(x), channels=channels)
    assert back.dtype == torch.float32 and back.shape == (channels, 6, 8)
    assert torch.equal(back, x)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(x)))).reshape(6, 8, channels),
                                  u8.permute(1, 2, 0).numpy())


def test_from_png_converts_channels() -> None:
    gray = from_png(png_bytes(torch.full((3, 2, 2), 1.0)), channels=1)
    assert gray.shape == (1, 2, 2) and torch.all(gray == 1.0)
    rgb = from_png(png_bytes(torch.full((1, 2, 2), -1.0)), channels=3)
    assert rgb.shape == (3, 2, 2) and torch.all(rgb == -1.0)


def test_save_png_and_grid(tmp_path: Path) -> None:
    _, x = levels((4, 1, 6, 6))
    save_png(x[0], tmp_path / "one.png")
    assert torch.equal(from_png(tmp_path / "one.png", channels=1), x[0])
    save_grid(x, str(tmp_path / "grid.png"), nrow=2)
    grid = from_png(str(tmp_path / "grid.png"), channels=1)
    assert torch.equal(grid, make_grid(x, nrow=2))
