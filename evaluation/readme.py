"""The README's measured-quality summary, rendered from the shipped card between two markers
(`python -m evaluation model-card --readme README.md`)."""

from __future__ import annotations

from pathlib import Path

from evaluation.record import QualityRecord
from evaluation.tables import fd_text, guidance_table, spoken_list, steps_table
from model_store import ModelCard

README_BEGIN = ("<!-- quality:begin (rendered from the shipped card by "
                "`python -m evaluation model-card --readme README.md`) -->")
README_END = "<!-- quality:end -->"
"""The markers around the README's measured-quality summary, which `--readme` rewrites."""


def _readme_spread(record: QualityRecord) -> str:
    """' Measured again with ...' for the README when the card has a spread, else ''."""
    sp, sd, margin = record.spread, record.spread_sd, record.spread_margin
    if sp is None or sd is None or margin is None:
        return ""
    out = (f" Measured again with {len(sp.repeats)} other seed ranges, the default setting's FD moves with a "
           f"standard deviation of {fd_text(sd)} (mean {fd_text(sp.fd.mean)}): FDs measured with independent "
           f"seeds that differ by at most {fd_text(margin)} cannot be told apart")
    m = record.table_margin
    if not m.paired or sp.paired is None or sp.paired.setting is None:
        return out + " (the rows below share seeds, so their differences are more precise than that)."
    ps = sp.paired.setting
    return out + (f". The rows below share seeds: on the same seed ranges, {ps.sampler} {ps.steps} steps "
                  f"differs from the default with a standard deviation of {fd_text(record.paired_sd)}, so differences "
                  f"between rows up to {fd_text(m.fd)} could be the seeds alone.")


def readme_quality(card: ModelCard) -> str:
    """The README's summary of a card's measured quality: where and how it was measured, the guidance
    sweep and the steps sweep; or a line saying the tables are owed."""
    record, d = QualityRecord.parse(card.quality), card.defaults
    g, s, p = record.guidance_sweep, record.steps_sweep, record.provenance
    if not g and not s:
        return (f"`{card.ref}` has no measured quality table yet: its tables are owed to a GPU run "
                "([docs/gpu-runbook.md](docs/gpu-runbook.md)).")
    floor = record.floor_fd
    commits = [f"`{c[:7]}`" for c in record.later_commits()]
    later = f"; rows added later at {spoken_list(commits)}" if commits else ""
    n = p.per_class
    out = [f"Measured for `{card.ref}` on {p.device or '?'} (commit `{(p.commit or '?')[:7]}`{later}), "
           + (f"{n * card.num_classes:,} images per setting ({n} per class)" if n is not None else "")
           + f", in the features of `{p.eval_classifier or '?'}`; the floor (real training images at the "
             f"same count) is {fd_text(floor) if floor is not None else 'not measured'}. Sampling defaults: "
           + ", ".join(f"{k} `{d[k]}`" for k in ("sampler", "steps", "guidance_scale") if k in d)
           + "." + _readme_spread(record)
           + " All tables, the plots and the comparison with the papers: [docs/model-card.md](docs/model-card.md)."]
    if g:
        out += ["", "Guidance sweep (CFG, DDIM 50 steps):", "", guidance_table(g, floor, d.get("guidance_scale"),
                                                                            seconds=False)]
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
