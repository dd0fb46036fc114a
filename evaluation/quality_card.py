"""The measured tables as a generator's card `quality`, and the sampling defaults chosen from them.

Torch-free: the chooser reads the typed record (evaluation.record), the writers write the card's
JSON, so both can be tested on hand-made tables and run wherever the store can be read.

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

import re
from collections.abc import Sequence
from typing import Any

from contract.names import SAMPLERS
from evaluation.budget import evaluations
from evaluation.record import DefaultsChoice, Provenance, QualityRecord, Row
from evaluation.tables import pct, spoken_list
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

PROVENANCE_KEYS = Provenance.KEYS
"""What the card keeps beside the tables: what was measured, with what, where and when."""

NOTES_MARKER = "Sampling defaults chosen from the measured tables:"
"""Starts the paragraph of the card's notes that `write_quality` writes (and replaces on a rerun)."""

# sentences of older notes that measured tables make false
_STALE = re.compile(r"placeholder|quality table is empty", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<!e\.g\.)(?<!i\.e\.)(?<=\.)\s+")



def choose_scale(guidance_sweep: Sequence[Row]) -> tuple[Row, str] | None:
    """Rule 1 on the guidance sweep: (the chosen row, why), or None without a conditional row."""
    rows = [r for r in guidance_sweep if r.guidance == "cfg" and r.guidance_scale > 0 and r.accuracy is not None]
    if not rows:
        return None
    best_acc = max(r.accuracy for r in rows)
    eligible = [r for r in rows if r.accuracy >= ACCURACY_SHARE * best_acc]
    chosen = min(eligible, key=lambda r: (r.fd, r.guidance_scale))
    lowest = min(rows, key=lambda r: (r.fd, r.guidance_scale))
    top = min((r for r in rows if r.accuracy == best_acc), key=lambda r: r.guidance_scale)
    why = (f"scale {chosen.guidance_scale:g} has FD {chosen.fd:g} and accuracy {pct(chosen.accuracy)}, the lowest FD "
           f"among the scales with at least {ACCURACY_SHARE:.0%} of the best accuracy ({pct(best_acc)} at scale "
           f"{top.guidance_scale:g})")
    if lowest is not chosen:
        why += (f"; the lowest FD of the sweep, {lowest.fd:g} at scale {lowest.guidance_scale:g}, has only "
                f"{pct(lowest.accuracy)} accuracy")
    return chosen, why


def choose_steps(steps_sweep: Sequence[Row]) -> tuple[Row, str] | None:
    """Rule 2 on the steps sweep: (the chosen row, why), or None without a row."""
    rows = [r for r in steps_sweep if r.guidance == "cfg" and r.sampler in SAMPLERS]
    if not rows:
        return None
    best = min(rows, key=lambda r: r.fd)
    within = [r for r in rows if r.fd <= (1 + FD_TOLERANCE) * best.fd]
    chosen = min(within, key=lambda r: (evaluations(r.sampler, r.steps), r.fd, list(SAMPLERS).index(r.sampler),
                                        r.steps))
    why = (f"{chosen.sampler} with {chosen.steps} steps ({evaluations(chosen.sampler, chosen.steps)} model evaluations "
           f"per image) has FD {chosen.fd:g}, within {FD_TOLERANCE:.0%} of the best FD of the steps sweep "
           f"({best.fd:g}, {best.sampler} {best.steps} steps), with the fewest evaluations of the {len(within)} rows "
           f"that are")
    return chosen, why


def choose_defaults(record: QualityRecord, current: dict[str, Any] | None = None) -> DefaultsChoice | None:
    """The card defaults the tables of `record` pick (see the module's rule), or None when it has
    neither a guidance sweep nor a steps sweep. `current` (the card's defaults) supplies what a
    missing table would have decided."""
    scale, steps = choose_scale(record.guidance_sweep), choose_steps(record.steps_sweep)
    if scale is None and steps is None:
        return None
    if scale is not None:
        s = scale[0].guidance_scale
        reasons = [f"Scale: {scale[1]}."]
    else:
        s = steps[0].guidance_scale
        reasons = [f"Scale: no guidance sweep was measured; {s:g}, the scale of the steps sweep."]
    if steps is not None:
        row = steps[0]
        reasons.append(f"Sampler and steps: {steps[1]}.")
        measured = row.guidance_scale == s
        if not measured:
            reasons.append(f"The steps sweep was measured at scale {row.guidance_scale:g} (the best-FD scale, as "
                           f"evaluation.md asks), so {row.sampler} {row.steps} steps at scale {s:g} is not itself a "
                           f"measured row: the choice assumes the samplers rank alike at both scales.")
    else:
        # the guidance sweep's own setting (DDIM 50, evaluation.md) is the one combination it measured
        row, measured = scale[0], True
        reasons.append(f"Sampler and steps: no steps sweep was measured; {row.sampler} {row.steps} steps, the "
                       f"setting of the guidance sweep.")
    defaults = {**{k: v for k, v in (current or {}).items() if k != "eta"},
                "sampler": row.sampler, "steps": row.steps, "guidance_scale": float(s), "guidance": "cfg"}
    return DefaultsChoice(defaults, " ".join(reasons), measured, RULE)


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


ROW_ORDER = {"guidance_sweep": lambda r: r.guidance_scale, "classifier_guidance": lambda r: r.guidance_scale,
             "steps_sweep": lambda r: (list(SAMPLERS).index(r.sampler), r.steps)}
"""How the rows (`Row`) of each table are ordered in a card, table by table as the record reads them."""


def filled_quality(quality: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    """A card's `quality` with the rows of `python -m evaluation evaluate --fill-card` results added to
    its tables (in table order) and `not_measured` replaced by what the fill itself left out."""
    card, fill = QualityRecord.parse(quality), QualityRecord.parse(results)
    merged = dict(quality)
    for key, order in ROW_ORDER.items():
        if fill.table(key):
            merged[key] = [r.to_dict() for r in sorted(card.table(key) + fill.table(key), key=order)]
    merged.pop("not_measured", None)
    if fill.provenance.not_measured:
        merged["not_measured"] = [m.to_dict() for m in fill.provenance.not_measured]
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
    """Add the rows of `python -m evaluation evaluate --fill-card` results to the tables of generator
    `ref`'s card (`filled_quality`); with `choose`, choose the defaults again from the fuller tables."""
    card = _generator(store, ref)
    return _write(store, card, filled_quality(card.quality, results), choose)


def add_spread(store: ModelStore, ref: str, results: dict[str, Any], choose: bool = False
               ) -> tuple[ModelCard, DefaultsChoice | None]:
    """Add the `spread` of `python -m evaluation evaluate --tables spread` results to the tables of
    generator `ref`'s card (replacing an earlier spread), keeping the tables. The spread records its
    own commit and time; it must be of the card's sample size and evaluation classifier, or it says
    nothing about the card's figures. `choose` is accepted for the caller's sake: the spread changes
    no default."""
    card = _generator(store, ref)
    tables, measured = QualityRecord.parse(card.quality), QualityRecord.parse(results)
    if not tables.rows and tables.floor is None:
        raise ValueError(f"{card.ref} has no quality tables for a spread to qualify: measure them first")
    if measured.spread is None:
        raise ValueError("the results hold no spread")
    for key in ("per_class", "eval_classifier"):
        if getattr(measured.provenance, key) != getattr(tables.provenance, key):
            raise ValueError(f"the spread was measured with {key} {getattr(measured.provenance, key)!r}, the card's "
                             f"tables with {getattr(tables.provenance, key)!r}: it would not describe them")
    return _write(store, card, {**card.quality, "spread": results["spread"]}, False)


def _generator(store: ModelStore, ref: str) -> ModelCard:
    card = store.resolve(ref)
    if card.kind != "generator":
        raise ValueError(f"{card.ref} is a {card.kind}, not a generator: only generators carry quality tables")
    return card


def _notes_paragraph(record: QualityRecord) -> str | None:
    """The notes' paragraph on the defaults chosen, from the quality's `defaults_choice`, or None."""
    choice = record.defaults_choice
    if choice is None:
        return None
    commits = [record.provenance.commit or "unknown"] + record.later_commits()
    st = choice.setting
    return (f"{NOTES_MARKER} {st.sampler}, {st.steps} steps, CFG scale {st.guidance_scale:g} (measured on "
            f"{record.provenance.device or 'an unrecorded device'} at commit{'s' if len(commits) > 1 else ''} "
            f"{spoken_list(commits)}). {choice.reason}")


def _write(store: ModelStore, card: ModelCard, quality: dict[str, Any], choose: bool
           ) -> tuple[ModelCard, DefaultsChoice | None]:
    changes: dict[str, Any] = {"quality": quality}
    choice = choose_defaults(QualityRecord.parse(quality), card.defaults) if choose else None
    if choice is not None:
        quality["defaults_choice"] = choice.to_dict()
        changes["defaults"] = choice.defaults
    # the notes' defaults paragraph follows the quality's defaults_choice: written anew, kept by a fill
    # that does not choose, dropped when new tables replace the ones it was chosen from
    changes["notes"] = notes_with(card.notes, _notes_paragraph(QualityRecord.parse(quality)))
    return store.update_card(card, changes), choice
