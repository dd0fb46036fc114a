"""The model card's section on how far FD moves between repeats at the tables' sample size (the
card's `quality.spread`, measured by `python -m evaluation evaluate --tables spread`): the repeats as
a table, then the margins they give, in two or three sentences."""

from __future__ import annotations

import math

from evaluation.record import SPREAD_SDS, Paired, QualityRecord, Spread, Stats
from evaluation.tables import NONE, count, fd_text, num, pct, spoken_list, table


def _signed(v: float) -> str:
    return f"{v:+.2f}"


def _caption(sp: Spread, defaults: dict) -> str:
    st = sp.setting
    is_default = st is not None and (st.sampler, st.steps, st.guidance_scale) == tuple(
        defaults.get(k) for k in ("sampler", "steps", "guidance_scale"))
    setting = st.label() if st is not None else "setting not recorded"
    # repeats reused from an earlier run keep their own commit and time; the run's are the spread's
    when = sorted({((r.commit or sp.commit or "?")[:7], (r.measured_at or sp.measured_at or "?")[:10])
                   for r in sp.repeats})
    text = (f"{'The default setting' if is_default else 'The setting'} ({setting}) measured again with "
            f"{len(sp.repeats)} other seed ranges of {count(sp.n)} images each, disjoint from the tables' seeds and "
            f"from each other (measured on {sp.device or '?'}, "
            + spoken_list([f"commit `{c}`, {d}" for c, d in when]) + ")")
    if sp.paired is not None and sp.paired.repeats and sp.paired.setting is not None:
        text += (f"; beside it, {sp.paired.setting.sampler} {sp.paired.setting.steps} steps on the same seed ranges "
                 f"(commit `{(sp.commit or '?')[:7]}`, {(sp.measured_at or '?')[:10]})")
    return text + ":"


def _summary(s: Stats | None, text=fd_text) -> tuple[str, str]:
    """The cells 'mean ± sd' and 'min to max' of repeated measurements."""
    if s is None:
        return NONE, NONE
    return f"{text(s.mean)} ± {fd_text(s.sd)}", f"{text(s.min)} to {text(s.max)}"


def _repeats_table(sp: Spread) -> str:
    """One row per repeat (with the paired setting's FD and difference where measured), then the mean
    ± sd and the range."""
    head = ["seeds from", "FD", "accuracy", "seconds"]
    rows = [[str(r.seed), fd_text(r.fd), pct(r.accuracy), num(r.seconds)] for r in sp.repeats]
    fd, acc = _summary(sp.fd), sp.accuracy
    summary = [["mean ± sd", fd[0], NONE if acc is None else f"{pct(acc.mean)} ± {100 * acc.sd:.1f} points", ""],
               ["min to max", fd[1], NONE if acc is None else f"{pct(acc.min)} to {pct(acc.max)}", ""]]
    paired = sp.paired
    if paired is not None and paired.repeats and paired.setting is not None:
        head += [f"{paired.setting.sampler} {paired.setting.steps} steps FD (accuracy)", "difference"]
        for i, row in enumerate(rows):
            p = paired.repeats[i] if i < len(paired.repeats) else None
            d = paired.differences[i] if i < len(paired.differences) else None
            row += [NONE if p is None else f"{fd_text(p.fd)} ({pct(p.accuracy)})", NONE if d is None else _signed(d)]
        for line, cell in zip(summary, _summary(paired.difference, _signed)):
            line += ["", cell]
    return table(head, rows + (summary if sp.fd is not None else []))


def _paired_sentence(paired: Paired, sd: float | None) -> str:
    """What the paired repeats show, and the paired margin the comparisons take from them."""
    d, st, k = paired.difference, paired.setting, len(paired.differences)
    detail = [f"all {k} of one sign"] if paired.one_sign else []
    if sd:
        bound = math.sqrt(2) * sd
        cancelled = ("no measurable noise" if d.sd >= bound else
                     f"about {100 * (1 - (d.sd / bound) ** 2):.0f}% of the variance")
        detail.append(f"sqrt(2) x sd = {fd_text(bound)} for independent seeds, so sharing them cancelled {cancelled} "
                      f"for this pair, a rough figure from {k} repeats")
    return (f"The rows of the tables share their seeds, so their differences are paired: on the same "
            f"{len(paired.repeats)} seed ranges, {st.sampler} {st.steps} steps differs from the default by "
            f"{_signed(d.mean)} ± {fd_text(d.sd)}" + (f" ({'; '.join(detail)})" if detail else "")
            + f", and the comparisons with the papers take {SPREAD_SDS:g} sd of it, {fd_text(SPREAD_SDS * d.sd)}, as "
            "the paired margin within which the seeds alone could make a difference between two rows (other pairs "
            "of rows taken to vary alike).")


def spread_section(record: QualityRecord, defaults: dict) -> list[str]:
    """The section's markdown lines, or [] when the card has no spread with repeats. `defaults`: the
    card's sampling defaults."""
    sp = record.spread
    if sp is None or not sp.repeats:
        return []
    out = ["", "### How far FD moves between repeats", "", _caption(sp, defaults), "", _repeats_table(sp)]
    lines = []
    if sp.floor is not None and sp.floor.fd is not None:
        real = sp.floor.fd
        lines.append(f"Real training images, {len(sp.floor.fds)} random draws of {count(sp.floor.n)}: FD "
                     f"{fd_text(real.mean)} ± {fd_text(real.sd)} ({fd_text(real.min)} to {fd_text(real.max)}).")
    margin = record.spread_margin
    if margin is not None:
        lines.append(f"Two FDs measured with independent seeds that differ by at most {fd_text(margin)} "
                     f"({SPREAD_SDS:g} x sqrt(2) x sd: the repeat margin) cannot be told apart at this sample size.")
    paired = sp.paired
    if paired is not None and paired.repeats and paired.difference is not None and paired.setting is not None:
        lines.append(_paired_sentence(paired, record.spread_sd))
    elif margin is not None:
        lines.append("The rows of the tables share their seeds, so their differences are paired and may be more "
                     "precise: a difference between them within the repeat margin is not settled, one beyond it holds.")
    left = sp.left_out
    if left is not None:
        parts = [f"{left.repeats} of the {sp.repeats_asked} repeats" if left.repeats else "",
                 f"{left.paired} paired repeats" if left.paired else ""]
        lines.append(f"{' and '.join(p for p in parts if p) or 'Repeats'} asked for were left out: {left.why or ''}.")
    if lines:
        out += ["", " ".join(lines)]
    return out
