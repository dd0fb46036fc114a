"""`docs/model-card.md` rendered from a generator's card: how it was trained, its sampling defaults
and why, the quality tables of evaluation.md with the floor beside them, the plots (PNG, matplotlib),
a sample grid with one row per class, and a comparison with the papers written from the measured
numbers only. A table the card lacks is said to be not measured; a shape is never claimed from
numbers that are absent.

    python -m evaluation model-card --model fashion-mnist --out docs/model-card.md --sample-grid

Written as a command module (`add_arguments`, `run`) so that `python -m evaluation model-card` is one line in
`imagegen.cli.COMMANDS`. Only `--sample-grid` needs torch; the rest reads JSON and draws with
matplotlib.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from evaluation.paper_shapes import comparisons
from evaluation.plots import plot_steps, plot_tradeoff
from evaluation.readme import write_readme_quality
from evaluation.record import ClassifierQuality, QualityRecord, lowest
from evaluation.spread_section import spread_section
from evaluation.tables import classifier_table, count, fd_text, guidance_table, pct, ratio, steps_table, table
from model_store import ModelCard, ModelStore

GRID_PER_CLASS = 10
"""Images per class (one row each) of the sample grid."""

TRADEOFF_PNG, STEPS_PNG, GRID_PNG = "model-card-tradeoff.png", "model-card-steps.png", "model-card-grid.png"
"""File names of the figures, in the images folder beside the doc."""

_TRAINING_FIELDS = [("data", "data"), ("train_images", "training images"), ("preset", "architecture preset"),
                    ("steps", "optimizer steps"), ("batch_size", "batch size"), ("lr", "peak learning rate"),
                    ("p_uncond", "label dropout (CFG)"), ("ema_decay", "EMA decay"), ("schedule", "noise schedule"),
                    ("seconds", "training time"), ("device", "device"), ("torch", "torch"),
                    ("commit", "commit"), ("final_loss", "final loss")]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of the model-card renderer."""
    p.add_argument("--model", default="fashion-mnist", metavar="NAME[@VERSION]",
                   help="the generator whose card is rendered (default: fashion-mnist, its newest version)")
    p.add_argument("--store", metavar="DIR", default=None,
                   help="model store root (default: $MODEL_STORE or the package's)")
    p.add_argument("--out", default="docs/model-card.md", metavar="FILE",
                   help="the markdown file (default: %(default)s)")
    p.add_argument("--images", default=None, metavar="DIR",
                   help="where the PNGs go (default: images/ beside --out)")
    p.add_argument("--sample-grid", action="store_true",
                   help="sample the grid anew at the card's defaults (needs torch; else an existing grid is linked)")
    p.add_argument("--grid-per-class", type=int, default=GRID_PER_CLASS, metavar="N",
                   help="with --sample-grid: images per class, one row per class (default: %(default)s)")
    p.add_argument("--device", default="auto", help="with --sample-grid: cpu, cuda or auto (default: auto)")
    p.add_argument("--readme", default=None, metavar="FILE",
                   help="also rewrite the measured-quality summary between the quality markers of FILE (README.md)")


def run(args: argparse.Namespace) -> int:
    """Render the doc and its figures; print a JSON line naming the files."""
    from contract.models import pick_generator

    store = ModelStore(args.store)
    card = pick_generator(store, args.model)
    out = Path(args.out)
    images = Path(args.images) if args.images else out.parent / "images"
    images.mkdir(parents=True, exist_ok=True)
    written = []
    if args.sample_grid:
        from imagegen.device import check_device

        if args.grid_per_class < 1:
            from contract.errors import UsageError

            raise UsageError(f"--grid-per-class must be >= 1 (got {args.grid_per_class})")
        sample_grid(store, card, images / GRID_PNG, check_device(args.device), args.grid_per_class)
        written.append(str(images / GRID_PNG))
    record = QualityRecord.parse(card.quality)
    figures = {}
    if plot_tradeoff(record, card.defaults.get("guidance_scale"), images / TRADEOFF_PNG):
        figures["tradeoff"] = images / TRADEOFF_PNG
    if plot_steps(record, images / STEPS_PNG):
        figures["steps"] = images / STEPS_PNG
    if (images / GRID_PNG).exists():
        figures["grid"] = images / GRID_PNG
    written += [str(p) for k, p in figures.items() if k != "grid"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(card, {k: os.path.relpath(p, out.parent) for k, p in figures.items()},
                          stored_card(store, record.provenance.eval_classifier), grid_settings(images / GRID_PNG),
                          stored_card(store, card.links.get("guidance_classifier"))))
    if args.readme:
        try:
            write_readme_quality(Path(args.readme), card)
        except (OSError, ValueError) as e:
            from contract.errors import UsageError

            raise UsageError(f"--readme: {e}") from None
        written.append(args.readme)
    print(json.dumps({"doc": str(out), "figures": written}))
    return 0


def stored_card(store: ModelStore, ref: str | None) -> ModelCard | None:
    """The card of `ref` (a linked or measuring model), or None where it is not in this store."""
    if not ref:
        return None
    try:
        return store.resolve(ref)
    except Exception:  # noqa: BLE001 - a classifier not in this store: the doc says less, nothing more
        return None


# --- figures ---------------------------------------------------------------------------------------

def sample_grid(store: ModelStore, card: ModelCard, path: Path, device: str, per_class: int = GRID_PER_CLASS) -> None:
    """`per_class` images of every class, one row per class, at the card's defaults (image i of class
    c has seed c * per_class + i)."""
    import torch
    from PIL.PngImagePlugin import PngInfo

    from diffusion.images import make_grid, to_pil
    from diffusion.sampling import SampleSpec, sample
    from model_store.loading import load_generator

    d = card.defaults
    gen = load_generator(store, card.ref, device=device, with_classifier=d.get("guidance") == "classifier")
    specs = [SampleSpec(c, float(d.get("guidance_scale", 3.0)), guidance=d.get("guidance", "cfg"),
                        sampler=d.get("sampler", "ddim"), steps=int(d.get("steps", 50)), eta=float(d.get("eta", 0.0)),
                        seed=c * per_class + i)
             for c in range(gen.num_classes) for i in range(per_class)]
    with torch.no_grad():
        x = sample(gen.model, gen.schedule, specs, gen.image_shape, gen.num_classes, classifier=gen.classifier,
                   device=device, clip_x0=gen.clip_x0)
    image = to_pil(make_grid(x.float().clamp(-1, 1).cpu(), per_class))
    path.parent.mkdir(parents=True, exist_ok=True)
    # 28-pixel images are too small to judge in a browser: twice the size, pixels kept sharp
    info = PngInfo()
    # what the caption says is read back from the file, so that it cannot describe another grid
    info.add_text("imagegen", json.dumps({"model": card.ref, "per_class": per_class, **{k: v for k, v in (
        ("sampler", specs[0].sampler), ("steps", specs[0].steps), ("guidance", specs[0].guidance),
        ("guidance_scale", specs[0].guidance_scale))}}))
    image.resize((2 * image.width, 2 * image.height), resample=0).save(path, pnginfo=info)


def grid_settings(path: Path) -> dict | None:
    """The settings `sample_grid` recorded in a grid PNG, or None."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return json.loads(im.text["imagegen"])
    except (OSError, KeyError, ValueError, AttributeError):
        return None


# --- markdown ---------------------------------------------------------------------------------------

def _run_summary(t: dict) -> str:
    """One line for a training recipe: steps, batch size, learning rate, time and device."""
    parts = []
    if "steps" in t:
        parts.append(f"{t['steps']} steps" + (f" at batch {t['batch_size']}" if "batch_size" in t else ""))
    if "lr" in t:
        parts.append(f"lr {t['lr']}")
    if isinstance(t.get("seconds"), (int, float)):
        parts.append(f"{t['seconds'] / 60:.1f} min on {t.get('device', '?')}")
    if t.get("init_from"):
        parts.append(f"itself warm-started from `{t['init_from']}`")
    return ", ".join(parts) or "no recipe recorded"


def _later_rows(record: QualityRecord) -> str:
    """A sentence on the rows `--fill-card` added after the tables were measured, or ''."""
    parts = []
    for commit in record.later_commits():
        rows = record.rows_of_commit(commit)
        dates = sorted({(r.measured_at or "?")[:10] for r in rows})
        parts.append(f"{len(rows)} at commit `{commit[:7]}` ({', '.join(dates)})")
    if not parts:
        return ""
    return (" Rows added later by `python -m evaluation evaluate --fill-card`, on the same kind of device with the "
            "same seeds, images per class and classifier, carry their own commit: " + "; ".join(parts) + ".")


def _training(card: ModelCard) -> str:
    t = card.training
    rows = []
    for key, label in _TRAINING_FIELDS:
        if key in t:
            v = t[key]
            if key == "seconds" and isinstance(v, (int, float)):
                v = f"{v / 60:.1f} min"
            elif key == "final_loss" and isinstance(v, float):
                v = f"{v:.4f}"
            rows.append([label, str(v)])
    init = t.get("init_from")
    if init:
        # a warm start: this run continued another model's weights; say what that model was
        before = t.get("init_training") or {}
        rows.append(["warm-started from", f"`{init}` ({_run_summary(before)})"])
        if "total_steps" in t:
            rows.append(["optimizer steps in all", str(t["total_steps"])])
    arch = card.architecture
    text = [table(["", ""], rows) if rows else "The card records no training recipe.", "",
            f"Architecture: `{arch['type']}` with `{json.dumps(arch['config'], sort_keys=True)}`; prediction type "
            f"`{card.prediction_type}`; schedule `{json.dumps(card.schedule, sort_keys=True)}`; weights in "
            f"{card.dtype}, sha256 `{card.sha256}`."]
    return "\n".join(text)


def _defaults(card: ModelCard, record: QualityRecord) -> str:
    d = card.defaults
    line = ", ".join(f"{k} `{d[k]}`" for k in ("sampler", "steps", "guidance", "guidance_scale", "eta") if k in d)
    choice = record.defaults_choice
    if choice is None:
        return f"{line}.\n\nThese are not chosen from measured tables: the card has none yet."
    measured = "" if choice.measured else " (this exact combination was not measured)"
    return f"{line}{measured}.\n\nChosen from the measured tables by this rule: {choice.rule}.\n\n{choice.reason}"


def _guide_accuracy(guide: ModelCard) -> str:
    """A sentence on the guidance classifier and its measured held-out accuracy by noise level."""
    q = ClassifierQuality.parse(guide.quality)
    if not q.accuracy_by_t:
        return f"Guided by `{guide.ref}`, whose card has no measured held-out accuracy."
    levels = ", ".join(f"t = {t}: {pct(a)}" for t, a in q.accuracy_by_t)
    return (f"Guided by `{guide.ref}`; its accuracy on the {count(q.test_images)} test images noised to each level "
            f"(measured on {q.measured_on or '?'}, commit `{(q.commit or '?')[:7]}`): {levels}.")


def _provenance(card: ModelCard, record: QualityRecord, clf: ModelCard | None) -> str:
    """Where, when and how the tables were measured."""
    p = record.provenance
    n, acc = p.per_class, ClassifierQuality.parse(clf.quality).test_accuracy if clf is not None else None
    return (f"Measured on {p.device or '?'} (torch {p.torch or '?'}, commit `{p.commit or '?'}`, "
            f"{p.measured_at or '?'}), "
            f"{n if n is not None else '?'} images per class per setting"
            + (f" ({10 * n:,} for the ten classes)" if n is not None and card.num_classes == 10 else "")
            + f", seeds from {p.seed or 0}. FD and accuracy are in the features of the evaluation classifier "
              f"`{p.eval_classifier or '?'}`" + (f" ({pct(acc)} test accuracy)" if acc is not None else "")
            + f", against {p.reference or 'the test split'}. Sampling: {p.sampling or 'not recorded'}."
            + _later_rows(record))


def _floor(record: QualityRecord) -> str:
    floor, at_n = record.floor, record.floor_fd
    if floor is not None and floor.same_n_fd is not None:
        return (f"**Floor** (FD of training images against the test set: what a perfect generator would score): "
                f"**{fd_text(at_n)}** with {count(floor.same_n)} training images, the tables' sample size, and "
                f"{fd_text(floor.fd) if floor.fd is not None else 'not measured'} with {count(floor.n)}. FD is "
                f"biased upward at small sample sizes, so the `x floor` columns divide each FD by the floor at the "
                f"same size.")
    return ("**Floor** (FD of 10,000 training images against the test set: what a perfect generator would score): "
            + (f"**{fd_text(at_n)}**. The `x floor` columns divide each FD by it." if at_n is not None
               else "not measured."))


def _sweeps(card: ModelCard, record: QualityRecord, figures: dict[str, str], guide: ModelCard | None) -> list[str]:
    """The three tables of evaluation.md, each with its figure and a line on what it shows."""
    floor, g, s, c = record.floor_fd, record.guidance_sweep, record.steps_sweep, record.classifier_guidance
    out = ["", "### Guidance sweep (classifier-free guidance, DDIM 50 steps, eta 0)", ""]
    if g:
        out += [guidance_table(g, floor, card.defaults.get("guidance_scale")),
                "\nScale 0 is unconditional (scored against the whole test set; no accuracy); scale 1 is the "
                "conditional model alone."]
        if "tradeoff" in figures:
            out.append(f"\n![FD against accuracy along the guidance sweep]({figures['tradeoff']})")
    else:
        out.append("Not measured.")
    scales = ", ".join(f"{v:g}" for v in sorted({r.guidance_scale for r in s}))
    out += ["", f"### Steps sweep (every sampler{f', CFG scale {scales}' if s else ''}, the best-FD scale of the "
            "guidance sweep)", ""]
    if s:
        best = lowest(s)
        out += ["FD (accuracy) by sampler and steps; – is not measured.\n", steps_table(s),
                f"\nBest: {best.sampler} {best.steps} steps, FD {fd_text(best.fd)}"
                + (f" ({ratio(best.fd, floor)} the floor)." if floor else ".")]
        if "steps" in figures:
            out.append(f"\n![FD against steps per sampler]({figures['steps']})")
    else:
        out.append("Not measured.")
    out += ["", "### Classifier guidance beside CFG (DDIM 50 steps)", ""]
    if c:
        out.append(classifier_table(c, g, floor))
        if guide is not None:
            out.append("\n" + _guide_accuracy(guide))
        out.append("\nClassifier scale 0 is the unguided conditional model; CFG columns are the guidance sweep's row "
                   "at the same number where it has one (the two scales mean different things).")
    else:
        out.append("Not measured.")
    return out


def _quality(card: ModelCard, record: QualityRecord, figures: dict[str, str], clf: ModelCard | None,
             guide: ModelCard | None = None) -> str:
    if not record.rows and record.floor_fd is None:
        return ("Not measured yet. The tables of the evaluation protocol (`shared/spec/evaluation.md`: guidance "
                "sweep, steps sweep over the five samplers, classifier guidance beside CFG, and the real-data floor, "
                "each with 10,000 samples) are owed to a GPU run: [gpu-runbook.md](gpu-runbook.md) says how. No "
                "figure is estimated in their place.")
    out = [_provenance(card, record, clf), "", _floor(record), *spread_section(record, card.defaults),
           *_sweeps(card, record, figures, guide)]
    missing = record.provenance.not_measured
    if missing:
        out += ["", "### Not measured", "", "These settings were left out (never estimated):", ""]
        out += [f"- {m.table}: {m.sampler} {m.steps} steps, {m.guidance} scale {m.guidance_scale}: {m.why or ''}"
                for m in missing]
    return "\n".join(out)


def render(card: ModelCard, figures: dict[str, str], clf: ModelCard | None = None, grid: dict | None = None,
           guide: ModelCard | None = None) -> str:
    """The markdown of the model card; `figures` maps tradeoff, steps and grid to paths relative to
    the doc; `clf` is the evaluation classifier's card, `grid` the settings the grid records, `guide`
    the card of the guidance classifier it links."""
    names = ", ".join(card.class_names)
    parts = [
        f"# Model card: `{card.ref}`", "",
        f"<!-- rendered by `python -m evaluation model-card` from model_store/models/{card.name}/{card.version}/"
        f"card.json; edit the card or the renderer, not this file -->", "",
        f"A class-conditional diffusion model of {card.image_size}x{card.image_size} "
        f"{'grayscale' if card.channels == 1 else 'RGB'} images of {card.num_classes} classes ({names}), one network "
        f"for the conditional and the unconditional prediction (label dropout), served by `GET /models/{card.name}`.",
        "", "## Samples", "",
    ]
    if "grid" in figures:
        g = grid
        how = (f"{g.get('per_class')} seeds each, sampled from {g.get('model')} with {g.get('sampler')}, "
               f"{g.get('steps')} steps, {g.get('guidance')} scale {g.get('guidance_scale')}" if g
               else "its sampling settings not recorded")
        parts.append(f"![Samples, one row per class]({figures['grid']})\n\nOne row per class, top to bottom: {names}; "
                     f"{how}.")
    else:
        parts.append("No sample grid rendered (`--sample-grid` makes one).")
    parts += ["", "## How it was trained", "", _training(card)]
    if card.notes:
        parts += ["", "Notes from the card:", "", "> " + card.notes.replace("\n\n", "\n>\n> ")]
    record = QualityRecord.parse(card.quality)
    parts += ["", "## Sampling defaults", "", _defaults(card, record), "", "## Quality", "",
              _quality(card, record, figures, clf, guide), "", "## Compared with the papers", "", *comparisons(record)]
    return "\n".join(parts).rstrip() + "\n"
