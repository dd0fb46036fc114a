"""The model card's section on how far FD moves between repeats at the tables' sample size (the
card's `quality.spread`, measured by `python -m evaluation evaluate --tables spread`)."""

from __future__ import annotations

import math

from evaluation.paper_shapes import SPREAD_SDS, fd_text, spread_margin
from evaluation.quality_card import spoken_list
from evaluation.tables import fmt, table


def spread_section(q: dict, defaults: dict) -> list[str]:
    """The section on how far FD moves between repeats at the tables' sample size (`python -m evaluation evaluate
    --tables spread`), or [] when the card has no spread. `defaults`: the card's sampling defaults."""
    sp = q.get("spread")
    if not isinstance(sp, dict) or not isinstance(sp.get("repeats"), list) or not sp["repeats"]:
        return []
    st = sp.get("setting") or {}
    setting = (f"{st.get('sampler')} {st.get('steps')} steps, {st.get('guidance', 'cfg')} scale "
               f"{st.get('guidance_scale', 0):g}")
    is_default = all(defaults.get(k) == st.get(k) for k in ("sampler", "steps", "guidance_scale"))
    n = sp.get("n", "?")
    # repeats reused from an earlier run keep their own commit and time; the run's are the spread's
    when = {(str(r.get("commit", sp.get("commit", "?")))[:7], str(r.get("measured_at", sp.get("measured_at", "?")))[:10])
            for r in sp["repeats"]}
    out = ["", "### How far FD moves between repeats", "",
           f"{'The default setting' if is_default else 'The setting'} ({setting}) measured again with {len(sp['repeats'])} other seed ranges of "
           f"{n:,} images each, disjoint from the tables' seeds and from each other (measured on "
           f"{sp.get('device', '?')}, " + spoken_list([f"commit `{c}`, {d}" for c, d in sorted(when)]) + "):", ""]
    out.append(table(["seeds from", "FD", "accuracy", "seconds"], [
        [str(r.get("seed")), fmt("fd", r.get("fd")), fmt("accuracy", r.get("accuracy")), fmt("", r.get("sampling_seconds"))]
        for r in sp["repeats"]]))
    fd, acc, real = sp.get("fd"), sp.get("accuracy"), (sp.get("floor") or {}).get("fd")
    lines = []
    if isinstance(fd, dict):
        lines.append(f"FD {fd_text(fd['mean'])} ± {fd_text(fd['sd'])} (mean ± standard deviation; "
                     f"{fd_text(fd['min'])} to {fd_text(fd['max'])})"
                     + (f", accuracy {100 * acc['mean']:.1f}% ± {100 * acc['sd']:.1f} points" if isinstance(acc, dict) else "")
                     + ".")
    if isinstance(real, dict):
        lines.append(f"Real training images, {len(sp['floor'].get('fds', []))} random draws of {sp['floor'].get('n', '?'):,}: "
                     f"FD {fd_text(real['mean'])} ± {fd_text(real['sd'])} ({fd_text(real['min'])} to {fd_text(real['max'])}).")
    margin = spread_margin(q)
    if margin is not None:
        lines.append(f"So two FDs measured with independent seeds that differ by at most {fd_text(margin)} "
                     f"({SPREAD_SDS:g} standard deviations of a difference of two measurements, {SPREAD_SDS:g} x "
                     "sqrt(2) x sd) cannot be told apart at this sample size: the seeds alone move FD that much. "
                     "That is the margin for comparing these figures with anything measured on other seeds "
                     "(another model, a rerun, the GPU tables). The rows of the tables above and below share "
                     "their seeds, so their differences are paired, which can cancel some of this noise: without "
                     "a paired measurement, a difference beyond the margin holds, and one within it is not shown "
                     "to be noise, only not settled. The spread was measured at one setting; the others are "
                     "taken to vary alike.")
    pr = sp.get("paired")
    if isinstance(pr, dict) and pr.get("repeats"):
        ps = pr.get("setting") or {}
        differences = pr.get("differences", [])
        line = (f"Paired: {ps.get('sampler')} {ps.get('steps')} steps measured on the same "
                f"{len(pr['repeats'])} seed ranges (commit `{str(sp.get('commit', '?'))[:7]}`, "
                f"{str(sp.get('measured_at', '?'))[:10]}) gives FD "
                + ", ".join(fd_text(r["fd"]) for r in pr["repeats"]) + "; its differences from the default are "
                + ", ".join(f"{x:+.2f}" for x in differences))
        d = pr.get("difference")
        if isinstance(d, dict):
            same_sign = len(differences) > 1 and (all(x > 0 for x in differences) or all(x < 0 for x in differences))
            line += (f" (mean {d['mean']:+.2f}, sd {fd_text(d['sd'])}"
                     + (f"; all {len(differences)} of one sign" if same_sign else "") + ").")
            if isinstance(fd, dict) and fd.get("sd"):
                bound = math.sqrt(2) * fd["sd"]
                line += (f" Independent seeds would give sqrt(2) x sd = {fd_text(bound)}: "
                         + ("for this pair, sharing the seeds cancelled no measurable noise"
                            if d["sd"] >= bound else
                            f"for this pair, sharing the seeds cancelled about {100 * (1 - (d['sd'] / bound) ** 2):.0f}% "
                            "of the variance")
                         + f" ({len(differences)} repeats: a rough figure).")
            line += (f" The comparisons with the papers take {SPREAD_SDS:g} sd of this paired difference, "
                     f"{fd_text(SPREAD_SDS * d['sd'])}, as the margin within which the seeds alone could make a "
                     "difference between two rows, assuming other pairs of rows vary alike (two deterministic "
                     "samplers from the same starting noise may vary less; that was not measured).")
        else:
            line += "."
        lines.append(line)
    left = sp.get("left_out")
    if isinstance(left, dict):
        parts = [f"{left['repeats']} of the {sp.get('repeats_asked')} repeats" if left.get("repeats") else "",
                 f"{left['paired']} paired repeats" if left.get("paired") else ""]
        lines.append(f"{' and '.join(p for p in parts if p) or 'Repeats'} asked for were left out: {left.get('why', '')}.")
    if lines:
        out += ["", " ".join(lines)]
    return out
