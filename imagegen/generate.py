"""`imagegen generate`: sample images from a stored generator into PNG files, with a JSON summary.

Flags mirror the fields of `POST /generate` (spelled with dashes), with the same defaults and
ranges; every check runs before torch loads a model.
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
from imagegen.model_choice import DEFAULT_MODEL, pick_generator
from imagegen.settings import FALLBACK_DEFAULTS, MAX_IMAGES, GenerateSettings, resolve_settings
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
    p.add_argument("--device", choices=list(DEVICES), default="auto",
                   help="where to sample; auto picks cuda when available (default: auto)")
    p.add_argument("--store", metavar="DIR", default=None,
                   help="model store root (default: $MODEL_STORE, else the package's models/ directory)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for 0.png .. N-1.png and grid.png (created if missing)")


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


def generate_images(store: ModelStore, card: ModelCard, settings: GenerateSettings, device: str,
                    out: Path) -> dict[str, Any]:
    """Sample `settings` from `card`'s generator on `device`, write the PNGs into `out`, and return
    the summary (the part of it that is not the request)."""
    import torch
    from tqdm import tqdm

    from diffusion.images import save_grid, save_png
    from diffusion.sampling import SampleSpec, sample, specs_for_request
    from model_store.loading import load_generator

    # fp32 on every device: a small model gains little from fp16 and the classifier gradient wants fp32
    gen = load_generator(store, card.ref, device=device, dtype=torch.float32,
                         with_classifier=settings.guidance == "classifier")
    spec = SampleSpec(class_label=settings.class_label, guidance_scale=settings.guidance_scale,
                      guidance=settings.guidance, sampler=settings.sampler, steps=settings.steps,
                      eta=settings.eta, seed=settings.seed)
    specs = specs_for_request(spec, settings.num_images)

    bar = tqdm(total=settings.steps, desc="sampling", unit="step", file=sys.stderr,
               disable=not sys.stderr.isatty(), dynamic_ncols=True)

    def on_step(state) -> None:
        # every image of one request walks the same subsequence; min is the slowest
        bar.update(min(state.index) - bar.n)

    started = time.perf_counter()
    try:
        x = sample(gen.model, gen.schedule, specs, gen.image_shape, gen.num_classes,
                   classifier=gen.classifier, device=device, callback=on_step, clip_x0=gen.clip_x0)
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
    )
    if settings.guidance == "classifier":
        _check_classifier_present(store, card)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    device = check_device(args.device)

    result = generate_images(store, card, settings, device, out)
    summary = {"model": card.ref, "settings": settings.to_dict(), "seeds": settings.seeds, **result}
    print(json.dumps(summary))
    return 0
