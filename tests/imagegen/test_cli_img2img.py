"""`imagegen generate --init-image/--strength/--mask/--resample-steps/--resize`: img2img and
inpainting from PNG files, against the real tiny store; bad input exits 2 naming the flag."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import last_json, pixels
from PIL import Image

from imagegen.cli import main

SIZE = 28


def write_png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(array, mode).save(path, format="PNG")
    return path


def pattern(size: int = SIZE) -> np.ndarray:
    """A grayscale test image with structure in both halves (not a flat color the model might return)."""
    y, x = np.mgrid[0:size, 0:size]
    return ((x * 9 + y * 5) % 256).astype(np.uint8)


def half_mask(size: int = SIZE) -> np.ndarray:
    """White (regenerate) on the right half, black (keep) on the left."""
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[:, size // 2:] = 255
    return mask


@pytest.fixture
def init_png(tmp_path) -> Path:
    return write_png(tmp_path / "init.png", pattern())


def generate(capsys, store_root, out, *flags: str) -> dict:
    code = main(["generate", "--store", str(store_root), "--out", str(out), "--device", "cpu", "--class-label", "1",
                 "--seed", "7", *flags])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return last_json(captured.out)


def refused(capsys, store_root, tmp_path, *flags: str) -> str:
    """The one stderr line of a refused `generate`; nothing is written."""
    out = tmp_path / "out"
    code = main(["generate", "--store", str(store_root), "--out", str(out), "--device", "cpu", "--class-label", "1",
                 *flags])
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert code == 2, captured
    assert len(lines) == 1 and lines[0].startswith("imagegen generate: error: "), captured.err
    assert captured.out == "" and not out.exists()
    return lines[0]


def sha256_ref(png: bytes) -> str:
    return "sha256:" + hashlib.sha256(png).hexdigest()


def test_strength_0_returns_the_init_image(capsys, store_root, tmp_path, init_png):
    summary = generate(capsys, store_root, tmp_path / "out", "--init-image", str(init_png), "--strength", "0",
                       "--num-images", "2")
    s = summary["settings"]
    assert s["strength"] == 0.0 and s["resample_steps"] == 1 and s["mask"] is None
    # the input was already the model's size and mode: normalizing re-encodes it, pixel for pixel
    assert s["init_image"].startswith("sha256:") and summary["notes"] == []
    for path in summary["images"]:
        assert np.abs(pixels(path).astype(int) - pattern().astype(int)).max() <= 1


def test_strength_1_with_an_init_image_is_plain_generation(capsys, store_root, tmp_path, init_png):
    plain = generate(capsys, store_root, tmp_path / "plain", "--num-images", "2")
    img2img = generate(capsys, store_root, tmp_path / "img2img", "--num-images", "2", "--init-image", str(init_png),
                       "--strength", "1")
    assert plain["settings"]["init_image"] is None and img2img["settings"]["init_image"] is not None
    for a, b in zip(plain["images"], img2img["images"]):
        assert np.array_equal(pixels(a), pixels(b))


def test_img2img_with_a_middle_strength_runs_part_of_the_steps(capsys, store_root, tmp_path, init_png, monkeypatch):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # the progress bar counts the steps it runs
    summary = generate(capsys, store_root, tmp_path / "out", "--init-image", str(init_png), "--strength", "0.5",
                       "--steps", "4", "--num-images", "1")
    assert summary["settings"]["strength"] == 0.5 and summary["settings"]["steps"] == 4
    out = pixels(summary["images"][0])
    assert out.shape == (SIZE, SIZE) and not np.array_equal(out, pattern())


def test_inpainting_keeps_the_black_region(capsys, store_root, tmp_path, init_png):
    mask = write_png(tmp_path / "mask.png", half_mask())
    summary = generate(capsys, store_root, tmp_path / "out", "--init-image", str(init_png), "--mask", str(mask),
                       "--resample-steps", "2", "--num-images", "2")
    s = summary["settings"]
    assert s["resample_steps"] == 2 and s["mask"] == sha256_ref(_normalized_mask(half_mask()))
    for path in summary["images"]:
        out = pixels(path).astype(int)
        assert np.abs(out[:, :SIZE // 2] - pattern()[:, :SIZE // 2].astype(int)).max() <= 1
        assert not np.array_equal(out[:, SIZE // 2:], pattern()[:, SIZE // 2:])


def _normalized_mask(mask: np.ndarray) -> bytes:
    # what contract.image_inputs makes of an already black-and-white 28x28 mask
    buf = io.BytesIO()
    Image.fromarray(mask, "L").save(buf, format="PNG")
    return buf.getvalue()


def test_an_all_black_mask_returns_the_input(capsys, store_root, tmp_path, init_png):
    mask = write_png(tmp_path / "mask.png", np.zeros((SIZE, SIZE), dtype=np.uint8))
    summary = generate(capsys, store_root, tmp_path / "out", "--init-image", str(init_png), "--mask", str(mask),
                       "--num-images", "1")
    assert np.abs(pixels(summary["images"][0]).astype(int) - pattern().astype(int)).max() <= 1


def test_resize_converts_and_resizes_and_says_so(capsys, store_root, tmp_path):
    big = np.stack([pattern(56)] * 3, axis=-1)  # RGB, twice the model's size
    init = write_png(tmp_path / "big.png", big, "RGB")
    mask = np.zeros((56, 56), dtype=np.uint8)
    mask[:, 28:] = 255
    mask_png = write_png(tmp_path / "mask.png", mask)
    summary = generate(capsys, store_root, tmp_path / "out", "--init-image", str(init), "--mask", str(mask_png),
                       "--resize", "--strength", "0", "--num-images", "1")
    notes = " ".join(summary["notes"])
    assert "converted from RGB" in notes and "resized from 56x56 to 28x28" in notes
    assert "mask was resized" in notes
    assert pixels(summary["images"][0]).shape == (SIZE, SIZE)


def test_a_wide_image_is_center_cropped_with_resize(capsys, store_root, tmp_path):
    init = write_png(tmp_path / "wide.png", np.zeros((28, 40), dtype=np.uint8))
    summary = generate(capsys, store_root, tmp_path / "out", "--init-image", str(init), "--resize",
                       "--strength", "0", "--num-images", "1")
    assert any("center-cropped from 40x28 to 28x28" in n for n in summary["notes"]), summary["notes"]


BAD = [
    # (flags, files to write first: name -> array, what the line must contain)
    (["--strength", "1.5", "--init-image", "init.png"], {"init.png": pattern()},
     ["--strength must be between 0 and 1"]),
    (["--strength", "-0.1", "--init-image", "init.png"], {"init.png": pattern()},
     ["--strength must be between 0 and 1"]),
    (["--strength", "nan", "--init-image", "init.png"], {"init.png": pattern()}, ["--strength"]),
    (["--strength", "abc"], {}, ["--strength", "'abc'"]),
    (["--strength", "0.5"], {}, ["--strength needs --init-image"]),
    (["--mask", "mask.png"], {"mask.png": half_mask()}, ["--mask needs --init-image"]),
    (["--resample-steps", "2"], {}, ["--resample-steps needs --mask"]),
    (["--resample-steps", "2", "--init-image", "init.png"], {"init.png": pattern()}, ["--resample-steps needs --mask"]),
    (["--resample-steps", "0", "--init-image", "init.png", "--mask", "mask.png"],
     {"init.png": pattern(), "mask.png": half_mask()}, ["--resample-steps must be between 1 and 10 (got 0)"]),
    (["--resample-steps", "11", "--init-image", "init.png", "--mask", "mask.png"],
     {"init.png": pattern(), "mask.png": half_mask()}, ["--resample-steps must be between 1 and 10 (got 11)"]),
    (["--init-image", "missing.png"], {}, ["--init-image", "missing.png", "cannot read"]),
    (["--init-image", "init.png", "--mask", "missing.png"], {"init.png": pattern()},
     ["--mask", "missing.png", "cannot read"]),
    (["--init-image", "."], {}, ["--init-image", "cannot read"]),  # a directory
    (["--init-image", "notes.txt"], {"notes.txt": b"not a picture"}, ["--init-image must be a PNG image"]),
    (["--init-image", "init.png"], {"init.png": pattern(40)},
     ["--init-image must be a 28x28", "got 40x40", "--resize"]),
    (["--init-image", "rgb.png"], {"rgb.png": np.zeros((28, 28, 3), dtype=np.uint8)},
     ["--init-image must be a 28x28 grayscale", "RGB"]),
    (["--init-image", "init.png", "--mask", "mask.png"], {"init.png": pattern(), "mask.png": half_mask(20)},
     ["--mask must have the size of --init-image", "got 20x20"]),
    (["--init-image", "init.png", "--mask", "mask.png", "--resize"], {"init.png": pattern(), "mask.png": half_mask(20)},
     ["--mask must have the size of --init-image"]),
]


@pytest.mark.parametrize("flags,files,needles", BAD, ids=[" ".join(c[0]) for c in BAD])
def test_bad_image_input_is_one_line_naming_the_flag(capsys, store_root, tmp_path, monkeypatch, flags, files, needles):
    for name, content in files.items():
        if isinstance(content, bytes):
            (tmp_path / name).write_bytes(content)
        else:
            write_png(tmp_path / name, content)
    monkeypatch.chdir(tmp_path)
    line = refused(capsys, store_root, tmp_path, *flags)
    for needle in needles:
        assert needle in line, line
