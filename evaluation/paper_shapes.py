"""Whether the measured tables have the shapes the papers report, written from the numbers alone.

Each comparison is made only from rows the card holds; where they are missing it says so and claims
nothing. Torch-free: used by the model-card doc, testable on hand-made tables.

- Classifier-free guidance (Ho & Salimans 2022, Table 1): FID is lowest at a small guidance
  strength above none (w = 0.1 to 0.3, i.e. s = 1 + w = 1.1 to 1.3), and the Inception score, whose
  part accuracy plays here, rises with it.
- DDIM (Song et al. 2021, Table 1): with 10 to 50 steps DDIM (eta 0) is far better than DDPM's
  ancestral sampler.
- DPM-Solver++ (Lu et al. 2022), as evaluation.md expects: 2M at 20 steps close to the best figure.
- Classifier guidance (Dhariwal & Nichol 2021): a larger classifier scale raises the share of
  samples of the wanted class.

Where the card holds a spread (`python -m evaluation evaluate --tables spread`: the default setting measured again
with other seeds), a difference between two FDs is set against `SPREAD_SDS` standard deviations of the
difference of two independent measurements (sqrt(2) sd each). Beyond that margin the difference holds
even for measurements with independent seeds. The rows of the tables share their seeds, so their
differences are paired, which can cancel some of the seed noise: a difference within the margin is
therefore not shown to be noise, only not settled by this measure. Where the spread also holds a
paired setting (`--paired-with`: another sampler or step count on the same seed ranges), the margin
is `SPREAD_SDS` standard deviations of that measured paired difference instead, and a difference
within it is one the seeds alone could make.
"""

from __future__ import annotations

import math
from typing import Any

SMALL_SCALE = 2.0
"""A best-FD scale above 1 and at most this counts as "small" (the CFG paper's best is 1.1 to 1.3)."""

CLOSE = 0.10
"""DPM-Solver++ at 20 steps is "close to the best" within this share of the best FD."""


SPREAD_SDS = 2.0
"""A difference of two FDs up to this many standard deviations of a difference is "within the spread"."""


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _rows(quality: dict, key: str, guidance: str | None = None) -> list[dict]:
    rows = quality.get(key)
    if not isinstance(rows, list):
        return []
    return [r for r in rows if isinstance(r, dict) and _num(r.get("fd")) and _num(r.get("guidance_scale"))
            and (guidance is None or r.get("guidance", "cfg") == guidance)]


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def fd_text(v: float) -> str:
    """An FD for people: two decimals, or three significant digits below 1 (a weak evaluation
    classifier's FDs are small)."""
    return f"{v:.2f}" if abs(v) >= 1 else f"{v:.3g}"


def _number_at(d: Any, *keys: str) -> float | None:
    """d[k1][k2]... where every level is a dict and the end a finite number, else None."""
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d if _num(d) else None


def spread_sd(quality: dict) -> float | None:
    """The standard deviation of FD between the repeats of the card's spread (None without one)."""
    return _number_at(quality, "spread", "fd", "sd")


def spread_margin(quality: dict) -> float | None:
    """The largest difference of two FDs measured with independent seeds that is within the repeat
    spread (None without a spread)."""
    sd = spread_sd(quality)
    return None if sd is None else SPREAD_SDS * math.sqrt(2) * sd


def paired_sd(quality: dict) -> float | None:
    """The standard deviation of the difference between two settings measured on the same seed ranges
    (the spread's `paired` repeats), or None where the card has none."""
    return _number_at(quality, "spread", "paired", "difference", "sd")


def table_margin(quality: dict) -> tuple[float, bool] | None:
    """The margin for a difference between two rows of the tables, which share their seeds, and
    whether it is measured for such paired rows (True: SPREAD_SDS sd of a measured paired difference)
    or only the bound from independent repeats (False); None without a spread."""
    sd = paired_sd(quality)
    if sd is not None:
        return SPREAD_SDS * sd, True
    margin = spread_margin(quality)
    return None if margin is None else (margin, False)


def _within(paired: bool) -> str:
    """How a difference inside the table margin is called: one the seeds alone could make where the
    paired spread was measured (`paired`), not settled where only the independent bound is known."""
    return "within the paired spread, so the seeds alone could make it" if paired else \
        "within the repeat spread, not settled"


def _gap(a: float, b: float, quality: dict) -> str:
    """'; difference X, beyond the repeat spread' (or within it), to end a parenthesis; '' without a
    spread."""
    m = table_margin(quality)
    if m is None:
        return ""
    d = abs(a - b)
    return f"; difference {fd_text(d)}, " + (_within(m[1]) if d <= m[0]
                                             else f"beyond the {'paired' if m[1] else 'repeat'} spread")


def _rises(rows: list[dict], what: str) -> str:
    """How accuracy moves along `rows` (sorted by scale): agrees, agrees overall, or differs."""
    first, last = rows[0], rows[-1]
    drops = [(a, b) for a, b in zip(rows, rows[1:]) if b["accuracy"] < a["accuracy"]]
    span = (f"from {_pct(first['accuracy'])} at s = {first['guidance_scale']:g} to {_pct(last['accuracy'])} at "
            f"s = {last['guidance_scale']:g}")
    if last["accuracy"] <= first["accuracy"]:
        return f"**Differs**: {what} does not rise with the scale ({span})."
    if not drops:
        return f"**Agrees**: {what} rises with the scale and never falls, {span}."
    falls = "; ".join(f"s = {a['guidance_scale']:g} to {b['guidance_scale']:g}: {_pct(a['accuracy'])} to "
                      f"{_pct(b['accuracy'])}" for a, b in drops)
    return f"**Agrees overall**: {what} rises {span}, but falls in between ({falls})."


def cfg_shape(quality: dict) -> list[str]:
    """The guidance sweep against the CFG paper's Table 1."""
    rows = sorted((r for r in _rows(quality, "guidance_sweep", "cfg") if r["guidance_scale"] > 0
                   and _num(r.get("accuracy"))), key=lambda r: r["guidance_scale"])
    head = "- *Classifier-free guidance paper (Ho & Salimans 2022, Table 1)*: FD lowest at a small scale above 1, accuracy rising with the scale."
    if len(rows) < 3 or not any(r["guidance_scale"] > 1 for r in rows):
        return [head, "  Not compared: the card has no guidance sweep with at least three conditional scales, some above 1."]
    best = min(rows, key=lambda r: (r["fd"], r["guidance_scale"]))
    top = rows[-1]
    one = next((r for r in rows if r["guidance_scale"] == 1), None)
    s = best["guidance_scale"]
    others = ([f"{fd_text(one['fd'])} at s = 1"] if one is not None and one is not best else []) + (
        [f"{fd_text(top['fd'])} at s = {top['guidance_scale']:g}, the largest scale measured"] if top is not best else [])
    where = f"FD is lowest at s = {s:g} ({fd_text(best['fd'])})" + (f", against {' and '.join(others)}" if others else "")
    if s <= 1:
        fd = f"**Differs**: {where}; guidance does not lower FD for this model."
    elif top is best:
        fd = f"**Differs in part**: {where}, the largest scale measured: FD still falls there, so its minimum was not reached."
    elif s <= SMALL_SCALE:
        fd = f"**Agrees**: {where}; the paper's best is at s = 1.1 to 1.3."
    else:
        fd = (f"**Agrees in part**: {where}: a minimum between the ends, but at a larger scale than the paper's 1.1 to 1.3 "
              f"(above {SMALL_SCALE:g}).")
    lines = [head, f"  - FD: {fd}"]
    m = table_margin(quality)
    if m is not None:
        margin = m[0]
        near = [r for r in rows if r is not best and r["fd"] - best["fd"] <= margin]
        lines.append(f"  - Within the {'paired' if m[1] else 'repeat'} spread of the lowest FD (at most "
                     f"{fd_text(margin)} above it, "
                     + ("so the seeds alone could put it lowest" if m[1] else "so not settled against it") + "): "
                     + (", ".join(f"s = {r['guidance_scale']:g} ({fd_text(r['fd'])})" for r in near) if near
                        else "no other scale") + ".")
    return [*lines, f"  - Accuracy (the part the paper's Inception score plays): {_rises(rows, 'accuracy')}"]


def ddim_shape(quality: dict) -> list[str]:
    """DDIM against DDPM at few steps, as in the DDIM paper's Table 1."""
    head = "- *DDIM paper (Song et al. 2021, Table 1)*: DDIM (eta 0) far better than DDPM at 10 to 50 steps."
    rows = _rows(quality, "steps_sweep", "cfg")
    fd = {(r.get("sampler"), r.get("steps")): r["fd"] for r in rows}
    both = [k for k in (10, 20, 50, 100) if ("ddim", k) in fd and ("ddpm", k) in fd]
    few = [k for k in both if k <= 50]
    if not few:
        return [head, "  Not compared: the steps sweep has no DDIM and DDPM rows at the same step count of 10 to 50."]
    pairs = "; ".join(f"{k} steps: DDIM {fd_text(fd['ddim', k])}, DDPM {fd_text(fd['ddpm', k])}" for k in both)
    better = [k for k in few if fd["ddim", k] < fd["ddpm", k]]
    worse = [k for k in few if k not in better]
    if not worse:
        verdict = f"**Agrees**: DDIM has the lower FD at every step count of 10 to 50 measured ({pairs})."
    elif not better:
        verdict = f"**Differs**: DDPM has the lower (or equal) FD at every step count of 10 to 50 measured ({pairs})."
    else:
        verdict = (f"**Agrees in part**: DDIM is better at {', '.join(map(str, better))} steps, not at "
                   f"{', '.join(map(str, worse))} ({pairs}).")
    lines = [head, f"  {verdict}"]
    m = table_margin(quality)
    if m is not None:
        inside = [k for k in few if abs(fd["ddim", k] - fd["ddpm", k]) <= m[0]]
        outside = [k for k in few if k not in inside]
        lines.append(f"  Against the {'paired' if m[1] else 'repeat'} spread (differences up to {fd_text(m[0])}): "
                     + "; ".join(part for part in (
                         f"beyond it at {', '.join(map(str, outside))} steps" if outside else "",
                         f"within it ({'the seeds alone could make it' if m[1] else 'not settled'}) at {', '.join(map(str, inside))} "
                         f"steps" if inside else "") if part)
                     + ".")
    if ("ddpm", 1000) in fd:
        ddim_best = min((r for r in rows if r.get("sampler") == "ddim"), key=lambda r: r["fd"], default=None)
        lines.append(f"  DDPM with all 1000 steps: FD {fd_text(fd['ddpm', 1000])}"
                     + (f" (DDIM's best: {fd_text(ddim_best['fd'])} at {ddim_best['steps']} steps"
                        f"{_gap(fd['ddpm', 1000], ddim_best['fd'], quality)})."
                        if ddim_best else "."))
    return lines


def dpmpp_shape(quality: dict) -> list[str]:
    head = "- *DPM-Solver++ (Lu et al. 2022), as evaluation.md expects*: 2M at 20 steps close to the best figure of all."
    rows = _rows(quality, "steps_sweep", "cfg")
    mine = next((r for r in rows if r.get("sampler") == "dpmpp_2m" and r.get("steps") == 20), None)
    if mine is None:
        return [head, "  Not compared: the steps sweep has no dpmpp_2m row at 20 steps."]
    best = min(rows, key=lambda r: r["fd"])
    gap = mine["fd"] / best["fd"] - 1 if best["fd"] > 0 else 0.0
    where = f"dpmpp_2m 20 steps: FD {fd_text(mine['fd'])}; best: {best['sampler']} {best['steps']} steps, {fd_text(best['fd'])}"
    noise = _gap(mine["fd"], best["fd"], quality)
    if gap <= CLOSE:
        return [head, f"  **Agrees**: {where} ({100 * gap:.1f}% above it, within {CLOSE:.0%}{noise})."]
    return [head, f"  **Differs**: {where} ({100 * gap:.1f}% above it, more than {CLOSE:.0%}{noise})."]


def classifier_shape(quality: dict) -> list[str]:
    head = "- *Classifier guidance (Dhariwal & Nichol 2021)*: a larger classifier scale gives more samples of the wanted class."
    rows = sorted((r for r in _rows(quality, "classifier_guidance") if _num(r.get("accuracy"))),
                  key=lambda r: r["guidance_scale"])
    if len(rows) < 2:
        return [head, "  Not compared: the card has fewer than two classifier-guidance rows."]
    lines = [head, f"  {_rises(rows, 'accuracy')}"]
    cfg = [r for r in _rows(quality, "guidance_sweep", "cfg") if r["guidance_scale"] > 0]
    if cfg:
        c, g = min(rows, key=lambda r: r["fd"]), min(cfg, key=lambda r: r["fd"])
        lines.append(f"  Best FD: classifier guidance {fd_text(c['fd'])} (s = {c['guidance_scale']:g}, accuracy "
                     f"{_pct(c['accuracy'])}); classifier-free guidance {fd_text(g['fd'])} (s = {g['guidance_scale']:g}"
                     + (f", accuracy {_pct(g['accuracy'])})" if _num(g.get("accuracy")) else ")")
                     + f"{_gap(c['fd'], g['fd'], quality)}.")
    return lines


def floor_line(quality: dict) -> list[str]:
    floor = quality.get("floor")
    fds = [r for k in ("guidance_sweep", "steps_sweep", "classifier_guidance") for r in _rows(quality, k)]
    if not (isinstance(floor, dict) and _num(floor.get("fd")) and floor["fd"] > 0 and fds):
        return []
    best = min(fds, key=lambda r: r["fd"])
    head = (f"- *Against the floor*: the best FD measured, {fd_text(best['fd'])} ({best.get('sampler')} {best.get('steps')} "
            f"steps, {best.get('guidance', 'cfg')} s = {best['guidance_scale']:g}), is ")
    same = floor.get("same_n")
    if isinstance(same, dict) and _num(same.get("fd")) and same["fd"] > 0:
        # FD grows at small n: tables of fewer images are compared with as many real images
        return [head + f"{best['fd'] / same['fd']:.1f} times the FD of as many real training images "
                f"({fd_text(same['fd'])} with {same.get('n', '?'):,}; {fd_text(floor['fd'])} with {floor.get('n', '?'):,})."]
    return [head + f"{best['fd'] / floor['fd']:.1f} times the FD of real training images ({fd_text(floor['fd'])})."]


def comparisons(quality: dict) -> list[str]:
    """Markdown lines comparing the card's tables with the papers; only measured numbers are used."""
    if not any(_rows(quality, k) for k in ("guidance_sweep", "steps_sweep", "classifier_guidance")):
        return ["Nothing to compare yet: the card has no measured tables (they are owed to a GPU run). No shape is "
                "claimed without them."]
    return [*cfg_shape(quality), *ddim_shape(quality), *dpmpp_shape(quality), *classifier_shape(quality),
            *floor_line(quality)]
