"""The image inputs of img2img and inpainting (`init_image`, `mask`), decoded and checked against a
model card before anything is queued or loaded.

Torch-free (Pillow only), shared by the HTTP API and the CLI like `contract.request`. An input is
normalized to one PNG of the model's size and channels (a mask to a black-and-white grayscale PNG):
that PNG is what the worker samples from and what the job's `request` identifies by its sha256.
By default an input of another size or channel count is refused (the client says what it meant);
with `resize` the service converts and resizes it instead and says so in the job's notes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import struct
import warnings
from dataclasses import dataclass, field

from PIL import Image

from contract.request import API, Vocabulary, invalid
from model_store.cards import ModelCard

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

MAX_INPUT_SIDE = 4096
"""Largest width or height of an input image, checked from the PNG header before any pixel is
decoded: a small body can declare a huge image (a decompression bomb)."""

MASK_THRESHOLD = 128
"""Mask pixels at or above this gray level (after conversion to grayscale) are regenerated."""

_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"})
_MODE_NAMES = {1: "grayscale (1 channel)", 3: "RGB (3 channels)"}


@dataclass(frozen=True)
class ImageInput:
    """One normalized input: a PNG of the model's size (and channels; a mask is 1-channel 0/255)."""

    png: bytes
    notes: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        """How a job's `request` names this input: the sha256 of the normalized PNG."""
        return "sha256:" + hashlib.sha256(self.png).hexdigest()

    @property
    def base64(self) -> str:
        return base64.b64encode(self.png).decode("ascii")


@dataclass(frozen=True)
class ImageInputs:
    """A request's image conditioning, normalized; both None for plain generation."""

    init_image: ImageInput | None = None
    mask: ImageInput | None = None
    notes: list[str] = field(default_factory=list)

    def refs(self) -> dict[str, str | None]:
        """The request echo's `init_image` and `mask`: sha256 references, or None."""
        return {"init_image": self.init_image.ref if self.init_image else None,
                "mask": self.mask.ref if self.mask else None}

    def encoded(self) -> dict[str, str]:
        """The inputs as base64 PNGs by field name, as the job record carries them to the worker."""
        out = {}
        if self.init_image is not None:
            out["init_image"] = self.init_image.base64
        if self.mask is not None:
            out["mask"] = self.mask.base64
        return out


def decode_base64_png(value: str, key: str, vocab: Vocabulary = API) -> bytes:
    """The PNG bytes of a base64 string (a `data:image/png;base64,` URL prefix is allowed)."""
    text = value.strip()
    if text.startswith("data:"):
        head, sep, text = text.partition(",")
        if not sep or not head.endswith(";base64"):
            raise invalid(vocab, key, "must be base64 PNG data or a data:image/png;base64 URL "
                                       f"(got a data URL starting {head[:40]!r})")
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise invalid(vocab, key, "must be a base64-encoded PNG (the text is not valid base64)") from None
    return data


def _resize_hint(vocab: Vocabulary) -> str:
    flag = vocab.names["resize"]
    return f"pass {flag}" if flag.startswith("-") else f"send {flag} true"


def _channels_of(mode: str) -> int:
    return 1 if mode in _GRAY_MODES else 3


def _open_png(data: bytes, key: str, vocab: Vocabulary) -> Image.Image:
    """The PNG in `data`, its header read and checked; pixels are decoded later."""
    if not data.startswith(PNG_SIGNATURE):
        raise invalid(vocab, key, "must be a PNG image (the data does not start with the PNG signature)")
    if len(data) >= 24 and data[12:16] == b"IHDR":
        # the size the header declares, read before any decoder sees the data
        w, h = struct.unpack(">II", data[16:24])
        if w > MAX_INPUT_SIDE or h > MAX_INPUT_SIDE:
            raise invalid(vocab, key, f"must be at most {MAX_INPUT_SIDE}x{MAX_INPUT_SIDE} pixels (got {w}x{h})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=["PNG"])
    except Exception as e:  # noqa: BLE001 - any decoder complaint is a bad input, never a 500
        raise invalid(vocab, key, f"is not a readable PNG ({type(e).__name__}: {e})") from None
    w, h = img.size
    if not (1 <= w <= MAX_INPUT_SIDE and 1 <= h <= MAX_INPUT_SIDE):
        raise invalid(vocab, key, f"must be at most {MAX_INPUT_SIDE}x{MAX_INPUT_SIDE} pixels (got {w}x{h})")
    return img


def _load(img: Image.Image, key: str, vocab: Vocabulary) -> Image.Image:
    try:
        img.load()
    except Exception as e:  # noqa: BLE001 - a truncated or corrupt PNG
        raise invalid(vocab, key, f"is not a readable PNG ({type(e).__name__}: {e})") from None
    return img


def _square(img: Image.Image, resample: Image.Resampling, side: int) -> tuple[Image.Image, str]:
    """Center-crop to a square (if needed), then resize to side x side; returns what it did."""
    w, h = img.size
    done = []
    if w != h:
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s))
        done.append(f"center-cropped from {w}x{h} to {s}x{s}")
    if img.size != (side, side):
        done.append(f"resized from {img.size[0]}x{img.size[1]} to {side}x{side}")
        img = img.resize((side, side), resample)
    return img, " and ".join(done)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _flatten_alpha(img: Image.Image) -> Image.Image | None:
    """`img` with its transparency composited onto black (the training images' background), or None
    when it has no transparency or is fully opaque. Pillow's plain convert would drop the alpha and
    show whatever colour the transparent pixels happen to store."""
    if "A" not in img.getbands() and "transparency" not in img.info:
        return None
    gray = _channels_of(img.mode) == 1 and img.mode not in ("I", "I;16", "I;16B", "I;16L", "F")
    rgba = img.convert("LA" if gray else "RGBA")
    alpha = rgba.getchannel("A")
    if alpha.getextrema()[0] == 255:
        return None
    flat = Image.new("L" if gray else "RGB", img.size, 0)
    flat.paste(rgba.convert("L" if gray else "RGB"), mask=alpha)
    return flat


def _to_mode(img: Image.Image, channels: int) -> Image.Image:
    mode = "L" if channels == 1 else "RGB"
    if img.mode in ("I", "I;16", "I;16B", "I;16L") and mode == "L":
        # 16-bit grayscale: scale to 8 bits rather than clip (Pillow's convert clips at 255)
        return img.point(lambda v: v / 257).convert("L")
    return img.convert(mode)


def normalize_init_image(data: bytes, card: ModelCard, resize: bool = False, vocab: Vocabulary = API) -> ImageInput:
    """`init_image` as a PNG of the model's size and channels. Without `resize`, another size or
    channel count is refused (naming the field); with it, the image is converted, center-cropped
    to a square and resized (Lanczos), with a note saying so."""
    key, side, channels = "init_image", card.image_size, card.channels
    img = _open_png(data, key, vocab)
    w, h = img.size
    have = _channels_of(img.mode)
    if not resize and ((w, h) != (side, side) or have != channels):
        raise invalid(vocab, key, f"must be a {side}x{side} {_MODE_NAMES[channels]} PNG for model {card.ref} "
                                   f"(got {w}x{h} {_MODE_NAMES[have]}); {_resize_hint(vocab)} to have "
                                   "it converted and resized")
    img = _load(img, key, vocab)
    notes = []
    flat = _flatten_alpha(img)
    if flat is not None:
        img = flat
        notes.append("init_image's transparent pixels were composited onto black, the training images' background")
    if have != channels:
        notes.append(f"init_image was converted from {_MODE_NAMES[have]} to {_MODE_NAMES[channels]}")
    img = _to_mode(img, channels)
    img, what = _square(img, Image.Resampling.LANCZOS, side)
    if what:
        notes.append(f"init_image was {what} for model {card.ref}")
    return ImageInput(_png(img), tuple(notes))


def normalize_mask(data: bytes, card: ModelCard, init_size: tuple[int, int], resize: bool = False,
                   vocab: Vocabulary = API) -> ImageInput:
    """`mask` as a black-and-white grayscale PNG of the model's size: pixels of gray level >=
    MASK_THRESHOLD (white) are regenerated, the rest (black) kept. It must have the init image's
    size; with `resize` it is then cropped and resized as that image was (nearest neighbour, so that
    it stays black and white)."""
    key, side = "mask", card.image_size
    img = _open_png(data, key, vocab)
    if img.size != init_size:
        raise invalid(vocab, key, f"must have the size of {vocab.names['init_image']}, {init_size[0]}x{init_size[1]} "
                                   f"(got {img.size[0]}x{img.size[1]})")
    if not resize and img.size != (side, side):
        raise invalid(vocab, key, f"must be {side}x{side} for model {card.ref} (got {img.size[0]}x{img.size[1]})")
    img = _load(img, key, vocab)
    gray = _to_mode(img, 1).point(lambda v: 255 if v >= MASK_THRESHOLD else 0)
    gray, what = _square(gray, Image.Resampling.NEAREST, side)
    notes = (f"mask was {what} for model {card.ref}",) if what else ()
    return ImageInput(_png(gray), notes)


def png_size(data: bytes, key: str, vocab: Vocabulary = API) -> tuple[int, int]:
    """Width and height from a PNG's header (checked as `_open_png` checks it)."""
    return _open_png(data, key, vocab).size


def resolve_image_inputs(card: ModelCard, init_image: bytes | None, mask: bytes | None, *, strength: float,
                         resample_steps: int, resize: bool = False, vocab: Vocabulary = API) -> ImageInputs:
    """Check how the image fields go together, then normalize each input; InvalidField names the
    field at fault. `strength` and `resample_steps` must already be in range (`contract.request`)."""
    n = vocab.names
    if mask is not None and init_image is None:
        raise invalid(vocab, "mask", f"needs {n['init_image']}: the kept region comes from it")
    if init_image is None and strength != 1:
        raise invalid(vocab, "strength", f"needs {n['init_image']} (got {strength}; strength 1 is plain generation)")
    if mask is not None and card.space == "latent":
        raise invalid(vocab, "mask", f"inpainting is not supported for model {card.ref}: it samples in a VAE's latent "
                                     "space, where a pixel mask has no exact counterpart; img2img (init_image with "
                                     "strength) is")
    if mask is None and resample_steps != 1:
        raise invalid(vocab, "resample_steps", f"needs {n['mask']}: it resamples inpainting steps "
                                                f"(got {resample_steps})")
    if init_image is None:
        return ImageInputs()
    init = normalize_init_image(init_image, card, resize, vocab)
    m = None if mask is None else normalize_mask(mask, card, png_size(init_image, "init_image", vocab), resize, vocab)
    notes = list(init.notes) + (list(m.notes) if m else [])
    return ImageInputs(init, m, notes)
