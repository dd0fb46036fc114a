"""`imagegen evaluate`: FD and accuracy of a generator in the evaluation classifier's features
(evaluation.md), for one setting or for the model card's tables, written as JSON."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from diffusion.names import GUIDANCE_KINDS, MAX_STEPS, SAMPLERS
from imagegen.device import DEVICES, check_device
from imagegen.errors import UsageError
from imagegen.model_choice import pick_generator, resolve_kind
from model_store import ModelStore

GUIDANCE_SWEEP = (0.0, 1.0, 1.1, 1.3, 1.5, 2.0, 3.0, 4.0, 6.0)
"""Table 1 of evaluation.md: DDIM 50 steps, eta 0, these CFG scales (0 = unconditional)."""
STEPS_SWEEP = (10, 20, 50, 100)
"""Table 2: every sampler at these step counts (and DDPM at 1000)."""
CLASSIFIER_SWEEP = (0.0, 1.0, 2.0, 4.0, 8.0)
"""Table 3: classifier guidance at these scales (0 = the unguided conditional model), DDIM 50."""
TABLES = ("guidance", "steps", "classifier", "floor")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `imagegen evaluate`."""
    p.add_argument("--model", metavar="NAME[@VERSION]", help="generator to evaluate (default: as for generate)")
    p.add_argument("--eval-classifier", default="fmnist-eval-classifier", metavar="NAME[@VERSION]",
                   help="the evaluation classifier whose features define FD (default: fmnist-eval-classifier)")
    p.add_argument("--tables", nargs="*", choices=TABLES, default=None,
                   help="measure these tables of evaluation.md instead of one setting: guidance (CFG sweep), "
                        "steps (every sampler; at the best-FD scale of the guidance table, or --guidance-scale), "
                        "classifier (classifier guidance), floor (training images against the test set)")
    p.add_argument("--sampler", choices=list(SAMPLERS), default="ddim", help="one setting: sampler (default: ddim)")
    p.add_argument("--steps", type=int, default=50, help=f"one setting: steps 1..{MAX_STEPS} (default: 50)")
    p.add_argument("--guidance", choices=list(GUIDANCE_KINDS), default="cfg", help="one setting: guidance (default: cfg)")
    p.add_argument("--guidance-scale", type=float, default=None,
                   help="one setting: scale >= 0 (default: the card's); with --tables steps, the scale to use")
    p.add_argument("--eta", type=float, default=0.0, help="one setting: DDIM eta 0..1 (default: 0)")
    p.add_argument("--per-class", type=int, default=1000,
                   help="images generated per class (default: 1000, i.e. 10,000 for Fashion-MNIST)")
    p.add_argument("--batch-size", type=int, default=500, help="images sampled at once (default: 500)")
    p.add_argument("--seed", type=int, default=0, help="first seed; image i of class c uses seed + c * per_class + i")
    p.add_argument("--device", choices=list(DEVICES), default="auto", help="where to sample (default: auto)")
    p.add_argument("--store", metavar="DIR", default=None, help="model store root (default: $MODEL_STORE or the package's)")
    p.add_argument("--out", required=True, metavar="FILE", help="JSON file for the results")


def _check(args: argparse.Namespace) -> None:
    if not 1 <= args.steps <= MAX_STEPS:
        raise UsageError(f"--steps must be between 1 and {MAX_STEPS} (got {args.steps})")
    if args.per_class < 2:
        raise UsageError(f"--per-class must be >= 2 (a covariance needs two images) (got {args.per_class})")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1 (got {args.batch_size})")
    if args.guidance_scale is not None and args.guidance_scale < 0:
        raise UsageError(f"--guidance-scale must be >= 0 (got {args.guidance_scale})")
    if not 0 <= args.eta <= 1:
        raise UsageError(f"--eta must be between 0 and 1 (got {args.eta})")
    if args.eta and args.sampler != "ddim":
        raise UsageError("--eta is only for --sampler ddim")


def run(args: argparse.Namespace) -> int:
    """Load the models, measure, write the JSON file, print its path and the figures."""
    _check(args)
    store = ModelStore(args.store)
    card = pick_generator(store, args.model)
    clf_card = resolve_kind(store, args.eval_classifier, "eval-classifier", "--eval-classifier")
    device = check_device(args.device)
    out = Path(args.out)
    results = evaluate(store, card.ref, clf_card.ref, args, device)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({"out": str(out), **{k: v for k, v in results.items() if k in ("floor", "setting")}}))
    return 0


def evaluate(store: ModelStore, model_ref: str, classifier_ref: str, args: argparse.Namespace, device: str) -> dict[str, Any]:
    import torch
    from tqdm import tqdm

    from diffusion.data import load_fashion_mnist
    from diffusion.evaluation import FeatureStats, Setting, classify, evaluate_setting, frechet_distance
    from diffusion.sampling import sample
    from imagegen.export import git_commit
    from model_store.loading import load_generator, load_module

    tables = args.tables
    need_classifier = tables is None and args.guidance == "classifier" or (tables and "classifier" in tables)
    gen = load_generator(store, model_ref, device=device, with_classifier=bool(need_classifier))
    _, eval_clf = load_module(store, classifier_ref, device=device)
    test = load_fashion_mnist("test")
    real_feats, _ = classify(eval_clf, test.images.float() / 127.5 - 1, device=device)
    reference = FeatureStats.of(real_feats)

    def sample_batch(specs):
        return sample(gen.model, gen.schedule, specs, gen.image_shape, gen.num_classes,
                      classifier=gen.classifier, device=device, clip_x0=gen.clip_x0)

    def measure(setting: Setting, label: str) -> dict:
        total = gen.num_classes * args.per_class
        with tqdm(total=total, desc=label, unit="img", file=sys.stderr, dynamic_ncols=True) as bar:
            row = evaluate_setting(sample_batch, setting, gen.num_classes, args.per_class, eval_clf, reference,
                                   args.batch_size, args.seed, device, progress=bar.update)
        print(json.dumps(row), file=sys.stderr)
        return row

    default_scale = gen.card.defaults.get("guidance_scale", 3.0)
    results: dict[str, Any] = {
        "model": model_ref, "eval_classifier": classifier_ref, "per_class": args.per_class,
        "reference": f"fashion-mnist test split ({len(test)} images)", "seed": args.seed,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
        "commit": git_commit(), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if tables is None:
        scale = default_scale if args.guidance_scale is None else args.guidance_scale
        results["setting"] = measure(Setting(args.sampler, args.steps, args.guidance, scale, args.eta), "setting")
        return results
    if "floor" in tables:
        train = load_fashion_mnist("train").subset(per_class=len(test) // gen.num_classes, seed=args.seed)
        train_feats, _ = classify(eval_clf, train.images.float() / 127.5 - 1, device=device)
        results["floor"] = {"fd": round(frechet_distance(FeatureStats.of(train_feats), reference), 4),
                            "n": len(train), "what": "training images against the test set"}
    if "guidance" in tables:
        results["guidance_sweep"] = [measure(Setting("ddim", 50, "cfg", s), f"cfg s={s}") for s in GUIDANCE_SWEEP]
    if "steps" in tables:
        if args.guidance_scale is not None:
            best = args.guidance_scale
        elif "guidance_sweep" in results:
            best = min((r for r in results["guidance_sweep"] if r["guidance_scale"] > 0), key=lambda r: r["fd"])["guidance_scale"]
        else:
            best = default_scale
        runs = [(s, k) for s in SAMPLERS for k in STEPS_SWEEP] + [("ddpm", 1000)]
        results["steps_sweep"] = [measure(Setting(s, k, "cfg", best), f"{s} {k}") for s, k in runs]
    if "classifier" in tables:
        if gen.classifier is None:
            raise UsageError(f"--tables classifier: {model_ref} links no guidance classifier")
        results["classifier_guidance"] = [measure(Setting("ddim", 50, "classifier", s), f"classifier s={s}")
                                          for s in CLASSIFIER_SWEEP]
    return results
