"""Markdown pieces shared by the model-card doc and the README's quality summary: cells, tables,
and the guidance and steps sweeps as tables."""

from __future__ import annotations

from typing import Any

from contract.names import SAMPLERS
from evaluation.paper_shapes import fd_text
from model_store import ModelCard


def fmt(key: str, v: Any) -> str:
    if v is None:
        return "–"
    if key == "accuracy" and isinstance(v, (int, float)):
        return f"{100 * v:.1f}%"
    if isinstance(v, float):
        return fd_text(v) if key == "fd" else f"{v:g}"
    return str(v)


def table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def ratio(fd: float, floor: float | None) -> str:
    return f"{fd / floor:.1f}x" if floor else "–"


def guidance_table(card: ModelCard, g: list[dict], floor: float | None, seconds: bool = True) -> str:
    default_scale = card.defaults.get("guidance_scale")
    return table(["scale", "FD", "x floor", "accuracy"] + (["seconds"] if seconds else []), [
        [f"**{r['guidance_scale']:g}** (default)" if r["guidance_scale"] == default_scale else f"{r['guidance_scale']:g}",
         fmt("fd", r["fd"]), ratio(r["fd"], floor), fmt("accuracy", r.get("accuracy"))]
        + ([fmt("", r.get("sampling_seconds"))] if seconds else [])
        for r in sorted(g, key=lambda r: r["guidance_scale"])])


def steps_table(s: list[dict]) -> str:
    steps = sorted({r["steps"] for r in s})
    cells = {(r["sampler"], r["steps"]): r for r in s}
    body = []
    for sampler in SAMPLERS:
        if any(k[0] == sampler for k in cells):
            body.append([sampler] + [f"{fmt('fd', cells[sampler, k]['fd'])} ({fmt('accuracy', cells[sampler, k].get('accuracy'))})"
                                     if (sampler, k) in cells else "–" for k in steps])
    return table(["sampler"] + [f"{k} steps" for k in steps], body)
