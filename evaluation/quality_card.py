"""The measured tables as a generator's card `quality`, and the sampling defaults chosen from them.

Torch-free: it reads and writes JSON data only, so it can be tested on hand-made tables and run
wherever the store can be read.

The rule for the defaults (issue #3: "the fewest steps whose FD is within 10% of the best measured,
at the scale that trades FD and accuracy best"), made precise:

1. **Scale.** Among the conditional rows of the guidance sweep (scale > 0, so that accuracy means
   something), keep those whose accuracy is at least `ACCURACY_SHARE` (95%) of the best accuracy
   measured; the default scale is the one of these with the lowest FD (ties: the smaller scale).
   So: the sharpest images (FD) that give up at most 5% of the class accuracy guidance can buy.
   A plain "lowest FD" would often pick a scale whose images too often show another class; a plain
   "highest accuracy" picks the largest scale, whose FD is worst.
2. **Sampler and steps.** Among the rows of the steps sweep whose FD is within `FD_TOLERANCE` (10%)
   of the best FD of that sweep, the one with the fewest model evaluations per image (Heun's step
   counts twice, as it costs twice); ties: the lower FD, then the sampler order of
   `contract.names.SAMPLERS`. Evaluations rather than the `steps` number, because the point of
   fewer steps is a faster request.

The steps sweep is measured at the best-FD scale of the guidance sweep (evaluation.md), which need
not be the scale of rule 1; the reason text then says that the chosen combination itself was not
measured. A missing table is said, and what it would have decided is kept from the card.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from contract.names import SAMPLERS
from evaluation.budget import evaluations
from model_store import ModelCard, ModelStore

ACCURACY_SHARE = 0.95
"""Rule 1: a scale qualifies if its accuracy is at least this share of the best accuracy measured."""

FD_TOLERANCE = 0.10
"""Rule 2: a (sampler, steps) qualifies if its FD is at most (1 + this) times the best FD measured."""

RULE = (f"scale: the lowest FD among the guidance-sweep scales whose accuracy is at least "
        f"{ACCURACY_SHARE:.0%} of the best accuracy measured; sampler and steps: the fewest model "
        f"evaluations per image among the steps-sweep rows whose FD is within {FD_TOLERANCE:.0%} of "
        f"the best FD of that sweep")
"""The rule, in words, as the card records it."""

TABLE_KEYS = ("guidance_sweep", "steps_sweep", "classifier_guidance", "floor", "spread")
"""The tables of evaluation.md, as `python -m evaluation evaluate --tables` names them in its JSON, and the
spread (the default setting measured again with other seeds: how far FD moves between repeats)."""

PROVENANCE_KEYS = ("model", "eval_classifier", "per_class", "reference", "seed", "device", "torch", "commit",
                   "measured_at", "sampling", "not_measured")
"""What the card keeps beside the tables: what was measured, with what, where and when."""

NOTES_MARKER = "Sampling defaults chosen from the measured tables:"
"""Starts the paragraph of the card's notes that `write_quality` writes (and replaces on a rerun)."""

# sentences of older notes that measured tables make false
_STALE = re.compile(r"placeholder|quality table is empty", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<!e\.g\.)(?<!i\.e\.)(?<=\.)\s+")


@dataclass(frozen=True)
class DefaultsChoice:
    """Sampling defaults chosen from the tables, and why."""

    defaults: dict[str, Any]  # sampler, steps, guidance_scale, guidance: what the card's `defaults` become
    reason: str  # for people: which rows decided, with their numbers
    measured: bool  # whether the chosen combination itself is a measured row

    def to_dict(self) -> dict[str, Any]:
        return {**self.defaults, "measured": self.measured, "rule": RULE, "reason": self.reason}


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _cfg_rows(rows: Any) -> list[dict]:
    if not isinstance(rows, list):
        return []
    return [r for r in rows if isinstance(r, dict) and r.get("guidance", "cfg") == "cfg" and _number(r.get("fd"))
            and _number(r.get("guidance_scale"))]


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def choose_scale(guidance_sweep: Any) -> tuple[dict, str] | None:
    """Rule 1 on the guidance sweep: (the chosen row, why), or None without a conditional row."""
    rows = [r for r in _cfg_rows(guidance_sweep) if r["guidance_scale"] > 0 and _number(r.get("accuracy"))]
    if not rows:
        return None
    best_acc = max(r["accuracy"] for r in rows)
    eligible = [r for r in rows if r["accuracy"] >= ACCURACY_SHARE * best_acc]
    chosen = min(eligible, key=lambda r: (r["fd"], r["guidance_scale"]))
    lowest = min(rows, key=lambda r: (r["fd"], r["guidance_scale"]))
    top = min((r for r in rows if r["accuracy"] == best_acc), key=lambda r: r["guidance_scale"])
    why = (f"scale {chosen['guidance_scale']:g} has FD {chosen['fd']:g} and accuracy {_pct(chosen['accuracy'])}, the "
           f"lowest FD among the scales with at least {ACCURACY_SHARE:.0%} of the best accuracy "
           f"({_pct(best_acc)} at scale {top['guidance_scale']:g})")
    if lowest is not chosen:
        why += (f"; the lowest FD of the sweep, {lowest['fd']:g} at scale {lowest['guidance_scale']:g}, has only "
                f"{_pct(lowest['accuracy'])} accuracy")
    return chosen, why


def choose_steps(steps_sweep: Any) -> tuple[dict, str] | None:
    """Rule 2 on the steps sweep: (the chosen row, why), or None without a row."""
    rows = _cfg_rows(steps_sweep)
    rows = [r for r in rows if r.get("sampler") in SAMPLERS and isinstance(r.get("steps"), int)]
    if not rows:
        return None
    best = min(rows, key=lambda r: r["fd"])
    within = [r for r in rows if r["fd"] <= (1 + FD_TOLERANCE) * best["fd"]]
    chosen = min(within, key=lambda r: (evaluations(r["sampler"], r["steps"]), r["fd"],
                                        list(SAMPLERS).index(r["sampler"]), r["steps"]))
    n = evaluations(chosen["sampler"], chosen["steps"])
    why = (f"{chosen['sampler']} with {chosen['steps']} steps ({n} model evaluations per image) has FD "
           f"{chosen['fd']:g}, within {FD_TOLERANCE:.0%} of the best FD of the steps sweep ({best['fd']:g}, "
           f"{best['sampler']} {best['steps']} steps), with the fewest evaluations of the {len(within)} rows "
           f"that are")
    return chosen, why


def choose_defaults(quality: dict[str, Any], current: dict[str, Any] | None = None) -> DefaultsChoice | None:
    """The card defaults the tables in `quality` pick (see the module's rule), or None when it has
    neither a guidance sweep nor a steps sweep. `current` (the card's defaults) supplies what a
    missing table would have decided."""
    current = dict(current or {})
    scale = choose_scale(quality.get("guidance_sweep"))
    steps = choose_steps(quality.get("steps_sweep"))
    if scale is None and steps is None:
        return None
    reasons = []
    if scale is not None:
        s = scale[0]["guidance_scale"]
        reasons.append(f"Scale: {scale[1]}.")
    elif steps is not None:
        s = steps[0]["guidance_scale"]
        reasons.append(f"Scale: no guidance sweep was measured; {s:g}, the scale of the steps sweep.")
    if steps is not None:
        sampler, n_steps = steps[0]["sampler"], steps[0]["steps"]
        reasons.append(f"Sampler and steps: {steps[1]}.")
        sweep_scale = steps[0]["guidance_scale"]
        measured = sweep_scale == s
        if not measured:
            reasons.append(f"The steps sweep was measured at scale {sweep_scale:g} (the best-FD scale, as "
                           f"evaluation.md asks), so {sampler} {n_steps} steps at scale {s:g} is not itself a "
                           f"measured row: the choice assumes the samplers rank alike at both scales.")
    else:
        # the guidance sweep's own setting (DDIM 50, evaluation.md) is the one combination it measured
        sampler, n_steps, measured = scale[0]["sampler"], scale[0]["steps"], True
        reasons.append(f"Sampler and steps: no steps sweep was measured; {sampler} {n_steps} steps, the "
                       f"setting of the guidance sweep.")
    defaults = {**{k: v for k, v in current.items() if k not in ("eta",)},
                "sampler": sampler, "steps": n_steps, "guidance_scale": float(s), "guidance": "cfg"}
    return DefaultsChoice(defaults, " ".join(reasons), measured)


def card_quality(results: dict[str, Any]) -> dict[str, Any]:
    """The part of `python -m evaluation evaluate --tables` results that goes into a card's `quality`."""
    tables = {k: results[k] for k in TABLE_KEYS if k in results}
    if not tables:
        raise ValueError("the results hold none of the tables " + ", ".join(TABLE_KEYS))
    return {**tables, **{k: results[k] for k in PROVENANCE_KEYS if k in results}}


def notes_with(notes: str, paragraph: str | None) -> str:
    """`notes` without the sentences that measured tables make false (placeholders, an empty quality
    table) and without an earlier defaults paragraph, then `paragraph` (if any) as its last paragraph."""
    kept = []
    for para in notes.split("\n\n"):
        if para.startswith(NOTES_MARKER):
            continue
        sentences = [s for s in _SENTENCE_END.split(para) if not _STALE.search(s)]
        if sentences:
            kept.append(" ".join(sentences))
    if paragraph:
        kept.append(paragraph)
    return "\n\n".join(kept)


ROW_ORDER = {"guidance_sweep": lambda r: r["guidance_scale"], "classifier_guidance": lambda r: r["guidance_scale"],
             "steps_sweep": lambda r: (list(SAMPLERS).index(r["sampler"]), r["steps"])}
"""How the rows of each table are ordered in a card."""


def spoken_list(items: list[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def later_commits(quality: dict[str, Any]) -> list[str]:
    """The commits of rows added by `python -m evaluation evaluate --fill-card` (rows that carry their own commit
    because it may differ from the tables'), oldest first: by the first `measured_at` of each."""
    first: dict[str, str] = {}
    for key in ROW_ORDER:
        for r in quality.get(key) or []:
            if isinstance(r, dict) and r.get("commit"):
                when = str(r.get("measured_at", ""))
                first[r["commit"]] = min(first.get(r["commit"], when), when)
    return sorted(first, key=lambda c: first[c])


def filled_quality(quality: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    """A card's `quality` with the rows of `python -m evaluation evaluate --fill-card` results added to its tables
    (in table order) and `not_measured` replaced by what the fill itself left out."""
    merged = dict(quality)
    for key, order in ROW_ORDER.items():
        if results.get(key):
            merged[key] = sorted([*quality.get(key, []), *results[key]], key=order)
    if results.get("not_measured"):
        merged["not_measured"] = results["not_measured"]
    else:
        merged.pop("not_measured", None)
    return merged


def write_quality(store: ModelStore, ref: str, results: dict[str, Any], choose: bool = False
                  ) -> tuple[ModelCard, DefaultsChoice | None]:
    """Write the tables of `results` into the card of generator `ref` (replacing its `quality`) and,
    with `choose`, the defaults they pick, with the reason in `quality.defaults_choice` and in the
    notes. The weights, and so the sha256, are untouched."""
    card = _generator(store, ref)
    return _write(store, card, card_quality(results), choose)


def fill_quality(store: ModelStore, ref: str, results: dict[str, Any], choose: bool = False
                 ) -> tuple[ModelCard, DefaultsChoice | None]:
    """Add the rows of `python -m evaluation evaluate --fill-card` results to the tables of generator `ref`'s
    card (`filled_quality`); with `choose`, choose the defaults again from the fuller tables."""
    card = _generator(store, ref)
    return _write(store, card, filled_quality(card.quality or {}, results), choose)


def add_spread(store: ModelStore, ref: str, results: dict[str, Any], choose: bool = False
               ) -> tuple[ModelCard, DefaultsChoice | None]:
    """Add the `spread` of `python -m evaluation evaluate --tables spread` results to the tables of generator
    `ref`'s card (replacing an earlier spread), keeping the tables. The spread records its own commit
    and time; it must be of the card's sample size and evaluation classifier, or it says nothing about
    the card's figures. `choose` is accepted for the caller's sake: the spread changes no default."""
    card = _generator(store, ref)
    quality = dict(card.quality or {})
    if not any(quality.get(k) for k in TABLE_KEYS if k != "spread"):
        raise ValueError(f"{card.ref} has no quality tables for a spread to qualify: measure them first")
    spread = results.get("spread")
    if not isinstance(spread, dict):
        raise ValueError("the results hold no spread")
    for key in ("per_class", "eval_classifier"):
        if results.get(key) != quality.get(key):
            raise ValueError(f"the spread was measured with {key} {results.get(key)!r}, the card's tables with "
                             f"{quality.get(key)!r}: it would not describe them")
    quality["spread"] = spread
    return _write(store, card, quality, False)


def _generator(store: ModelStore, ref: str) -> ModelCard:
    card = store.resolve(ref)
    if card.kind != "generator":
        raise ValueError(f"{card.ref} is a {card.kind}, not a generator: only generators carry quality tables")
    return card


def _write(store: ModelStore, card: ModelCard, quality: dict[str, Any], choose: bool
           ) -> tuple[ModelCard, DefaultsChoice | None]:
    changes: dict[str, Any] = {"quality": quality}
    choice = choose_defaults(quality, card.defaults) if choose else None
    if choice is not None:
        quality["defaults_choice"] = choice.to_dict()
        changes["defaults"] = choice.defaults
    # the notes' defaults paragraph follows the quality's defaults_choice: written anew, kept by a fill
    # that does not choose, dropped when new tables replace the ones it was chosen from
    paragraph = None
    d = quality.get("defaults_choice")
    if isinstance(d, dict) and "reason" in d:
        commits = [str(quality.get("commit", "unknown"))] + later_commits(quality)
        at = f"commit{'s' if len(commits) > 1 else ''} {spoken_list(commits)}"
        paragraph = (f"{NOTES_MARKER} {d['sampler']}, {d['steps']} steps, CFG scale {d['guidance_scale']:g} "
                     f"(measured on {quality.get('device', 'an unrecorded device')} at {at}). {d['reason']}")
    changes["notes"] = notes_with(card.notes, paragraph)
    return store.update_card(card, changes), choice
