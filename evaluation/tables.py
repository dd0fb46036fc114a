"""Markdown pieces shared by the model-card doc and the README's quality summary: numbers as text,
tables, and the measured tables of a quality record."""

from __future__ import annotations

from collections.abc import Sequence

from contract.names import SAMPLERS
from evaluation.record import Row

NONE = "–"
"""A cell that was not measured."""


def fd_text(v: float) -> str:
    """An FD for people: two decimals, or three significant digits below 1 (a weak evaluation
    classifier's FDs are small)."""
    return f"{v:.2f}" if abs(v) >= 1 else f"{v:.3g}"


def pct(v: float | None) -> str:
    return NONE if v is None else f"{100 * v:.1f}%"


def num(v: float | None) -> str:
    return NONE if v is None else f"{v:g}"


def count(n: int | None) -> str:
    """A count for people: 10,000 (or ? where it is not recorded)."""
    return "?" if n is None else f"{n:,}"


def spoken_list(items: Sequence[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def ratio(fd: float, floor: float | None) -> str:
    return f"{fd / floor:.1f}x" if floor else NONE


def guidance_table(rows: Sequence[Row], floor: float | None, default_scale: float | None,
                   seconds: bool = True) -> str:
    """The guidance sweep, one row per scale, the default's in bold."""
    def scale(r: Row) -> str:
        return f"**{r.guidance_scale:g}** (default)" if r.guidance_scale == default_scale else f"{r.guidance_scale:g}"

    return table(["scale", "FD", "x floor", "accuracy"] + (["seconds"] if seconds else []), [
        [scale(r), fd_text(r.fd), ratio(r.fd, floor), pct(r.accuracy)] + ([num(r.seconds)] if seconds else [])
        for r in sorted(rows, key=lambda r: r.guidance_scale)])


def steps_table(rows: Sequence[Row]) -> str:
    """The steps sweep: FD (accuracy), one row per sampler, one column per step count."""
    steps = sorted({r.steps for r in rows})
    cells = {(r.sampler, r.steps): r for r in rows}
    body = [[sampler] + [f"{fd_text(cells[sampler, k].fd)} ({pct(cells[sampler, k].accuracy)})"
                         if (sampler, k) in cells else NONE for k in steps]
            for sampler in SAMPLERS if any(s == sampler for s, _ in cells)]
    return table(["sampler"] + [f"{k} steps" for k in steps], body)


def classifier_table(rows: Sequence[Row], cfg: Sequence[Row], floor: float | None) -> str:
    """Classifier guidance by scale, beside the guidance sweep's row at the same number where it has one."""
    by_scale = {r.guidance_scale: r for r in cfg if r.guidance_scale > 0}  # CFG s = 0 is unconditional
    return table(["scale", "classifier FD", "x floor", "classifier accuracy", "CFG FD", "CFG accuracy"], [
        [f"{r.guidance_scale:g}", fd_text(r.fd), ratio(r.fd, floor), pct(r.accuracy)]
        + ([fd_text(by_scale[r.guidance_scale].fd), pct(by_scale[r.guidance_scale].accuracy)]
           if r.guidance_scale in by_scale else [NONE, NONE])
        for r in sorted(rows, key=lambda r: r.guidance_scale)])
