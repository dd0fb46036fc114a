"""`python -m evaluation evaluate --tables spread`: how far FD moves between repeats at the tables' sample size.

The card's default setting is measured again on `--repeats` seed ranges disjoint from the tables'
(range r starts at seed + (r + 1) x images), and as many training images are drawn `--repeats` times
(subset seeds seed + 1 + r) for the real-data floor's own spread. `--paired-with SAMPLER:STEPS`
measures a second setting on the same seed ranges: the spread of a difference between two rows that
share their seeds, as the tables' rows do. Every repeat goes through the evaluation's time budget;
what it leaves out is counted in `spread.left_out`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from contract.errors import UsageError
from contract.names import MAX_STEPS, SAMPLERS

REPEATS = 5
"""`--tables spread`: how many disjoint seed ranges the default setting is measured with."""


def paired_setting(value: str) -> tuple[str, int]:
    """`--paired-with SAMPLER:STEPS` as (sampler, steps)."""
    sampler, _, steps = value.partition(":")
    if sampler not in SAMPLERS or not steps.isdigit() or not 1 <= int(steps) <= MAX_STEPS:
        raise UsageError(f"--paired-with must be SAMPLER:STEPS with a sampler of {', '.join(SAMPLERS)} and steps "
                         f"1..{MAX_STEPS} (got {value!r})")
    return sampler, int(steps)


def adds_spread(tables: list[str] | None) -> bool:
    """Whether `--tables` asks for the spread alone: with --write-card it is added to the card's
    tables, which it is meant to qualify, rather than replacing them."""
    return bool(tables) and set(tables) == {"spread"}


def stats(values: list[float]) -> dict[str, float] | None:
    """Mean, sample standard deviation, min and max of two or more values (None with fewer)."""
    import statistics

    if len(values) < 2:
        return None
    return {"mean": round(statistics.fmean(values), 4), "sd": round(statistics.stdev(values), 4),
            "min": min(values), "max": max(values)}


def _reusable(card: Any, args: argparse.Namespace, setting: dict[str, Any], images: int) -> dict[int, dict]:
    """The repeats of the card's spread of the same setting and size, by first seed, each with its
    own commit and time (only when the spread is being added to that card)."""
    old = (card.quality or {}).get("spread") if args.write_card and adds_spread(args.tables) else None
    if not (isinstance(old, dict) and old.get("setting") == setting and old.get("n") == images):
        return {}
    return {r["seed"]: {**r, "commit": r.get("commit", old.get("commit")),
                        "measured_at": r.get("measured_at", old.get("measured_at"))}
            for r in old.get("repeats") or [] if isinstance(r, dict) and "seed" in r}


def measure_spread(results: dict[str, Any], card: Any, args: argparse.Namespace, images: int, default_scale: float,
                   timed_if_fits: Callable[..., tuple[dict | None, str]], real_fd: Callable[[int, int], float],
                   on_row: Callable[[dict[str, Any]], None] | None) -> None:
    """Measure the spread into `results["spread"]`: `timed_if_fits(setting, label, what, seed=)` runs
    one setting within the budget, `real_fd(per_class, seed)` scores a draw of training images."""
    from diffusion.evaluation import Setting

    d = card.defaults
    if args.choose_defaults:  # the defaults this run's tables pick, which the card is about to get
        from evaluation.quality_card import choose_defaults

        choice = choose_defaults(results, d)
        d = choice.defaults if choice is not None else d
    setting = Setting(d.get("sampler", "ddim"), int(d.get("steps", 50)), d.get("guidance", "cfg"),
                      float(d.get("guidance_scale", default_scale)), float(d.get("eta", 0.0)))
    # seed ranges after the tables' own (seed .. seed + images - 1), so that no image repeats one
    # of theirs; the real draws use other subset seeds than the floor's same-n row (seed)
    floor_seeds = [args.seed + 1 + r for r in range(args.repeats)]
    floor_fds = [real_fd(args.per_class, s) for s in floor_seeds]
    spread: dict[str, Any] = {
        "setting": setting.__dict__, "n": images, "repeats_asked": args.repeats, "repeats": [],
        "floor": {"n": images, "seeds": floor_seeds, "fds": floor_fds, "fd": stats(floor_fds)},
        "commit": results["commit"], "measured_at": results["measured_at"], "device": results["device"],
        "torch": results["torch"]}
    known = _reusable(card, args, setting.__dict__, images)

    def repeat(st: Setting, first: int, label: str) -> dict | None:
        """One repeat's row (fd, accuracy, seconds), or None where the budget ends."""
        row, why = timed_if_fits(st, f"{label} (seeds from {first})", label, seed=first)
        if row is None:
            spread.setdefault("left_out", {"why": why})
            return None
        return {"seed": first, **{k: row[k] for k in ("fd", "accuracy", "sampling_seconds")}}

    def done() -> None:
        results["spread"] = spread
        if on_row:
            on_row(results)

    for r in range(args.repeats):
        first = args.seed + (r + 1) * images
        row = known.get(first) or repeat(setting, first, f"spread {r + 1}/{args.repeats}")
        if row is None:
            spread["left_out"]["repeats"] = args.repeats - r
            break
        spread["repeats"].append(row)
        spread["fd"] = stats([x["fd"] for x in spread["repeats"]])
        spread["accuracy"] = stats([x["accuracy"] for x in spread["repeats"] if x["accuracy"] is not None])
        done()
    if args.paired is not None:
        # the same seed ranges with another sampler or step count: the spread of a paired difference
        other = Setting(args.paired[0], args.paired[1], setting.guidance, setting.guidance_scale)
        paired: dict[str, Any] = {"setting": other.__dict__, "repeats": [], "differences": []}
        spread["paired"] = paired
        for i, base in enumerate(spread["repeats"]):
            row = repeat(other, base["seed"], f"paired {i + 1}/{len(spread['repeats'])}")
            if row is None:
                spread["left_out"]["paired"] = len(spread["repeats"]) - i
                break
            paired["repeats"].append(row)
            paired["differences"].append(round(row["fd"] - base["fd"], 4))
            paired["difference"] = stats(paired["differences"])
            done()
    results["spread"] = spread
