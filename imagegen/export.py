"""Turning a training result into a served artifact: the EMA weights in fp16 plus a self-describing card.

Training state (optimizer, step, RNG) stays in the run directory's checkpoint; the store gets only
what sampling needs and what a reader needs to judge and reproduce the model.
"""

from __future__ import annotations

import math
import os
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model_store import ModelCard, ModelStore
from model_store.weights import save_model

if TYPE_CHECKING:
    from diffusion.train import TrainResult

REPO = Path(__file__).resolve().parents[1]
"""The checkout this code runs from, whose commit the card records."""

GENERATOR_DEFAULTS: dict[str, Any] = {"sampler": "ddim", "steps": 50, "guidance_scale": 3.0, "guidance": "cfg"}
"""Sampling defaults written into a new generator's card unless --defaults-json overrides them."""

TASK_KINDS = {"generator": ("generator", "unet"), "guidance-classifier": ("guidance-classifier", "noise-classifier"),
              "eval-classifier": ("eval-classifier", "eval-classifier")}
"""Per training task: the card kind it exports and the architecture type that loads it."""

_NOTES = {
    "generator": "Sampling defaults are placeholders, not yet chosen from measured quality (FID, "
                 "classifier accuracy); the quality table is empty until the model is evaluated.",
    "guidance-classifier": "Noise-aware classifier for classifier guidance; final_accuracy is measured on "
                           "noised training batches, not on held-out data; quality.test_accuracy_by_t is on the "
                           "held-out test split noised to each t.",
    "eval-classifier": "Clean-image classifier whose penultimate features define FD (evaluation.md); "
                       "never used for guidance. final_accuracy is on augmented training batches; "
                       "quality.test_accuracy is on the held-out test split.",
}


def git_commit(repo: Path = REPO) -> str:
    """`git rev-parse HEAD` of `repo`; outside a git checkout (a copy of the tree on a GPU machine),
    $IMAGEGEN_COMMIT as the copier stamped it, else "unknown"."""
    try:
        done = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("IMAGEGEN_COMMIT") or "unknown"
    return done.stdout.strip() or os.environ.get("IMAGEGEN_COMMIT") or "unknown"


def finite_or_none(v: float | None) -> float | None:
    """`v` as a float, or None when it is None, NaN or infinite."""
    # a run resumed past its last step has no loss window: record null, not NaN (invalid JSON)
    return None if v is None or not math.isfinite(v) else float(v)


def training_recipe(result: TrainResult, train_images: int, init_card: ModelCard | None = None) -> dict[str, Any]:
    """The card's `training` entry: enough to tell how the weights were made, and to redo it. A run
    warm-started from another model records that model and the recipe it was made with."""
    import torch

    cfg = result.config
    recipe = {
        "data": cfg.data, "steps": result.steps_done, "batch_size": cfg.batch_size, "lr": cfg.lr,
        "p_uncond": cfg.p_uncond, "ema_decay": cfg.ema_decay, "schedule": cfg.schedule, "preset": cfg.preset,
        "seed": cfg.seed, "seconds": round(result.seconds, 1), "device": result.device,
        "torch": torch.__version__, "commit": git_commit(), "final_loss": finite_or_none(result.final_loss),
        "train_images": train_images,
    }
    if cfg.task != "generator":
        recipe["final_accuracy"] = finite_or_none(result.final_accuracy)
    if init_card is not None:
        recipe["init_from"] = init_card.ref
        recipe["init_training"] = dict(init_card.training)
        before = init_card.training.get("total_steps", init_card.training.get("steps", 0))
        recipe["total_steps"] = int(before) + result.steps_done
    return recipe


def export_result(
    store: ModelStore,
    name: str,
    result: TrainResult,
    train_images: int,
    defaults: dict[str, Any] | None = None,
    links: dict[str, str] | None = None,
    quality: dict[str, Any] | None = None,
    init_card: ModelCard | None = None,
) -> ModelCard:
    """Save the EMA weights of `result` as fp16 under `name` (the next version) with a full card."""
    import torch

    from diffusion.schedules import ScheduleConfig

    cfg = result.config
    kind, arch_type = TASK_KINDS[cfg.task]
    generator = kind == "generator"
    tensors = {k: v.detach().to(torch.float16) if v.is_floating_point() else v.detach()
               for k, v in result.model.state_dict().items()}
    card_fields = {
        "kind": kind,
        "architecture": {"type": arch_type, "config": result.model_config},
        "schedule": asdict(ScheduleConfig(cfg.schedule)) if kind != "eval-classifier" else None,
        "prediction_type": "epsilon" if generator else None,
        "class_names": list(result.class_names),
        "image_size": result.model_config["image_size"],
        "channels": result.model_config["in_channels"],
        "dtype": "float16",
        "defaults": ({**GENERATOR_DEFAULTS, **(defaults or {})} if generator else {}),
        "training": training_recipe(result, train_images, init_card),
        "links": dict(links or {}),
        "quality": dict(quality or {}),
        # pixel-space data lives in [-1, 1]: clipping each step's x_0 estimate keeps an imperfect
        # network (and strong guidance) from pushing samples out of range
        "sampling": {"clip_x0": True} if generator else {},
        "notes": _NOTES[kind],
    }
    return save_model(store, name, tensors, card_fields)
