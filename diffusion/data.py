"""Training data: IDX files, Fashion-MNIST, folders of class-labelled images, as uint8 tensors."""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from diffusion.images import from_uint8

FASHION_MNIST_CLASSES: list[str] = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
"""Fashion-MNIST label names, indexed by label."""

DEFAULT_FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
"""Where the dataset-fashion-mnist package puts the four IDX files; env FASHION_MNIST_ROOT overrides."""

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})
"""File suffixes (compared lower-cased) that load_image_folder reads."""

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_FASHION_SPLITS = {"train": "train", "test": "t10k"}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Parse an IDX file (gzipped if its name ends in .gz) into a native-endian array of its dims."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise ValueError(f"{path}: not a readable gzip file ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: bad IDX magic {raw[:4].hex()!r} (want 00 00 <dtype> <ndim>)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX dtype code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header})")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: IDX data is {len(raw) - header} bytes, dims {dims} of {dtype.name} need {expected}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    # astype copies, so the result is writable (torch.from_numpy warns on a read-only buffer)
    return data.astype(dtype.newbyteorder("="))


@dataclass
class ImageDataset:
    images: torch.Tensor  # uint8 [N, C, H, W], pixels as stored; scaled to [-1, 1] only per batch
    labels: torch.Tensor  # long [N], class indices into class_names
    class_names: list[str]  # label -> name

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}"
            )
        self.labels = self.labels.long()
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must be [N={self.images.shape[0]}], got {tuple(self.labels.shape)}")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise ValueError(f"labels must lie in 0..{len(self.class_names) - 1}")

    @property
    def num_classes(self) -> int:
        """Number of classes (len(class_names)), whether or not each has images here."""
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        """Side H of the square images."""
        h, w = self.images.shape[-2:]
        if h != w:
            raise ValueError(f"images are {h}x{w}, not square")
        return h

    @property
    def channels(self) -> int:
        """C: 1 for grayscale, 3 for RGB."""
        return self.images.shape[1]

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, n: int | None = None, per_class: int | None = None, seed: int = 0) -> ImageDataset:
        """The first n images, or per_class random images of every class (seeded); neither: all."""
        if n is not None and per_class is not None:
            raise ValueError("give n or per_class, not both")
        if n is not None:
            if not 0 <= n <= len(self):
                raise ValueError(f"n={n} is outside 0..{len(self)}")
            return ImageDataset(self.images[:n], self.labels[:n], list(self.class_names))
        if per_class is None:
            return self
        if per_class < 0:
            raise ValueError(f"per_class must be >= 0, got {per_class}")
        gen = torch.Generator().manual_seed(seed)
        picks = []
        for c in range(self.num_classes):
            members = (self.labels == c).nonzero().flatten()
            if len(members) < per_class:
                raise ValueError(
                    f"class {c} ({self.class_names[c]!r}) has {len(members)} images, fewer than {per_class}"
                )
            picks.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
        # sorted, so the subset keeps the source order rather than grouping images by class
        index = torch.cat(picks).sort().values
        return ImageDataset(self.images[index], self.labels[index], list(self.class_names))

    def batch(
        self, indices: torch.Tensor, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images at indices as float [B, C, H, W] in [-1, 1] (u8 / 127.5 - 1), and their labels."""
        indices = indices.to(self.images.device)
        # move uint8 before converting: a quarter of the bytes of float32 cross to the device
        images = from_uint8(self.images[indices].to(device))
        return images, self.labels[indices].to(device)


def _fashion_mnist_root(root: Path | str | None) -> Path:
    if root is not None:
        return Path(root)
    return Path(os.environ.get("FASHION_MNIST_ROOT") or DEFAULT_FASHION_MNIST_ROOT)


def _find_idx(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(
        f"Fashion-MNIST file {stem}.gz not found in {root}: install it with "
        f"`apt-get install -y dataset-fashion-mnist`, or set FASHION_MNIST_ROOT to a folder holding "
        f"the four IDX files (train/t10k images and labels)"
    )


def load_fashion_mnist(split: str = "train", root: Path | str | None = None) -> ImageDataset:
    """Fashion-MNIST split "train" (60000) or "test" (10000) as uint8 [N, 1, 28, 28] with labels 0..9."""
    if split not in _FASHION_SPLITS:
        raise ValueError(f"unknown Fashion-MNIST split {split!r}; known: {sorted(_FASHION_SPLITS)}")
    folder = _fashion_mnist_root(root)
    prefix = _FASHION_SPLITS[split]
    images_path = _find_idx(folder, f"{prefix}-images-idx3-ubyte")
    labels_path = _find_idx(folder, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"{images_path}: want uint8 [N, H, W] images, got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{labels_path}: want {len(images)} labels, got shape {labels.shape}")
    return ImageDataset(
        images=torch.from_numpy(images).unsqueeze(1),
        labels=torch.from_numpy(labels).long(),
        class_names=list(FASHION_MNIST_CLASSES),
    )


def _read_image(path: Path, mode: str, image_size: int) -> np.ndarray:
    with Image.open(path) as img:
        img = img.convert(mode)
        if img.size != (image_size, image_size):
            img = img.resize((image_size, image_size), Image.Resampling.BICUBIC)
        pixels = np.asarray(img)
    return pixels.reshape(image_size, image_size, -1)


def load_image_folder(root: Path | str, image_size: int, channels: int) -> ImageDataset:
    """One subfolder per class (sorted names are the classes); images converted and resized to square."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise ValueError(f"{root} has no class subfolders (want one folder of images per class)")
    mode = "L" if channels == 1 else "RGB"
    images, labels = [], []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            # an empty class would get a label no image carries, and break per-class sampling
            raise ValueError(f"class folder {class_dir} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        images += [_read_image(f, mode, image_size) for f in files]
        labels += [label] * len(files)
    return ImageDataset(
        images=torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
        labels=torch.tensor(labels, dtype=torch.long),
        class_names=[d.name for d in class_dirs],
    )


def _conform(images: torch.Tensor, image_size: int, channels: int, chunk: int = 4096) -> torch.Tensor:
    """Resize (bicubic) and widen grayscale to RGB, in chunks so 60000 images stay small in memory."""
    if images.shape[1] not in (1, channels):
        raise ValueError(f"cannot convert {images.shape[1]}-channel images to {channels} channels")
    if images.shape[-1] != image_size or images.shape[-2] != image_size:
        parts = []
        for part in images.split(chunk):
            x = F.interpolate(part.float(), size=(image_size, image_size), mode="bicubic", antialias=True)
            parts.append(x.round_().clamp_(0, 255).to(torch.uint8))
        images = torch.cat(parts)
    return images.expand(-1, channels, -1, -1).contiguous()


def load_dataset(spec: str, image_size: int, channels: int) -> ImageDataset:
    """A dataset by spec: "fashion-mnist[:train|:test]", else a path to an image folder."""
    name, _, split = spec.partition(":")
    if name != "fashion-mnist":
        return load_image_folder(spec, image_size, channels)
    ds = load_fashion_mnist(split or "train")
    if (ds.image_size, ds.channels) != (image_size, channels):
        if channels not in (1, 3) or image_size < 1:
            raise ValueError(f"want channels 1 or 3 and image_size >= 1, got {channels}, {image_size}")
        ds = ImageDataset(_conform(ds.images, image_size, channels), ds.labels, ds.class_names)
    return ds
