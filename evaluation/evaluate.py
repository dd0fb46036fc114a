"""`python -m evaluation evaluate`: FD and accuracy of a generator in the evaluation classifier's features
(evaluation.md), for one setting or for the model card's tables, written as JSON and, with
`--write-card`, into the generator's card (with `--choose-defaults`, the sampling defaults too).
`--fill-card` measures the settings a card lists as not measured (a run that a time budget cut short)
and adds them to its tables, so a CPU-sized measurement can be finished over several sessions.

Images are sampled through the worker's engine (evaluation.sampling): on CUDA in bf16 with CUDA
graphs, as the service serves them. With `--max-minutes` a setting starts only if it should end in
time; those left out are listed under `not_measured`. The results file is rewritten after every
setting, so a run stopped from outside keeps what it measured."""

from __future__ import annotations

import argparse
import json
import os
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contract.errors import UsageError
from contract.models import pick_generator, resolve_kind
from contract.names import GUIDANCE_KINDS, MAX_STEPS, SAMPLERS
from evaluation.record import NotMeasured, QualityRecord
from evaluation.spread import REPEATS, adds_spread, paired_setting
from imagegen.device import DEVICES, check_device
from model_store import ModelCard, ModelStore

if TYPE_CHECKING:
    from evaluation.measure import OnRow

TABLES = ("guidance", "steps", "classifier", "floor", "spread")
"""What `--tables` may ask for (evaluation.measure measures each)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `python -m evaluation evaluate`."""
    p.add_argument("--model", metavar="NAME[@VERSION]", help="generator to evaluate (default: as for generate)")
    p.add_argument("--eval-classifier", default="fmnist-eval-classifier", metavar="NAME[@VERSION]",
                   help="the evaluation classifier whose features define FD (default: fmnist-eval-classifier)")
    p.add_argument("--tables", nargs="*", choices=TABLES, default=None,
                   help="measure these tables of evaluation.md instead of one setting: guidance (CFG sweep), "
                        "steps (every sampler; at the best-FD scale of the guidance table, or --guidance-scale), "
                        "classifier (classifier guidance), floor (training images against the test set), spread "
                        "(the card's default setting again with --repeats disjoint seed ranges, and --repeats draws "
                        "of as many training images: how much FD moves between repeats at this sample size; alone "
                        "with --write-card it is added to the card's tables)")
    p.add_argument("--repeats", type=int, default=REPEATS,
                   help=f"--tables spread: measurements of each (default: {REPEATS})")
    p.add_argument("--paired-with", metavar="SAMPLER:STEPS", default=None,
                   help="--tables spread: also measure this sampler and step count (same guidance) on the same "
                        "seed ranges, for the spread of a difference between two rows that share their seeds, as "
                        "the tables' rows do; with --write-card, repeats the card's spread already holds are reused")
    p.add_argument("--sampler", choices=list(SAMPLERS), default="ddim", help="one setting: sampler (default: ddim)")
    p.add_argument("--steps", type=int, default=50, help=f"one setting: steps 1..{MAX_STEPS} (default: 50)")
    p.add_argument("--guidance", choices=list(GUIDANCE_KINDS), default="cfg",
                   help="one setting: guidance (default: cfg)")
    p.add_argument("--guidance-scale", type=float, default=None,
                   help="one setting: scale >= 0 (default: the card's); with --tables steps, the scale to use")
    p.add_argument("--eta", type=float, default=0.0, help="one setting: DDIM eta 0..1 (default: 0)")
    p.add_argument("--per-class", type=int, default=1000,
                   help="images generated per class (default: 1000, i.e. 10,000 for Fashion-MNIST)")
    p.add_argument("--batch-size", type=int, default=500,
                   help="images sampled at once (default: 500; on a GPU 2048 keeps it busy, and CFG's doubled "
                        "batch of 4096 rows then fills a CUDA-graph bucket exactly)")
    p.add_argument("--seed", type=int, default=0, help="first seed; image i of class c uses seed + c * per_class + i")
    p.add_argument("--device", choices=list(DEVICES), default="auto", help="where to sample (default: auto)")
    p.add_argument("--accel", action=argparse.BooleanOptionalAction, default=True,
                   help="on CUDA, run the network as the worker does: bf16 autocast, channels_last, CUDA graphs "
                        "(--no-accel: fp32); no effect on the CPU")
    p.add_argument("--max-minutes", type=float, default=0.0,
                   help="start a setting only if it should end within this many minutes of the start, from the "
                        "pace measured so far; the others are listed under not_measured (default: 0, no limit)")
    p.add_argument("--store", metavar="DIR", default=None,
                   help="model store root (default: $MODEL_STORE or the package's)")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="JSON file for the results, rewritten after every setting (needed unless --write-card)")
    p.add_argument("--write-card", action="store_true",
                   help="with --tables: write the tables into the generator's card as its `quality` (replacing "
                        "it; the weights and their sha256 are untouched)")
    p.add_argument("--fill-card", action="store_true",
                   help="measure the settings the generator's card lists under quality.not_measured and add them "
                        "to its tables, with the card's images per class, seeds and evaluation classifier, on the "
                        "device it was measured on (each added row records its own commit and time); "
                        "--max-minutes applies, cheapest settings first")
    p.add_argument("--guidance-classifier", metavar="NAME[@VERSION]", default=None,
                   help="instead of a generator: a guidance classifier's accuracy on the test split noised to "
                        "several timesteps (with --write-card, into its card's quality)")
    p.add_argument("--choose-defaults", action="store_true",
                   help="with --write-card or --fill-card: also set the card's sampling defaults from the tables, with "
                        "the reason in quality.defaults_choice and the notes (rule: evaluation/quality_card.py)")


def _check(args: argparse.Namespace) -> None:
    if not 1 <= args.steps <= MAX_STEPS:
        raise UsageError(f"--steps must be between 1 and {MAX_STEPS} (got {args.steps})")
    if args.per_class < 2:
        raise UsageError(f"--per-class must be >= 2 (a covariance needs two images) (got {args.per_class})")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1 (got {args.batch_size})")
    if args.repeats < 2:
        raise UsageError(f"--repeats must be >= 2 (a standard deviation needs two measurements) (got {args.repeats})")
    if args.guidance_scale is not None and args.guidance_scale < 0:
        raise UsageError(f"--guidance-scale must be >= 0 (got {args.guidance_scale})")
    if not 0 <= args.eta <= 1:
        raise UsageError(f"--eta must be between 0 and 1 (got {args.eta})")
    if args.eta and args.sampler != "ddim":
        raise UsageError("--eta is only for --sampler ddim")
    if not args.max_minutes >= 0:
        raise UsageError(f"--max-minutes must be >= 0 (got {args.max_minutes})")
    if args.guidance_classifier is not None and (args.tables is not None or args.fill_card):
        raise UsageError("--guidance-classifier measures a classifier, not a generator's tables: drop --tables "
                         "and --fill-card")
    if args.write_card and not args.tables and args.guidance_classifier is None:
        raise UsageError("--write-card writes the tables into the card: add --tables (e.g. --tables guidance steps "
                         "classifier floor)")
    if args.fill_card and (args.tables is not None or args.write_card):
        raise UsageError("--fill-card measures what the card lists as not measured: drop --tables and --write-card")
    if args.choose_defaults and not (args.write_card or args.fill_card):
        raise UsageError("--choose-defaults sets the card's defaults: add --write-card (or --fill-card)")
    if args.paired_with is not None:
        args.paired = paired_setting(args.paired_with)
        if "spread" not in (args.tables or []):
            raise UsageError("--paired-with is part of the spread: add --tables spread")
    else:
        args.paired = None
    if args.choose_defaults and adds_spread(args.tables):
        raise UsageError("--choose-defaults: the spread alone decides no default; drop it, or add the tables that do")
    if args.out is None and not (args.write_card or args.fill_card):
        raise UsageError("say where the results go: --out FILE, or --write-card (with --tables)")


def run(args: argparse.Namespace) -> int:
    """Load the models, measure, write the JSON file (and the card), print a summary line."""
    _check(args)
    store = ModelStore(args.store)
    if args.guidance_classifier is not None:
        return _guidance_classifier(store, args)
    card = pick_generator(store, args.model)
    fill = _fill_plan(card, args) if args.fill_card else None
    if args.write_card and adds_spread(args.tables):
        _card_sample(card, args, "--tables spread --write-card")
    clf_card = resolve_kind(store, args.eval_classifier, "eval-classifier", "--eval-classifier")
    device = check_device(args.device)
    _check_same_device(card, args, device)
    out = Path(args.out) if args.out else None
    save = partial(_write_json, out) if out is not None else None
    results = evaluate(store, card.ref, clf_card.ref, args, device, on_row=save, fill=fill)
    if save is not None:
        save(results)
    summary = _summary(results, out)
    if args.write_card or args.fill_card:
        summary.update(_write_card(store, card, results, args))
    print(json.dumps(summary))
    return 0


def _check_same_device(card: ModelCard, args: argparse.Namespace, device: str) -> None:
    """Rows added to a card's tables (--fill-card, a spread alone) must be measured on the kind of
    device its tables were: the CPU's fp32 and a GPU's bf16 give other figures."""
    spread_alone = args.write_card and adds_spread(args.tables)
    adding = "--fill-card" if args.fill_card else "--tables spread" if spread_alone else None
    measured_on = QualityRecord.parse(card.quality).provenance.device
    if adding and (device == "cpu") != (measured_on == "cpu"):
        raise UsageError(f"{adding}: the tables of {card.ref} were measured on {measured_on}; add to them on the "
                         f"same device (--device), or measure them all anew with --tables")


def _summary(results: dict[str, Any], out: Path | None) -> dict[str, Any]:
    """The printed line: where the results went, the floor or the one setting, the spread's FD, and
    how many settings were left out."""
    summary: dict[str, Any] = {"out": str(out) if out else None,
                               **{k: v for k, v in results.items() if k in ("floor", "setting")}}
    if "spread" in results:
        spread = results["spread"]
        summary["spread"] = {"fd": spread["fd"] if "fd" in spread else None, "floor_fd": spread["floor"]["fd"]}
    if results.get("not_measured"):
        summary["not_measured"] = len(results["not_measured"])
    return summary


def _write_card(store: ModelStore, card: ModelCard, results: dict[str, Any], args: argparse.Namespace
                ) -> dict[str, Any]:
    """Write the results into the card (its tables, the rows a fill added, or a spread beside the
    tables); the summary's card path, and with --choose-defaults the defaults chosen."""
    from evaluation.quality_card import add_spread, fill_quality, write_quality

    write = fill_quality if args.fill_card else add_spread if adds_spread(args.tables) else write_quality
    written, choice = write(store, card.ref, results, choose=args.choose_defaults)
    summary: dict[str, Any] = {"card": str(store.root / written.name / str(written.version) / "card.json")}
    if args.choose_defaults:
        summary["defaults"] = written.defaults if choice else None
        if choice is None:
            print(f"python -m evaluation evaluate: defaults of {written.ref} unchanged: the tables measured hold "
                  "neither a guidance sweep nor a steps sweep", file=sys.stderr)
    return summary


def _write_json(out: Path, results: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, out)


def _guidance_classifier(store: ModelStore, args: argparse.Namespace) -> int:
    """`--guidance-classifier`: its held-out accuracy by noise level, as JSON and into its card."""
    from diffusion.data import load_fashion_mnist
    from diffusion.schedules import NoiseSchedule, ScheduleConfig
    from imagegen.train_cmd import classifier_quality
    from model_store.loading import load_module

    card = resolve_kind(store, args.guidance_classifier, "guidance-classifier", "--guidance-classifier")
    device = check_device(args.device)
    _, model = load_module(store, card.ref, device=device)
    schedule = NoiseSchedule(ScheduleConfig(**card.schedule))
    quality = classifier_quality(model, load_fashion_mnist("test"), device, schedule)
    summary: dict[str, Any] = {"model": card.ref, **quality}
    if args.out:
        _write_json(Path(args.out), summary)
    if args.write_card:
        store.update_card(card, {"quality": quality})
        summary["card"] = str(store.root / card.name / str(card.version) / "card.json")
    print(json.dumps(summary))
    return 0


def _card_sample(card: ModelCard, args: argparse.Namespace, what: str) -> None:
    """Set `args` to the images per class, seeds and evaluation classifier of the card's tables, so
    that what `what` adds to them is comparable with them."""
    p = QualityRecord.parse(card.quality).provenance
    recorded = {"per_class": p.per_class, "seed": p.seed, "eval_classifier": p.eval_classifier, "device": p.device}
    missing = [k for k, v in recorded.items() if v is None]
    if missing:
        raise UsageError(f"{what} adds to the tables of {card.ref}, whose quality does not record "
                         f"{', '.join(missing)}: measure its tables first (--tables ... --write-card)")
    args.per_class, args.seed, args.eval_classifier = p.per_class, p.seed, p.eval_classifier


def _fill_plan(card: ModelCard, args: argparse.Namespace) -> list[NotMeasured]:
    """The settings `--fill-card` measures (with `args` set to the card's sample, _card_sample)."""
    todo = [m for m in QualityRecord.parse(card.quality).provenance.not_measured if m.setting is not None]
    if not todo:
        raise UsageError(f"--fill-card: the card of {card.ref} lists no setting as not measured: nothing to fill")
    _card_sample(card, args, "--fill-card")
    return todo


def evaluate(store: ModelStore, model_ref: str, classifier_ref: str, args: argparse.Namespace, device: str,
             on_row: OnRow | None = None, fill: list[NotMeasured] | None = None) -> dict[str, Any]:
    """The results of one setting (`setting`), of the tables asked for, or of the `fill` settings (a
    card's not_measured entries); `on_row(results so far)` after each setting measured."""
    from evaluation import measure

    if fill is not None:
        with_classifier = any(m.guidance == "classifier" for m in fill)
    else:
        with_classifier = "classifier" in args.tables if args.tables is not None else args.guidance == "classifier"
    run = measure.start(store, model_ref, classifier_ref, args, device, with_classifier, on_row)
    if fill is not None:
        measure.fill(run, fill)
    elif args.tables is None:
        measure.one_setting(run)
    else:
        measure.tables(run, args.tables)
    return run.results
