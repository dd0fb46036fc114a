"""The README's measured-quality summary, rendered from the shipped card between two markers
(`python -m evaluation model-card --readme README.md`)."""

from __future__ import annotations

from pathlib import Path

from evaluation.paper_shapes import fd_text, paired_sd, spread_margin, spread_sd, table_margin
from evaluation.plots import floor_of, rows_of
from evaluation.quality_card import later_commits, spoken_list
from evaluation.tables import guidance_table, steps_table
from model_store import ModelCard

README_BEGIN = "<!-- quality:begin (rendered from the shipped card by `python -m evaluation model-card --readme README.md`) -->"
README_END = "<!-- quality:end -->"
"""The markers around the README's measured-quality summary, which `--readme` rewrites."""


def _readme_spread(q: dict) -> str:
    """' FD moves by ...' for the README when the card has a spread, else ''."""
    sd, margin = spread_sd(q), spread_margin(q)
    if sd is None or margin is None:
        return ""
    sp = q["spread"]
    out = (f" Measured again with {len(sp['repeats'])} other seed ranges, the default setting's FD moves with a "
           f"standard deviation of {fd_text(sd)} (mean {fd_text(sp['fd']['mean'])}): FDs measured with independent "
           f"seeds that differ by at most {fd_text(margin)} cannot be told apart")
    row_margin, paired = table_margin(q)
    if not paired:
        return out + " (the rows below share seeds, so their differences are more precise than that)."
    ps = sp["paired"]["setting"]
    return out + (f". The rows below share seeds: on the same seed ranges, {ps.get('sampler')} {ps.get('steps')} steps "
                  f"differs from the default with a standard deviation of {fd_text(paired_sd(q))}, so differences "
                  f"between rows up to {fd_text(row_margin)} could be the seeds alone.")


def readme_quality(card: ModelCard) -> str:
    """The README's summary of a card's measured quality: where and how it was measured, the guidance
    sweep and the steps sweep; or a line saying the tables are owed."""
    q = card.quality or {}
    g, s = rows_of(q, "guidance_sweep"), rows_of(q, "steps_sweep")
    if not g and not s:
        return (f"`{card.ref}` has no measured quality table yet: its tables are owed to a GPU run "
                "([docs/gpu-runbook.md](docs/gpu-runbook.md)).")
    floor = floor_of(q)
    n = q.get("per_class")
    commits = [f"`{c[:7]}`" for c in later_commits(q)]
    later = f"; rows added later at {spoken_list(commits)}" if commits else ""
    out = [f"Measured for `{card.ref}` on {q.get('device', '?')} (commit `{str(q.get('commit', '?'))[:7]}`{later}), "
           + (f"{n * card.num_classes:,} images per setting ({n} per class)" if isinstance(n, int) else "")
           + f", in the features of `{q.get('eval_classifier', '?')}`; the floor (real training images at the "
             f"same count) is {fd_text(floor) if floor is not None else 'not measured'}. Sampling defaults: "
           + ", ".join(f"{k} `{card.defaults[k]}`" for k in ("sampler", "steps", "guidance_scale") if k in card.defaults)
           + "." + _readme_spread(q)
           + " All tables, the plots and the comparison with the papers: [docs/model-card.md](docs/model-card.md)."]
    if g:
        out += ["", "Guidance sweep (CFG, DDIM 50 steps):", "", guidance_table(card, g, floor, seconds=False)]
    if s:
        out += ["", "Steps sweep, FD (accuracy):", "", steps_table(s)]
    return "\n".join(out)


def write_readme_quality(readme: Path, card: ModelCard) -> None:
    """Replace the text between the README's quality markers with `readme_quality(card)`."""
    text = readme.read_text()
    try:
        head, rest = text.split(README_BEGIN, 1)
        _, tail = rest.split(README_END, 1)
    except ValueError:
        raise ValueError(f"{readme} has no {README_BEGIN} ... {README_END} block") from None
    readme.write_text(f"{head}{README_BEGIN}\n{readme_quality(card)}\n{README_END}{tail}")
