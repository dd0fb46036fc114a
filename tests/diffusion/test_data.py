"""IDX parsing, Fashion-MNIST loading, image folders, and dataset subsets and batches."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion.data import (
    DEFAULT_FASHION_MNIST_ROOT,
    FASHION_MNIST_CLASSES,
    ImageDataset,
    load_dataset,
    load_fashion_mnist,
    load_image_folder,
    read_idx,
)

IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def idx_bytes(arr: np.ndarray) -> bytes:
    """The IDX encoding of arr, written independently of read_idx: header, then big-endian data."""
    header = bytes([0, 0, IDX_CODES[arr.dtype.type], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, arr: np.ndarray) -> Path:
    data = idx_bytes(arr)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def write_fake_fashion_mnist(root: Path, n_train: int = 20, n_test: int = 10) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))


def toy_dataset(per_class: tuple[int, ...] = (5, 3, 4)) -> ImageDataset:
    labels = torch.cat([torch.full((k,), c) for c, k in enumerate(per_class)])
    # interleave classes so "first n" and "balanced" picks differ
    labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]
    images = torch.arange(len(labels), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 4, 4).contiguous()
    return ImageDataset(images, labels, [f"c{c}" for c in range(len(per_class))])


# --- IDX --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
@pytest.mark.parametrize("dtype", list(IDX_CODES))
def test_read_idx_round_trip(tmp_path: Path, name: str, dtype: type) -> None:
    arr = (np.arange(2 * 3 * 5) * 37 - 100).reshape(2, 3, 5).astype(dtype)
    out = read_idx(write_idx(tmp_path / name, arr))
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    assert out.shape == (2, 3, 5)
    np.testing.assert_array_equal(out, arr)
    out[0, 0, 0] = 1  # writable, so torch.from_numpy takes it without a warning


def test_read_idx_one_dim(tmp_path: Path) -> None:
    arr = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "l.idx", arr)), arr)


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda b: b"\x01" + b[1:], "magic"),
        (lambda b: b[:2] + b"\x07" + b[3:], "dtype"),
        (lambda b: b[:-1], "bytes"),
        (lambda b: b + b"\x00", "bytes"),
        (lambda b: b[:6], "header"),
        (lambda b: b"", "magic"),
    ],
    ids=["magic", "dtype-code", "truncated", "trailing", "short-header", "empty"],
)
def test_read_idx_rejects_bad_files(tmp_path: Path, mangle, message: str) -> None:
    path = tmp_path / "bad.idx"
    path.write_bytes(mangle(idx_bytes(np.zeros((2, 3), dtype=np.uint8))))
    with pytest.raises(ValueError, match=message) as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_read_idx_rejects_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "bad.idx.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((50, 50), dtype=np.uint8)))[:-10])
    with pytest.raises(ValueError, match="bad.idx.gz"):
        read_idx(path)


# --- Fashion-MNIST ------------------------------------------------------------------------------


def test_load_fake_fashion_mnist(tmp_path: Path) -> None:
    write_fake_fashion_mnist(tmp_path)
    train, test = load_fashion_mnist(root=tmp_path), load_fashion_mnist("test", root=str(tmp_path))
    assert train.images.shape == (20, 1, 28, 28) and train.images.dtype == torch.uint8
    assert train.labels.shape == (20,) and train.labels.dtype == torch.long
    assert len(test) == 10 and test.labels.tolist() == list(range(10))
    assert train.class_names == FASHION_MNIST_CLASSES and train.num_classes == 10
    assert (train.image_size, train.channels) == (28, 1)
    raw = read_idx(tmp_path / "train-images-idx3-ubyte.gz")
    assert torch.equal(train.images[:, 0], torch.from_numpy(raw))


def test_fashion_mnist_root_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fake_fashion_mnist(tmp_path)
    monkeypatch.setenv("FASHION_MNIST_ROOT", str(tmp_path))
    assert len(load_fashion_mnist()) == 20
    assert len(load_dataset("fashion-mnist:test", image_size=28, channels=1)) == 10


def test_load_dataset_fashion_mnist_resizes_and_widens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fake_fashion_mnist(tmp_path)
    monkeypatch.setenv("FASHION_MNIST_ROOT", str(tmp_path))
    ds = load_dataset("fashion-mnist", image_size=32, channels=3)
    assert ds.images.shape == (20, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert torch.equal(ds.images[:, 0], ds.images[:, 2])


def test_missing_fashion_mnist_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist") as err:
        load_fashion_mnist(root=tmp_path)
    assert "FASHION_MNIST_ROOT" in str(err.value)


def test_unknown_split(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("val", root=tmp_path)


REAL_ROOT = Path(os.environ.get("FASHION_MNIST_ROOT") or DEFAULT_FASHION_MNIST_ROOT)


@pytest.mark.skipif(
    not (REAL_ROOT / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST not installed at {REAL_ROOT} (apt-get install -y dataset-fashion-mnist)",
)
def test_real_fashion_mnist() -> None:
    train = load_fashion_mnist("train", root=REAL_ROOT)
    test = load_fashion_mnist("test", root=REAL_ROOT)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0


# --- image folders ------------------------------------------------------------------------------


def test_load_image_folder(tmp_path: Path) -> None:
    # created out of order, with mixed sizes, modes and suffix case, plus files that are not images
    for name, size, mode, suffix in [
        ("zebra", (20, 20), "RGB", ".png"),
        ("apple", (16, 16), "L", ".PNG"),
        ("apple", (40, 30), "RGBA", ".png"),
        ("mango", (16, 16), "RGB", ".bmp"),
    ]:
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        n = len(list(folder.iterdir()))
        Image.new(mode, size, color=(200,) * len(mode) if mode != "L" else 200).save(folder / f"{n}{suffix}")
    (tmp_path / "apple" / "notes.txt").write_text("not an image")
    (tmp_path / "README").write_text("a file at the top level is not a class")

    ds = load_image_folder(tmp_path, image_size=16, channels=1)
    assert ds.class_names == ["apple", "mango", "zebra"]
    assert ds.images.shape == (4, 1, 16, 16) and ds.images.dtype == torch.uint8
    assert ds.labels.tolist() == [0, 0, 1, 2]
    assert torch.all(ds.images == 200)  # a flat color survives conversion and bicubic resizing

    rgb = load_dataset(str(tmp_path), image_size=8, channels=3)
    assert rgb.images.shape == (4, 3, 8, 8) and rgb.image_size == 8 and rgb.channels == 3


def test_load_image_folder_keeps_pixels_when_no_resize(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    (tmp_path / "only").mkdir()
    Image.fromarray(pixels).save(tmp_path / "only" / "a.png")
    ds = load_image_folder(tmp_path, image_size=6, channels=3)
    assert torch.equal(ds.images[0], torch.from_numpy(pixels).permute(2, 0, 1))


def test_load_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no class subfolders"):
        load_image_folder(tmp_path, image_size=8, channels=1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        load_image_folder(tmp_path, image_size=8, channels=1)
    with pytest.raises(FileNotFoundError):
        load_image_folder(tmp_path / "missing", image_size=8, channels=1)
    with pytest.raises(ValueError, match="channels"):
        load_image_folder(tmp_path, image_size=8, channels=2)


# --- subsets and batches ------------------------------------------------------------------------


def test_subset_first_n() -> None:
    ds = toy_dataset()
    sub = ds.subset(n=4)
    assert torch.equal(sub.images, ds.images[:4]) and torch.equal(sub.labels, ds.labels[:4])
    assert sub.class_names == ds.class_names
    assert ds.subset() is ds


def test_subset_per_class_is_balanced_and_seeded() -> None:
    ds = toy_dataset()
    sub = ds.subset(per_class=3, seed=7)
    assert torch.bincount(sub.labels, minlength=3).tolist() == [3, 3, 3]
    # each picked image is a distinct source image, and keeps its own label
    source = sub.images[:, 0, 0, 0].long()
    assert len(set(source.tolist())) == 9
    assert torch.equal(ds.labels[source], sub.labels)
    assert torch.equal(ds.subset(per_class=3, seed=7).images, sub.images)
    picks = {tuple(ds.subset(per_class=2, seed=s).images[:, 0, 0, 0].tolist()) for s in range(5)}
    assert len(picks) > 1


def test_subset_errors() -> None:
    ds = toy_dataset()
    with pytest.raises(ValueError, match="fewer"):
        ds.subset(per_class=4)
    with pytest.raises(ValueError, match="not both"):
        ds.subset(n=2, per_class=1)
    with pytest.raises(ValueError):
        ds.subset(n=len(ds) + 1)


def test_batch_scales_to_minus_one_one() -> None:
    images = torch.tensor([0, 255, 127, 128], dtype=torch.uint8).view(4, 1, 1, 1).expand(4, 1, 2, 2).contiguous()
    ds = ImageDataset(images, torch.tensor([0, 1, 0, 1]), ["a", "b"])
    x, y = ds.batch(torch.tensor([1, 0, 3]))
    assert x.dtype == torch.float32 and x.shape == (3, 1, 2, 2)
    assert torch.all(x[0] == 1.0) and torch.all(x[1] == -1.0)
    assert torch.allclose(x[2], torch.tensor(128 / 127.5 - 1), rtol=0, atol=1e-6)
    assert y.tolist() == [1, 0, 1] and y.dtype == torch.long


def test_dataset_validates() -> None:
    with pytest.raises(ValueError, match="uint8"):
        ImageDataset(torch.zeros(2, 1, 4, 4), torch.zeros(2), ["a"])
    with pytest.raises(ValueError, match="labels"):
        ImageDataset(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1]), ["a"])
    with pytest.raises(ValueError, match="square"):
        _ = ImageDataset(torch.zeros(2, 1, 4, 5, dtype=torch.uint8), torch.zeros(2), ["a"]).image_size
