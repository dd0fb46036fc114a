"""`python -m evaluation evaluate --tables spread`: how far FD moves between repeats at the tables' sample size.

The card's default setting is measured again on `--repeats` seed ranges disjoint from the tables'
(range r starts at seed + (r + 1) x images), and as many training images are drawn `--repeats` times
(subset seeds seed + 1 + r) for the real-data floor's own spread. `--paired-with SAMPLER:STEPS`
measures a second setting on the same seed ranges: the spread of a difference between two rows that
share their seeds, as the tables' rows do. Every repeat goes through the evaluation's time budget;
what it leaves out is counted in `spread.left_out`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from contract.errors import UsageError
from contract.names import MAX_STEPS, SAMPLERS
from evaluation.record import QualityRecord

if TYPE_CHECKING:
    from diffusion.evaluation import Setting
    from evaluation.measure import Run

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


def _reusable(run: Run, setting: dict[str, Any]) -> dict[int, dict]:
    """The repeats of the card's spread of the same setting and size, by first seed, each with its
    own commit and time (only when the spread is being added to that card)."""
    args = run.args
    old = QualityRecord.parse(run.gen.card.quality).spread if args.write_card and adds_spread(args.tables) else None
    if old is None or old.setting is None or old.setting.to_dict() != setting or old.n != run.images:
        return {}
    return {r.seed: {**r.to_dict(), "commit": r.commit or old.commit, "measured_at": r.measured_at or old.measured_at}
            for r in old.repeats if r.seed is not None}


def spread_setting(run: Run) -> Setting:
    """The setting the spread repeats: the card's defaults, or with --choose-defaults the defaults
    this run's tables pick, which the card is about to get."""
    from diffusion.evaluation import Setting

    d = run.gen.card.defaults
    if run.args.choose_defaults:
        from evaluation.quality_card import choose_defaults

        choice = choose_defaults(QualityRecord.parse(run.results), d)
        d = choice.defaults if choice is not None else d
    return Setting(d.get("sampler", "ddim"), int(d.get("steps", 50)), d.get("guidance", "cfg"),
                   float(d.get("guidance_scale", run.default_scale)), float(d.get("eta", 0.0)))


def _repeat(run: Run, spread: dict[str, Any], setting: Setting, first: int, label: str) -> dict | None:
    """One repeat's row (seed, fd, accuracy, seconds), or None where the budget ends (said in the
    spread's `left_out`)."""
    row, why = run.timed_if_fits(setting, f"{label} (seeds from {first})", label, seed=first)
    if row is None:
        spread.setdefault("left_out", {"why": why})
        return None
    return {"seed": first, **{k: row[k] for k in ("fd", "accuracy", "sampling_seconds")}}


def _save(run: Run, spread: dict[str, Any]) -> None:
    run.results["spread"] = spread
    run.saved()


def measure_spread(run: Run) -> None:
    """Measure the spread into `run.results["spread"]`: the repeats of the default setting, the real
    draws, and with --paired-with the paired setting on the same seed ranges."""
    args, images = run.args, run.images
    setting = spread_setting(run)
    # seed ranges after the tables' own (seed .. seed + images - 1), so that no image repeats one
    # of theirs; the real draws use other subset seeds than the floor's same-n row (seed)
    floor_seeds = [args.seed + 1 + r for r in range(args.repeats)]
    floor_fds = [run.real_fd(args.per_class, s) for s in floor_seeds]
    results = run.results
    spread: dict[str, Any] = {
        "setting": setting.__dict__, "n": images, "repeats_asked": args.repeats, "repeats": [],
        "floor": {"n": images, "seeds": floor_seeds, "fds": floor_fds, "fd": stats(floor_fds)},
        "commit": results["commit"], "measured_at": results["measured_at"], "device": results["device"],
        "torch": results["torch"]}
    known = _reusable(run, setting.__dict__)
    for r in range(args.repeats):
        first = args.seed + (r + 1) * images
        row = known.get(first) or _repeat(run, spread, setting, first, f"spread {r + 1}/{args.repeats}")
        if row is None:
            spread["left_out"]["repeats"] = args.repeats - r
            break
        spread["repeats"].append(row)
        spread["fd"] = stats([x["fd"] for x in spread["repeats"]])
        spread["accuracy"] = stats([x["accuracy"] for x in spread["repeats"] if x["accuracy"] is not None])
        _save(run, spread)
    if args.paired is not None:
        _measure_paired(run, spread, setting)
    results["spread"] = spread


def _measure_paired(run: Run, spread: dict[str, Any], setting: Setting) -> None:
    """The same seed ranges with another sampler or step count: the spread of a paired difference."""
    from diffusion.evaluation import Setting

    other = Setting(run.args.paired[0], run.args.paired[1], setting.guidance, setting.guidance_scale)
    paired: dict[str, Any] = {"setting": other.__dict__, "repeats": [], "differences": []}
    spread["paired"] = paired
    for i, base in enumerate(spread["repeats"]):
        row = _repeat(run, spread, other, base["seed"], f"paired {i + 1}/{len(spread['repeats'])}")
        if row is None:
            spread["left_out"]["paired"] = len(spread["repeats"]) - i
            break
        paired["repeats"].append(row)
        paired["differences"].append(round(row["fd"] - base["fd"], 4))
        paired["difference"] = stats(paired["differences"])
        _save(run, spread)
