"""`imagegen generate`: sample images from a stored generator into PNG files, with a JSON summary.

Flags mirror the fields of `POST /generate` (spelled with dashes), with the same defaults and
ranges; every check runs before torch loads a model. `--init-image` (img2img, with `--strength`) and
`--mask` (inpainting, with `--resample-steps`) are PNG files, normalized and checked by
`contract.image_inputs` exactly as the API checks its base64 fields (`--resize` converts and resizes
an image of another size or channel count instead of refusing it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from contract.errors import UsageError
from contract.image_inputs import ImageInputs, resolve_image_inputs
from contract.models import DEFAULT_MODEL, pick_generator
from contract.request import CLI, SETTINGS, GenerateSettings, resolve_settings
from imagegen.device import DEVICES, check_device
from imagegen.request_flags import add_setting_arguments, given_settings
from model_store import ModelCard, ModelStore

GRID_COLUMNS = 8
"""Most images per row of grid.png."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `imagegen generate`."""
    p.add_argument("--model", metavar="NAME[@VERSION]",
                   help=f"generator to sample from (default: {DEFAULT_MODEL!r} if the store has it, "
                        "else the store's only generator)")
    add_setting_arguments(p, local=True)
    add_image_arguments(p)
    p.add_argument("--device", choices=list(DEVICES), default="auto",
                   help="where to sample; auto picks cuda when available (default: auto)")
    p.add_argument("--store", metavar="DIR", default=None,
                   help="model store root (default: $MODEL_STORE, else the package's models/ directory)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for 0.png .. N-1.png and grid.png (created if missing)")


def add_image_arguments(p: argparse.ArgumentParser) -> None:
    """The img2img and inpainting inputs (`imagegen submit` has the same ones, checked by the server);
    their settings, --strength and --resample-steps, are request settings."""
    p.add_argument("--init-image", metavar="PATH", default=None,
                   help="img2img / inpainting: a PNG to start from, of the model's size and channels "
                        "(else see --resize)")
    p.add_argument("--mask", metavar="PATH", default=None,
                   help="inpainting: a PNG of --init-image's size, white = regenerate, black = keep "
                        "(gray thresholded at 128); needs --init-image")
    p.add_argument("--resize", action="store_true",
                   help="convert, center-crop and resize an --init-image (and --mask) of another size or "
                        "channel count to the model's, instead of refusing it (the summary's notes say what "
                        "was done)")


def read_input(path: str | None, flag: str) -> bytes | None:
    """The bytes of the file a flag names (None when the flag is absent); UsageError naming the flag
    when it cannot be read."""
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise UsageError(f"{flag} {path}: cannot read the file ({e.strerror or type(e).__name__})") from None


def input_tensors(inputs: ImageInputs, channels: int, n: int) -> tuple[list | None, list | None]:
    """The per-image `init_images` and `masks` arguments of `diffusion.sampling.sample` for `n`
    images sharing one normalized input: the image in [-1, 1] [C, H, W], the mask [1, H, W] with 1 =
    regenerate."""
    from diffusion.images import from_png, mask_from_png

    init = None if inputs.init_image is None else [from_png(inputs.init_image.png, channels)] * n
    mask = None if inputs.mask is None else [mask_from_png(inputs.mask.png)] * n
    return init, mask


def generate_images(store: ModelStore, card: ModelCard, settings: GenerateSettings, device: str,
                    out: Path, inputs: ImageInputs | None = None) -> dict[str, Any]:
    """Sample `settings` from `card`'s generator on `device` (from `inputs` for img2img and
    inpainting), write the PNGs into `out`, and return the summary (the part of it that is not the
    request)."""
    import torch
    from tqdm import tqdm

    from diffusion.conditioning import strength_steps
    from diffusion.images import save_grid, save_png
    from diffusion.sampling import SampleSpec, sample, specs_for_request
    from model_store.loading import load_generator

    # fp32 on every device: a small model gains little from fp16 and the classifier gradient wants fp32
    gen = load_generator(store, card.ref, device=device, dtype=torch.float32,
                         with_classifier=settings.guidance == "classifier")
    specs = specs_for_request(SampleSpec(**settings.sampled()), settings.num_images)
    init_images, masks = input_tensors(inputs or ImageInputs(), card.channels, len(specs))
    if init_images is not None:  # a latent model starts from the VAE's encoding of the input
        init_images = [gen.encode(init_images[0].unsqueeze(0).to(device))[0]] * len(specs)

    # img2img runs only the tail of the subsequence that its strength selects
    bar = tqdm(total=strength_steps(settings.steps, settings.strength), desc="sampling", unit="step", file=sys.stderr,
               disable=not sys.stderr.isatty(), dynamic_ncols=True)

    def on_step(state) -> None:
        # every image of one request walks the same subsequence; min is the slowest
        bar.update(min(state.index) - bar.n)

    started = time.perf_counter()
    try:
        x = sample(gen.model, gen.schedule, specs, gen.sample_shape, gen.num_classes,
                   classifier=gen.classifier, device=device, callback=on_step, clip_x0=gen.clip_x0,
                   init_images=init_images, masks=masks)
        if device == "cuda":
            torch.cuda.synchronize()
    finally:
        bar.close()
    seconds = time.perf_counter() - started

    x = gen.decode(x).clamp(-1, 1).cpu()
    out.mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(len(specs)):
        path = out / f"{i}.png"
        save_png(x[i], path)
        images.append(str(path))
    grid = out / "grid.png"
    save_grid(x, grid, nrow=min(settings.num_images, GRID_COLUMNS))
    return {"images": images, "grid": str(grid), "seconds": round(seconds, 3), "device": device}


def run(args: argparse.Namespace) -> int:
    """Validate, sample, write the PNGs and print the JSON summary to stdout."""
    store = ModelStore(args.store)
    card = pick_generator(store, args.model)
    settings = resolve_settings(card, store=store, **given_settings(args))
    inputs = resolve_image_inputs(card, read_input(args.init_image, "--init-image"), read_input(args.mask, "--mask"),
                                  strength=settings.strength, resample_steps=settings.resample_steps,
                                  resize=args.resize, vocab=CLI)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    device = check_device(args.device)

    result = generate_images(store, card, settings, device, out, inputs)
    # the settings as the API's request echo has them: inputs named by the sha256 of their normalized PNG
    # the settings a local run has (previews exist only in the service)
    local = {k: v for k, v in settings.to_dict().items() if k not in SETTINGS or SETTINGS[k].local}
    summary = {"model": card.ref, "settings": {**local, **inputs.refs()}, "seeds": settings.seeds,
               "notes": inputs.notes, **result}
    print(json.dumps(summary))
    return 0
