"""`imagegen train`: one flag per `TrainConfig` field, training, then export of the EMA weights.

The flags are generated from the dataclass (name, type, default, `metadata["help"]`,
`metadata["choices"]`), so a field added to `TrainConfig` is a flag without touching this file.
Building them imports torch, which is why the CLI builds only the chosen command's flags.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from dataclasses import MISSING, Field
from datetime import UTC
from typing import Any

from contract.errors import UsageError
from contract.models import resolve_kind
from contract.request import check_defaults
from imagegen.device import check_device
from model_store import ModelStore, check_name
from model_store.errors import InvalidModelNameError

_TYPES: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool}

# (field, allowed, test): ranges TrainConfig itself does not check, refused before any data loads
_RULES: list[tuple[str, str, Callable[[Any], bool]]] = [
    ("steps", ">= 1", lambda v: v >= 1),
    ("batch_size", ">= 1", lambda v: v >= 1),
    ("lr", "a finite number > 0", lambda v: math.isfinite(v) and v > 0),
    ("weight_decay", ">= 0", lambda v: v >= 0),
    ("warmup_steps", ">= 0", lambda v: v >= 0),
    ("grad_clip", ">= 0", lambda v: v >= 0),
    ("p_uncond", "between 0 and 1", lambda v: 0 <= v <= 1),
    ("ema_decay", "between 0 and 1", lambda v: 0 <= v <= 1),
    ("limit", ">= 0", lambda v: v >= 0),
    ("image_size", ">= 1", lambda v: v >= 1),
    ("channels", "1 (grayscale) or 3 (RGB)", lambda v: v in (1, 3)),
    ("sample_every", ">= 0", lambda v: v >= 0),
    ("checkpoint_every", ">= 0", lambda v: v >= 0),
    ("log_every", ">= 1", lambda v: v >= 1),
    ("max_minutes", ">= 0", lambda v: v >= 0),
]


def _extra_help() -> dict[str, str]:
    """What a field's own help leaves out but a person at the prompt needs."""
    from diffusion.data import DEFAULT_FASHION_MNIST_ROOT
    from diffusion.train import ARCHITECTURES

    return {
        "preset": "".join(f"; {task}: {', '.join(presets)}" for task, (presets, _) in ARCHITECTURES.items()),
        "data": f"; fashion-mnist is read from {DEFAULT_FASHION_MNIST_ROOT} (env FASHION_MNIST_ROOT overrides)",
    }


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _field_type(f: Field) -> type:
    # `from __future__ import annotations` leaves the annotation as a string
    if isinstance(f.type, str):
        return _TYPES.get(f.type, type(f.default))
    return f.type


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `imagegen train`: every TrainConfig field, then the export flags."""
    from diffusion.train import config_fields

    group = p.add_argument_group("training", "one flag per field of diffusion.train.TrainConfig")
    extra_help = _extra_help()
    for f in config_fields():
        # argparse %-formats help strings
        help_text = (f.metadata.get("help", f.name) + extra_help.get(f.name, "")).replace("%", "%%")
        kind = _field_type(f)
        default = f.default if f.default is not MISSING else f.default_factory()
        if kind is bool:
            # BooleanOptionalAction appends "(default: ...)" itself
            group.add_argument(_flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction,
                               default=default, help=help_text)
            continue
        extra = {"choices": list(f.metadata["choices"])} if "choices" in f.metadata else {"metavar": f.name.upper()}
        group.add_argument(_flag(f.name), dest=f.name, type=kind, default=default,
                           help=f"{help_text} (default: %(default)s)", **extra)

    ex = p.add_argument_group("export", "save the EMA weights (fp16) into the model store when training ends")
    ex.add_argument("--export-name", metavar="NAME", default=None,
                    help="store the trained model as the next version of NAME (default: no export)")
    ex.add_argument("--store", metavar="DIR", default=None,
                    help="model store root (default: $MODEL_STORE, else the package's models/ directory)")
    ex.add_argument("--guidance-classifier", metavar="NAME[@VERSION]", default=None,
                    help="generator only: the stored guidance classifier to link in the card's links "
                         "(pinned to its version)")
    ex.add_argument("--defaults-json", metavar="JSON", default=None,
                    help='generator only: sampling defaults for the card, e.g. \'{"steps": 25}\'; keys given '
                         "override sampler=ddim steps=50 guidance_scale=3.0 guidance=cfg")


def _check_config(cfg) -> None:
    from diffusion.train import ARCHITECTURES

    for name, allowed, ok in _RULES:
        value = getattr(cfg, name)
        if not ok(value):
            raise UsageError(f"{_flag(name)} must be {allowed} (got {value})")
    presets = ARCHITECTURES[cfg.task][0]
    if cfg.preset not in presets:
        raise UsageError(f"--preset must be one of {', '.join(presets)} for --task {cfg.task} (got {cfg.preset!r})")
    base = presets[cfg.preset]
    try:
        # the architecture checks its own shape constraints (e.g. the side divides by 2**levels)
        type(base)(**{**base.to_dict(), "image_size": cfg.image_size, "in_channels": cfg.channels})
    except ValueError as e:
        raise UsageError(f"--image-size {cfg.image_size} does not fit --preset {cfg.preset}: {e}") from None


def _check_export(args: argparse.Namespace, task: str, store: ModelStore) -> tuple[dict | None, dict[str, str]]:
    """The card defaults and links the export flags ask for, checked."""
    if args.export_name is not None:
        try:
            check_name(args.export_name)
        except InvalidModelNameError as e:
            raise UsageError(f"--export-name: {e}") from None
    for flag, value in (("--defaults-json", args.defaults_json), ("--guidance-classifier", args.guidance_classifier)):
        if value is None:
            continue
        if task != "generator":
            raise UsageError(f"{flag} is only for --task generator (got --task {task})")
        if args.export_name is None:
            raise UsageError(f"{flag} goes into the exported card: add --export-name")
    defaults = None
    if args.defaults_json is not None:
        try:
            parsed = json.loads(args.defaults_json)
        except json.JSONDecodeError as e:
            raise UsageError(f"--defaults-json is not valid JSON: {e}") from None
        defaults = check_defaults(parsed, "--defaults-json")
    links: dict[str, str] = {}
    if args.guidance_classifier is not None:
        linked = resolve_kind(store, args.guidance_classifier, "guidance-classifier", "--guidance-classifier")
        # pinned: a later version of the classifier must not silently change this generator's guidance
        links["guidance_classifier"] = linked.ref
    return defaults, links


def _init_weights(store: ModelStore, cfg) -> tuple[object | None, dict | None]:
    """The card and sha256-checked weights `--init-from` names (pinned to its version in `cfg`),
    or (None, None) for a random init."""
    if not cfg.init_from:
        return None, None
    from imagegen.export import TASK_KINDS

    card = resolve_kind(store, cfg.init_from, TASK_KINDS[cfg.task][0], "--init-from")
    arch = card.architecture.get("config", {})
    if card.training.get("preset") not in (None, cfg.preset):
        raise UsageError(f"--init-from {card.ref} is preset {card.training['preset']!r}, "
                         f"but --preset is {cfg.preset!r}")
    if (arch.get("image_size"), arch.get("in_channels")) not in ((None, None), (cfg.image_size, cfg.channels)):
        raise UsageError(f"--init-from {card.ref} is {arch['image_size']}x{arch['image_size']}x{arch['in_channels']}, "
                         f"but --image-size/--channels give {cfg.image_size}x{cfg.image_size}x{cfg.channels}")
    if card.schedule and card.schedule.get("kind") != cfg.schedule:
        raise UsageError(f"--init-from {card.ref} was trained with the {card.schedule.get('kind')} schedule, "
                         f"but --schedule is {cfg.schedule!r}")
    from model_store.weights import load_tensors

    _, tensors = load_tensors(store, card)
    cfg.init_from = card.ref  # pinned: a resumed run must start from the same weights
    return card, tensors


def _check_link_fits(store: ModelStore, links: dict[str, str], dataset) -> None:
    ref = links.get("guidance_classifier")
    if ref is None:
        return
    linked = store.resolve(ref)
    want = (list(dataset.class_names), dataset.image_size, dataset.channels)
    have = (linked.class_names, linked.image_size, linked.channels)
    if have != want:
        raise UsageError(f"--guidance-classifier {ref} was trained on classes {have[0]} at "
                         f"{have[1]}x{have[1]}x{have[2]}, but --data gives {want[0]} at {want[1]}x{want[1]}x{want[2]}")


def run(args: argparse.Namespace) -> int:
    """Check the flags, train, export when asked, and print a JSON summary to stdout."""
    from diffusion.data import load_dataset
    from diffusion.train import TrainConfig, config_fields, train
    from imagegen.export import export_result, finite_or_none

    # --- checks: everything a typo could break, before minutes of training -----------------------
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in config_fields()})
    _check_config(cfg)
    store = ModelStore(args.store)
    defaults, links = _check_export(args, cfg.task, store)
    check_device(cfg.device)

    init_card, init_state = _init_weights(store, cfg)

    # --- data ---------------------------------------------------------------------------------------
    try:
        dataset = load_dataset(cfg.data, cfg.image_size, cfg.channels)
    except (OSError, ValueError) as e:
        raise UsageError(f"--data {cfg.data}: {e}") from None
    _check_link_fits(store, links, dataset)
    train_images = min(cfg.limit, len(dataset)) if cfg.limit else len(dataset)

    # --- train --------------------------------------------------------------------------------------
    try:
        result = train(cfg, dataset=dataset, init_state=init_state)
    except ValueError as e:
        # e.g. a --run-dir holding a checkpoint of another config: the fix is a flag, not the code
        raise UsageError(str(e)) from None

    # --- held-out accuracy of a classifier (the guidance classifier's at several noise levels) ------
    quality = held_out_accuracy(result, cfg) if cfg.task in ("eval-classifier", "guidance-classifier") else None

    # --- export -------------------------------------------------------------------------------------
    card = None
    if args.export_name is not None:
        card = export_result(store, args.export_name, result, train_images, defaults=defaults, links=links,
                             quality=quality, init_card=init_card)
    summary = {
        "model": card.ref if card else None,
        "task": cfg.task,
        "steps": result.steps_done,
        "seconds": round(result.seconds, 2),
        "final_loss": finite_or_none(result.final_loss),
        "train_images": train_images,
        "run_dir": cfg.run_dir,
        "store": str(store.root) if card else None,
    }
    if cfg.task != "generator":
        summary["final_accuracy"] = finite_or_none(result.final_accuracy)
    if quality:
        summary["quality"] = quality
    print(json.dumps(summary))
    return 0


def held_out_accuracy(result, cfg) -> dict | None:
    """A classifier's accuracy on Fashion-MNIST's 10,000 test images (the card's `quality`): clean
    for the evaluation classifier, noised to several timesteps for a guidance classifier; None when
    the training data was not Fashion-MNIST."""
    from diffusion.data import load_fashion_mnist
    from diffusion.schedules import NoiseSchedule, ScheduleConfig
    from diffusion.train import resolve_device

    if not cfg.data.startswith("fashion-mnist"):
        return None
    test = load_fashion_mnist("test")
    device = resolve_device(cfg.device)
    schedule = NoiseSchedule(ScheduleConfig(cfg.schedule)) if cfg.task == "guidance-classifier" else None
    try:
        return classifier_quality(result.model.to(device), test, device, schedule, measured_on=result.device)
    finally:
        result.model.cpu()


def classifier_quality(model, test, device: str, schedule=None, measured_on: str | None = None) -> dict:
    """The `quality` of a classifier card on the test split `test`: `test_accuracy` on clean images,
    or with a `schedule` (a guidance classifier) `test_accuracy_by_t` on images noised to each of
    diffusion.evaluation.NOISE_LEVELS (one seeded noise draw per image)."""
    from datetime import datetime

    from diffusion.evaluation import accuracy, classify, noised_accuracy
    from imagegen.export import git_commit

    images = test.images.float() / 127.5 - 1
    if schedule is None:
        _, predicted = classify(model, images, device=device)
        figures: dict = {"test_accuracy": round(accuracy(predicted, test.labels), 4)}
    else:
        by_t = noised_accuracy(model, schedule, images, test.labels, seed=0, device=device)
        figures = {"test_accuracy_by_t": {str(t): round(a, 4) for t, a in by_t.items()}, "noise_seed": 0}
    return {**figures, "test_images": len(test), "measured_on": measured_on or device, "commit": git_commit(),
            "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
