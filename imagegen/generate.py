"""`imagegen generate`: sample images from a stored generator into PNG files, with a JSON summary.

Flags mirror the fields of `POST /generate` (spelled with dashes), with the same defaults and
ranges; every check runs before torch loads a model. `--init-image` (img2img, with `--strength`) and
`--mask` (inpainting, with `--resample-steps`) are PNG files, normalized and checked by
`imagegen.image_inputs` exactly as the API checks its base64 fields (`--resize` converts and resizes
an image of another size or channel count instead of refusing it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from diffusion.names import GUIDANCE_KINDS, SAMPLERS
from imagegen.device import DEVICES, check_device
from imagegen.errors import UsageError
from imagegen.image_inputs import ImageInputs, resolve_image_inputs
from imagegen.model_choice import DEFAULT_MODEL, pick_generator
from imagegen.settings import CLI, FALLBACK_DEFAULTS, MAX_IMAGES, GenerateSettings, resolve_settings
from model_store import ModelCard, ModelStore
from model_store.errors import InvalidModelNameError, UnknownModelError

GRID_COLUMNS = 8
"""Most images per row of grid.png."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `imagegen generate`."""
    p.add_argument("--model", metavar="NAME[@VERSION]",
                   help=f"generator to sample from (default: {DEFAULT_MODEL!r} if the store has it, "
                        "else the store's only generator)")
    p.add_argument("--class-label", required=True, metavar="C",
                   help="class index 0..K-1, a class name from the model card (case-insensitive, e.g. "
                        "'sneaker', 'Ankle boot'), or 'none' for unconditional")
    p.add_argument("--num-images", type=int, default=None, metavar="N",
                   help=f"images to generate, 1..{MAX_IMAGES} (default: 4)")
    p.add_argument("--guidance", choices=list(GUIDANCE_KINDS), default=None,
                   help="'cfg' (classifier-free) or 'classifier' (the gradient of the model's linked "
                        "noise-aware classifier) (default: cfg)")
    p.add_argument("--guidance-scale", type=float, default=None, metavar="S",
                   help="guidance scale >= 0; for cfg 0 is unconditional, 1 plain conditional, >1 sharper "
                        f"(default: the model card's, else {FALLBACK_DEFAULTS['guidance_scale']})")
    p.add_argument("--sampler", choices=list(SAMPLERS), default=None,
                   help=f"sampler (default: the model card's, else {FALLBACK_DEFAULTS['sampler']})")
    p.add_argument("--steps", type=int, default=None, metavar="K",
                   help=f"sampler steps, 1..1000 (default: the model card's, else {FALLBACK_DEFAULTS['steps']})")
    p.add_argument("--eta", type=float, default=None, metavar="E",
                   help="DDIM stochasticity 0..1, only for --sampler ddim (default: 0)")
    p.add_argument("--seed", type=int, default=None, metavar="S",
                   help="seed 0..2**63-1; image i uses seed + i (default: random, printed in the summary)")
    add_image_arguments(p)
    p.add_argument("--device", choices=list(DEVICES), default="auto",
                   help="where to sample; auto picks cuda when available (default: auto)")
    p.add_argument("--store", metavar="DIR", default=None,
                   help="model store root (default: $MODEL_STORE, else the package's models/ directory)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for 0.png .. N-1.png and grid.png (created if missing)")


def add_image_arguments(p: argparse.ArgumentParser) -> None:
    """The img2img and inpainting flags (`imagegen submit` has the same ones, checked by the server)."""
    p.add_argument("--init-image", metavar="PATH", default=None,
                   help="img2img / inpainting: a PNG to start from, of the model's size and channels "
                        "(else see --resize)")
    p.add_argument("--strength", type=float, default=None, metavar="S",
                   help="img2img: 0..1, how far --init-image is noised before denoising; 0 returns it, "
                        "1 ignores it (default: 1)")
    p.add_argument("--mask", metavar="PATH", default=None,
                   help="inpainting: a PNG of --init-image's size, white = regenerate, black = keep "
                        "(gray thresholded at 128); needs --init-image")
    p.add_argument("--resample-steps", type=int, default=None, metavar="N",
                   help="inpainting: RePaint resampling per step, 1..10; needs --mask (default: 1)")
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


def _check_classifier_present(store: ModelStore, card: ModelCard) -> None:
    link = card.links["guidance_classifier"]
    try:
        linked = store.resolve(link)
    except (UnknownModelError, InvalidModelNameError) as e:
        raise UsageError(f"--guidance classifier: {card.ref} links the guidance classifier {link!r}, "
                         f"which the store cannot provide: {e}") from None
    if linked.kind != "guidance-classifier":
        raise UsageError(f"--guidance classifier: {card.ref} links {linked.ref}, a {linked.kind}, "
                         "not a guidance-classifier")


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
    spec = SampleSpec(class_label=settings.class_label, guidance_scale=settings.guidance_scale,
                      guidance=settings.guidance, sampler=settings.sampler, steps=settings.steps,
                      eta=settings.eta, seed=settings.seed, strength=settings.strength,
                      resample_steps=settings.resample_steps)
    specs = specs_for_request(spec, settings.num_images)
    init_images, masks = input_tensors(inputs or ImageInputs(), card.channels, len(specs))

    # img2img runs only the tail of the subsequence that its strength selects
    bar = tqdm(total=strength_steps(settings.steps, settings.strength), desc="sampling", unit="step", file=sys.stderr,
               disable=not sys.stderr.isatty(), dynamic_ncols=True)

    def on_step(state) -> None:
        # every image of one request walks the same subsequence; min is the slowest
        bar.update(min(state.index) - bar.n)

    started = time.perf_counter()
    try:
        x = sample(gen.model, gen.schedule, specs, gen.image_shape, gen.num_classes,
                   classifier=gen.classifier, device=device, callback=on_step, clip_x0=gen.clip_x0,
                   init_images=init_images, masks=masks)
        if device == "cuda":
            torch.cuda.synchronize()
    finally:
        bar.close()
    seconds = time.perf_counter() - started

    x = x.clamp(-1, 1).cpu()
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
    settings = resolve_settings(
        card, class_label=args.class_label, num_images=args.num_images, guidance=args.guidance,
        guidance_scale=args.guidance_scale, sampler=args.sampler, steps=args.steps, eta=args.eta, seed=args.seed,
        strength=args.strength, resample_steps=args.resample_steps,
    )
    inputs = resolve_image_inputs(card, read_input(args.init_image, "--init-image"), read_input(args.mask, "--mask"),
                                  strength=settings.strength, resample_steps=settings.resample_steps,
                                  resize=args.resize, vocab=CLI)
    if settings.guidance == "classifier":
        _check_classifier_present(store, card)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    device = check_device(args.device)

    result = generate_images(store, card, settings, device, out, inputs)
    # the settings as the API's request echo has them: inputs named by the sha256 of their normalized PNG
    summary = {"model": card.ref, "settings": {**settings.to_dict(), **inputs.refs()}, "seeds": settings.seeds,
               "notes": inputs.notes, **result}
    print(json.dumps(summary))
    return 0
