"""The measuring part of `python -m evaluation evaluate`: one run's models, data and time budget
(`Run`), a setting measured within the budget, and each table of evaluation.md as a step of its own.

A run's results are a dict in the card's `quality` format (evaluation.record reads it), rewritten
through `on_row` after every setting, so that a run stopped from outside keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from contract.errors import UsageError
from contract.names import SAMPLERS
from diffusion.data import ImageDataset, load_fashion_mnist
from diffusion.evaluation import FeatureStats, Setting, classify, evaluate_setting, frechet_distance
from evaluation.budget import Budget, network_rows
from evaluation.record import NotMeasured, QualityRecord
from evaluation.sampling import SampleBatch, engine_sampler
from evaluation.spread import measure_spread
from model_store import ModelStore
from model_store.loading import Generator, load_generator, load_module

GUIDANCE_SWEEP = (0.0, 1.0, 1.1, 1.3, 1.5, 2.0, 3.0, 4.0, 6.0)
"""Table 1 of evaluation.md: DDIM 50 steps, eta 0, these CFG scales (0 = unconditional)."""
STEPS_SWEEP = (10, 20, 50, 100)
"""Table 2: every sampler at these step counts (and DDPM at 1000)."""
CLASSIFIER_SWEEP = (0.0, 1.0, 2.0, 4.0, 8.0)
"""Table 3: classifier guidance at these scales (0 = the unguided conditional model), DDIM 50."""

COMMIT_ENV = "IMAGEGEN_COMMIT"
"""The commit to record where the checkout has no git (a working tree copied to a GPU machine)."""

OnRow = Callable[[dict[str, Any]], None]
"""Called with the results so far after every setting measured."""


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def commit() -> str:
    from imagegen.export import git_commit

    found = git_commit()
    return found if found != "unknown" else os.environ.get(COMMIT_ENV, "unknown")


@dataclass
class Run:
    """The models, data and budget of one `python -m evaluation evaluate`, and its results so far."""

    args: argparse.Namespace
    device: str
    gen: Generator
    eval_clf: torch.nn.Module
    reference: FeatureStats  # the test split's features, which every FD is measured against
    test_images: int
    sample_batch: SampleBatch
    budget: Budget
    results: dict[str, Any]
    on_row: OnRow | None = None
    train: ImageDataset | None = None  # loaded when a table first needs training images

    @property
    def images(self) -> int:
        """Images generated per setting."""
        return self.gen.num_classes * self.args.per_class

    @property
    def default_scale(self) -> float:
        return self.gen.card.defaults.get("guidance_scale", 3.0)

    def saved(self) -> None:
        if self.on_row:
            self.on_row(self.results)

    def cost(self, setting: Setting) -> int:
        return network_rows(setting.sampler, setting.steps, setting.guidance, setting.guidance_scale, self.images)

    def measure(self, setting: Setting, label: str, seed: int | None = None) -> dict:
        """The row of one setting (FD, accuracy, seconds), with a progress bar named `label`."""
        args = self.args
        with tqdm(total=self.images, desc=label, unit="img", file=sys.stderr, dynamic_ncols=True) as bar:
            row = evaluate_setting(self.sample_batch, setting, self.gen.num_classes, args.per_class, self.eval_clf,
                                   self.reference, args.batch_size, args.seed if seed is None else seed, self.device,
                                   progress=bar.update)
        print(json.dumps(row), file=sys.stderr)
        return row

    def timed_if_fits(self, setting: Setting, label: str, what: str, seed: int | None = None
                      ) -> tuple[dict | None, str]:
        """(the row of one setting, ''), timed into the budget's pace; or (None, why) where it would
        pass the budget. `label`: its progress bar; `what`: its name in the not-measured line."""
        ok, why = self.budget.fits((setting.sampler, setting.guidance), self.cost(setting))
        if not ok:
            print(f"not measured: {what}: {why}", file=sys.stderr)
            return None, why
        started = time.perf_counter()
        row = self.measure(setting, label, seed)
        self.budget.record((setting.sampler, setting.guidance), self.cost(setting), time.perf_counter() - started)
        return row, ""

    def measure_if_fits(self, key: str, setting: Setting, label: str) -> dict | None:
        """The row of one setting, or None (listed under not_measured) where it would pass the budget."""
        row, why = self.timed_if_fits(setting, label, f"{key} {label}")
        if row is None:
            self.results.setdefault("not_measured", []).append({"table": key, **setting.__dict__, "why": why})
        return row

    def table(self, key: str, settings: Iterable[Setting], label: Callable[[Setting], str],
              known: dict[Setting, dict] | None = None) -> None:
        """Measure the settings of table `key` that fit the budget, in the order given; a setting in
        `known` (the same images, already scored in another table) is copied, not sampled again."""
        rows: list[dict] = []
        for setting in settings:
            if known and setting in known:
                rows.append(dict(known[setting]))
                continue
            row = self.measure_if_fits(key, setting, label(setting))
            if row is not None:
                rows.append(row)
                self.results[key] = rows
                self.saved()
        if rows:
            self.results[key] = rows

    def real_fd(self, per_class: int, seed: int) -> float:
        """FD of per_class seeded random training images of every class against the test set."""
        if self.train is None:
            self.train = load_fashion_mnist("train")
        real = self.train.subset(per_class=per_class, seed=seed)
        feats, _ = classify(self.eval_clf, real.images.float() / 127.5 - 1, device=self.device)
        return round(frechet_distance(FeatureStats.of(feats), self.reference), 4)


def start(store: ModelStore, model_ref: str, classifier_ref: str, args: argparse.Namespace, device: str,
          with_classifier: bool, on_row: OnRow | None = None) -> Run:
    """Load the generator (with its guidance classifier where a setting needs it), the evaluation
    classifier and the test split's features, and write the results' provenance. The time budget
    counts from here: loading is part of the time a run has."""
    budget = Budget(60 * args.max_minutes if args.max_minutes else None)
    gen = load_generator(store, model_ref, device=device, with_classifier=with_classifier)
    _, eval_clf = load_module(store, classifier_ref, device=device)
    test = load_fashion_mnist("test")
    real_feats, _ = classify(eval_clf, test.images.float() / 127.5 - 1, device=device)
    # on CUDA a graph for each forward size the settings' batches make, and no other
    sample_batch, how = engine_sampler(gen, args.batch_size, accel=args.accel,
                                       images_per_setting=gen.num_classes * args.per_class)
    results: dict[str, Any] = {
        "model": model_ref, "eval_classifier": classifier_ref, "per_class": args.per_class,
        "reference": f"fashion-mnist test split ({len(test)} images)", "seed": args.seed,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
        "commit": commit(), "measured_at": utc_now(), "sampling": how,
    }
    return Run(args, device, gen, eval_clf, FeatureStats.of(real_feats), len(test), sample_batch, budget, results,
               on_row)


def one_setting(run: Run) -> None:
    """`results["setting"]`: the one setting of the flags (the card's scale unless --guidance-scale)."""
    a = run.args
    scale = run.default_scale if a.guidance_scale is None else a.guidance_scale
    run.results["setting"] = run.measure(Setting(a.sampler, a.steps, a.guidance, scale, a.eta), "setting")


def fill(run: Run, todo: list[NotMeasured]) -> None:
    """Measure a card's not-measured settings into their tables, cheapest first, so that a budget
    leaves out the fewest; each row says when and at which commit it was measured, as the card's
    tables were measured earlier."""
    settings = [(m.table, Setting(**m.setting.__dict__)) for m in todo]
    for key, setting in sorted(settings, key=lambda t: run.cost(t[1])):
        label = f"{setting.sampler} {setting.steps} {setting.guidance} s={setting.guidance_scale:g}"
        row = run.measure_if_fits(key, setting, label)
        if row is not None:
            run.results.setdefault(key, []).append({**row, "commit": run.results["commit"], "measured_at": utc_now()})
            run.saved()


def floor(run: Run) -> None:
    """The FD of as many training images as the test set holds; and, where the tables score fewer,
    of as many as they do (FD is biased upward at small n: the floor a perfect generator would score)."""
    full = run.test_images // run.gen.num_classes
    run.results["floor"] = {"fd": run.real_fd(full, run.args.seed), "n": full * run.gen.num_classes,
                            "what": "training images against the test set"}
    if run.args.per_class < full:
        run.results["floor"]["same_n"] = {"fd": run.real_fd(run.args.per_class, run.args.seed), "n": run.images}
    run.saved()


def guidance_sweep(run: Run) -> None:
    run.table("guidance_sweep", [Setting("ddim", 50, "cfg", s) for s in GUIDANCE_SWEEP],
              lambda st: f"cfg s={st.guidance_scale}")


def steps_sweep_scale(run: Run) -> float:
    """--guidance-scale, else the best-FD conditional scale of the guidance sweep just measured, else
    the card's."""
    if run.args.guidance_scale is not None:
        return run.args.guidance_scale
    best = QualityRecord.parse(run.results).best_guidance
    return run.default_scale if best is None else best.guidance_scale


def steps_sweep(run: Run) -> None:
    """Every sampler at every step count, cheap settings first, so that a budget that runs out leaves
    out the longest (DDPM 1000 last); rows the guidance sweep already holds are copied."""
    scale = steps_sweep_scale(run)
    runs = [(s, k) for k in STEPS_SWEEP for s in SAMPLERS] + [("ddpm", 1000)]
    known = {Setting(r["sampler"], r["steps"], r["guidance"], r["guidance_scale"], r["eta"]): r
             for r in run.results.get("guidance_sweep", [])}
    run.table("steps_sweep", [Setting(s, k, "cfg", scale) for s, k in runs], lambda st: f"{st.sampler} {st.steps}",
              known)
    if "steps_sweep" in run.results:
        order = list(SAMPLERS)
        run.results["steps_sweep"].sort(key=lambda r: (order.index(r["sampler"]), r["steps"]))


def classifier_guidance(run: Run) -> None:
    run.table("classifier_guidance", [Setting("ddim", 50, "classifier", s) for s in CLASSIFIER_SWEEP],
              lambda st: f"classifier s={st.guidance_scale}")


def tables(run: Run, names: list[str]) -> None:
    """The tables `names` (of evaluate.TABLES), in the order that keeps what a budget leaves out least
    useful: the defaults are chosen from the guidance and steps sweeps, so the classifier-guidance
    rows come after them, and the spread, which repeats the chosen default, last."""
    if "classifier" in names and run.gen.classifier is None:  # refused before minutes of other tables
        raise UsageError(f"--tables classifier: {run.gen.card.ref} links no guidance classifier")
    for name, measure in (("floor", floor), ("guidance", guidance_sweep), ("steps", steps_sweep),
                          ("classifier", classifier_guidance), ("spread", measure_spread)):
        if name in names:
            measure(run)
