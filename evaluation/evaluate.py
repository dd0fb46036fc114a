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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from contract.errors import UsageError
from contract.models import pick_generator, resolve_kind
from contract.names import GUIDANCE_KINDS, MAX_STEPS, SAMPLERS
from evaluation.budget import Budget, network_rows
from evaluation.spread import REPEATS, adds_spread, measure_spread, paired_setting
from imagegen.device import DEVICES, check_device
from model_store import ModelStore

GUIDANCE_SWEEP = (0.0, 1.0, 1.1, 1.3, 1.5, 2.0, 3.0, 4.0, 6.0)
"""Table 1 of evaluation.md: DDIM 50 steps, eta 0, these CFG scales (0 = unconditional)."""
STEPS_SWEEP = (10, 20, 50, 100)
"""Table 2: every sampler at these step counts (and DDPM at 1000)."""
CLASSIFIER_SWEEP = (0.0, 1.0, 2.0, 4.0, 8.0)
"""Table 3: classifier guidance at these scales (0 = the unguided conditional model), DDIM 50."""
TABLES = ("guidance", "steps", "classifier", "floor", "spread")


COMMIT_ENV = "IMAGEGEN_COMMIT"
"""The commit to record where the checkout has no git (a working tree copied to a GPU machine)."""


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
    p.add_argument("--guidance", choices=list(GUIDANCE_KINDS), default="cfg", help="one setting: guidance (default: cfg)")
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
    p.add_argument("--store", metavar="DIR", default=None, help="model store root (default: $MODEL_STORE or the package's)")
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
                   help="with --write-card or --fill-card: also set the card's sampling defaults from the tables, with the "
                        "reason in quality.defaults_choice and the notes (rule: imagegen/quality_card.py)")


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
    adding = "--fill-card" if fill is not None else "--tables spread" if args.write_card and adds_spread(args.tables) else None
    if adding and (device == "cpu") != (card.quality.get("device") == "cpu"):
        raise UsageError(f"{adding}: the tables of {card.ref} were measured on {card.quality.get('device')}; "
                         f"add to them on the same device (--device), or measure them all anew with --tables")
    out = Path(args.out) if args.out else None

    def save(results: dict[str, Any]) -> None:
        if out is not None:
            _write_json(out, results)

    results = evaluate(store, card.ref, clf_card.ref, args, device, on_row=save, fill=fill)
    save(results)
    summary: dict[str, Any] = {"out": str(out) if out else None,
                               **{k: v for k, v in results.items() if k in ("floor", "setting")}}
    if "spread" in results:
        summary["spread"] = {"fd": results["spread"].get("fd"), "floor_fd": results["spread"]["floor"]["fd"]}
    if results.get("not_measured"):
        summary["not_measured"] = len(results["not_measured"])
    if args.write_card or args.fill_card:
        from evaluation.quality_card import add_spread, fill_quality, write_quality

        write = fill_quality if args.fill_card else add_spread if adds_spread(args.tables) else write_quality
        written, choice = write(store, card.ref, results, choose=args.choose_defaults)
        summary["card"] = str(store.root / written.name / str(written.version) / "card.json")
        if args.choose_defaults:
            summary["defaults"] = written.defaults if choice else None
            if choice is None:
                print(f"python -m evaluation evaluate: defaults of {written.ref} unchanged: the tables measured hold neither "
                      "a guidance sweep nor a steps sweep", file=sys.stderr)
    print(json.dumps(summary))
    return 0


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
    quality = classifier_quality(model, load_fashion_mnist("test"), device, NoiseSchedule(ScheduleConfig(**card.schedule)))
    summary: dict[str, Any] = {"model": card.ref, **quality}
    if args.out:
        _write_json(Path(args.out), summary)
    if args.write_card:
        store.update_card(card, {"quality": quality})
        summary["card"] = str(store.root / card.name / str(card.version) / "card.json")
    print(json.dumps(summary))
    return 0


def _card_sample(card: Any, args: argparse.Namespace, what: str) -> None:
    """Set `args` to the images per class, seeds and evaluation classifier of the card's tables, so
    that what `what` adds to them is comparable with them."""
    quality = card.quality or {}
    missing = [k for k in ("per_class", "seed", "eval_classifier", "device") if k not in quality]
    if missing:
        raise UsageError(f"{what} adds to the tables of {card.ref}, whose quality does not record "
                         f"{', '.join(missing)}: measure its tables first (--tables ... --write-card)")
    args.per_class, args.seed, args.eval_classifier = quality["per_class"], quality["seed"], quality["eval_classifier"]


def _fill_plan(card: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The settings `--fill-card` measures (with `args` set to the card's sample, _card_sample)."""
    todo = [m for m in (card.quality or {}).get("not_measured") or [] if isinstance(m, dict) and m.get("table")]
    if not todo:
        raise UsageError(f"--fill-card: the card of {card.ref} lists no setting as not measured: nothing to fill")
    _card_sample(card, args, "--fill-card")
    return todo


def _commit() -> str:
    from imagegen.export import git_commit

    commit = git_commit()
    return commit if commit != "unknown" else os.environ.get(COMMIT_ENV, "unknown")


def evaluate(store: ModelStore, model_ref: str, classifier_ref: str, args: argparse.Namespace, device: str,
             on_row: Callable[[dict[str, Any]], None] | None = None,
             fill: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The results of one setting (`setting`), of the tables asked for, or of the `fill` settings
    (a card's not_measured entries: table, sampler, steps, guidance, guidance_scale, eta);
    `on_row(results so far)` after each setting measured."""
    import torch
    from tqdm import tqdm

    from diffusion.data import load_fashion_mnist
    from diffusion.evaluation import FeatureStats, Setting, classify, evaluate_setting, frechet_distance
    from evaluation.sampling import engine_sampler
    from model_store.loading import load_generator, load_module

    budget = Budget(60 * args.max_minutes if args.max_minutes else None)
    tables = args.tables
    if fill is not None:
        need_classifier = any(m["guidance"] == "classifier" for m in fill)
    elif tables is not None:
        need_classifier = "classifier" in tables
    else:
        need_classifier = args.guidance == "classifier"
    gen = load_generator(store, model_ref, device=device, with_classifier=need_classifier)
    _, eval_clf = load_module(store, classifier_ref, device=device)
    test = load_fashion_mnist("test")
    real_feats, _ = classify(eval_clf, test.images.float() / 127.5 - 1, device=device)
    reference = FeatureStats.of(real_feats)
    sample_batch, how = engine_sampler(gen, args.batch_size, accel=args.accel)

    default_scale = gen.card.defaults.get("guidance_scale", 3.0)
    results: dict[str, Any] = {
        "model": model_ref, "eval_classifier": classifier_ref, "per_class": args.per_class,
        "reference": f"fashion-mnist test split ({len(test)} images)", "seed": args.seed,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
        "commit": _commit(), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "sampling": how,
    }
    images = gen.num_classes * args.per_class

    def measure(setting: Setting, label: str, seed: int | None = None) -> dict:
        with tqdm(total=images, desc=label, unit="img", file=sys.stderr, dynamic_ncols=True) as bar:
            row = evaluate_setting(sample_batch, setting, gen.num_classes, args.per_class, eval_clf, reference,
                                   args.batch_size, args.seed if seed is None else seed, device,
                                   progress=bar.update)
        print(json.dumps(row), file=sys.stderr)
        return row

    def cost(setting: Setting) -> int:
        return network_rows(setting.sampler, setting.steps, setting.guidance, setting.guidance_scale, images)

    def timed_if_fits(setting: Setting, label: str, what: str, seed: int | None = None) -> tuple[dict | None, str]:
        """(the row of one setting, ''), timed into the budget's pace; or (None, why) where it would
        pass the budget. `label`: its progress bar; `what`: its name in the not-measured line."""
        ok, why = budget.fits(setting.guidance, cost(setting))
        if not ok:
            print(f"not measured: {what}: {why}", file=sys.stderr)
            return None, why
        started = time.perf_counter()
        row = measure(setting, label, seed)
        budget.record(setting.guidance, cost(setting), time.perf_counter() - started)
        return row, ""

    def measure_if_fits(key: str, setting: Setting, label: str) -> dict | None:
        """The row of one setting, or None (listed under not_measured) where it would pass the budget."""
        row, why = timed_if_fits(setting, label, f"{key} {label}")
        if row is None:
            results.setdefault("not_measured", []).append({"table": key, **setting.__dict__, "why": why})
        return row

    def table(key: str, settings: list[Setting], label: Callable[[Setting], str],
              known: dict[Setting, dict] | None = None) -> None:
        """Measure the settings of table `key` that fit the budget, in the order given."""
        rows = []
        for setting in settings:
            if known and setting in known:  # the same images, already scored in another table
                rows.append(dict(known[setting]))
                continue
            row = measure_if_fits(key, setting, label(setting))
            if row is not None:
                rows.append(row)
                results[key] = rows
                if on_row:
                    on_row(results)
        if rows:
            results[key] = rows

    if fill is not None:
        # cheapest first, so that a budget leaves out the fewest settings; each row says when and at
        # which commit it was measured, as the card's tables were measured earlier
        todo = [(m["table"], Setting(m["sampler"], m["steps"], m["guidance"], m["guidance_scale"], m.get("eta", 0.0)))
                for m in fill]
        for key, setting in sorted(todo, key=lambda t: cost(t[1])):
            row = measure_if_fits(key, setting, f"{setting.sampler} {setting.steps} {setting.guidance} "
                                                f"s={setting.guidance_scale:g}")
            if row is not None:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                results.setdefault(key, []).append({**row, "commit": results["commit"], "measured_at": stamp})
                if on_row:
                    on_row(results)
        return results

    if tables is None:
        scale = default_scale if args.guidance_scale is None else args.guidance_scale
        results["setting"] = measure(Setting(args.sampler, args.steps, args.guidance, scale, args.eta), "setting")
        return results
    if "classifier" in tables and gen.classifier is None:  # refused before minutes of other tables
        raise UsageError(f"--tables classifier: {model_ref} links no guidance classifier")
    train_split: list = []  # loaded once, when a table needs it

    def real_fd(per_class: int, seed: int) -> float:
        """FD of per_class seeded random training images of every class against the test set."""
        if not train_split:
            train_split.append(load_fashion_mnist("train"))
        real = train_split[0].subset(per_class=per_class, seed=seed)
        feats, _ = classify(eval_clf, real.images.float() / 127.5 - 1, device=device)
        return round(frechet_distance(FeatureStats.of(feats), reference), 4)

    if "floor" in tables:
        full = len(test) // gen.num_classes
        results["floor"] = {"fd": real_fd(full, args.seed), "n": full * gen.num_classes,
                            "what": "training images against the test set"}
        if args.per_class < full:
            # FD is biased upward at small n: the floor a perfect generator would score at this n
            results["floor"]["same_n"] = {"fd": real_fd(args.per_class, args.seed), "n": images}
        if on_row:
            on_row(results)
    if "guidance" in tables:
        table("guidance_sweep", [Setting("ddim", 50, "cfg", s) for s in GUIDANCE_SWEEP], lambda st: f"cfg s={st.guidance_scale}")
    if "steps" in tables:
        if args.guidance_scale is not None:
            best = args.guidance_scale
        elif results.get("guidance_sweep") and any(r["guidance_scale"] > 0 for r in results["guidance_sweep"]):
            best = min((r for r in results["guidance_sweep"] if r["guidance_scale"] > 0), key=lambda r: r["fd"])["guidance_scale"]
        else:
            best = default_scale
        # the cheap settings first, so that a budget that runs out leaves out the longest (DDPM 1000 last)
        runs = [(s, k) for k in STEPS_SWEEP for s in SAMPLERS] + [("ddpm", 1000)]
        known = {Setting(r["sampler"], r["steps"], r["guidance"], r["guidance_scale"], r["eta"]): r
                 for r in results.get("guidance_sweep", [])}
        table("steps_sweep", [Setting(s, k, "cfg", best) for s, k in runs], lambda st: f"{st.sampler} {st.steps}", known)
        if "steps_sweep" in results:
            order = list(SAMPLERS)
            results["steps_sweep"].sort(key=lambda r: (order.index(r["sampler"]), r["steps"]))
    # last: the defaults are chosen from the guidance and steps sweeps, so a budget that runs out
    # should leave out the classifier-guidance rows first
    if "classifier" in tables:
        table("classifier_guidance", [Setting("ddim", 50, "classifier", s) for s in CLASSIFIER_SWEEP],
              lambda st: f"classifier s={st.guidance_scale}")
    if "spread" in tables:
        measure_spread(results, gen.card, args, images, default_scale, timed_if_fits, real_fd, on_row)
    return results
