"""Whether the measured tables have the shapes the papers report, from the numbers alone: one claim
per comparison, its verdict in one word (Agrees, Agrees in part, Differs, Not compared) and the
numbers it rests on. A comparison whose rows the card lacks claims nothing. Torch-free.

- Classifier-free guidance (Ho & Salimans 2022, Table 1): FID lowest at a small guidance strength
  above none (w = 0.1 to 0.3, i.e. s = 1 + w = 1.1 to 1.3); the Inception score, whose part accuracy
  plays here, rises with it.
- DDIM (Song et al. 2021, Table 1): with 10 to 50 steps DDIM (eta 0) far better than DDPM.
- DPM-Solver++ (Lu et al. 2022), as evaluation.md expects: 2M at 20 steps close to the best figure.
- Classifier guidance (Dhariwal & Nichol 2021): a larger classifier scale, more samples of the
  wanted class.

Where the card holds a spread, each difference a verdict rests on is set against the tables' margin
(`QualityRecord.table_margin`): the paired margin where a paired setting was measured (within it, the
seeds alone could make the difference), else the repeat margin of independent measurements, which
the tables' paired rows may beat (within it, a difference is not settled).
"""

from __future__ import annotations

from evaluation.record import Margin, QualityRecord, Row, lowest
from evaluation.tables import count, fd_text, pct, spoken_list

SMALL_SCALE = 2.0
"""A best-FD scale above 1 and at most this counts as "small" (the CFG paper's best is 1.1 to 1.3)."""

CLOSE = 0.10
"""DPM-Solver++ at 20 steps is "close to the best" within this share of the best FD."""

CFG = "Classifier-free guidance (Ho & Salimans 2022, Table 1)"
DDIM = "DDIM (Song et al. 2021, Table 1), DDIM (eta 0) far better than DDPM at 10 to 50 steps"
DPMPP = f"DPM-Solver++ (Lu et al. 2022; evaluation.md), 2M at 20 steps within {CLOSE:.0%} of the best FD"
CLASSIFIER = "Classifier guidance (Dhariwal & Nichol 2021), accuracy rising with the classifier scale"


def claim(what: str, verdict: str, numbers: str = "") -> list[str]:
    """A comparison as markdown: the claim and its verdict, then (indented) the numbers; or the claim
    and why it is not compared."""
    if verdict == "Not compared":
        return [f"- {what}: **Not compared**: {numbers}"]
    return [f"- {what}: **{verdict}**.", *([f"  {numbers}"] if numbers else [])]


def against(margin: Margin | None, difference: float) -> str:
    """'; difference X, within (or beyond) the paired margin (M)', or '' without a spread."""
    if margin is None:
        return ""
    side = "within" if margin.within(difference) else "beyond"
    return f"; difference {fd_text(abs(difference))}, {side} the {margin.kind} margin ({fd_text(margin.fd)})"


def _accuracy(rows: list[Row]) -> tuple[str, str]:
    """(verdict, numbers) for accuracy along `rows` (sorted by scale): rising, rising with dips, or not."""
    first, last = rows[0], rows[-1]
    span = (f"{pct(first.accuracy)} at s = {first.guidance_scale:g} to {pct(last.accuracy)} at "
            f"s = {last.guidance_scale:g}")
    drops = [(a, b) for a, b in zip(rows, rows[1:]) if b.accuracy < a.accuracy]
    if last.accuracy <= first.accuracy:
        return "Differs", f"{span}: no rise."
    if not drops:
        return "Agrees", f"{span}, never falling."
    falls = "; ".join(f"s = {a.guidance_scale:g} to {b.guidance_scale:g}: {pct(a.accuracy)} to {pct(b.accuracy)}"
                      for a, b in drops)
    return "Agrees in part", f"{span}, falling in between ({falls})."


def cfg_shape(record: QualityRecord) -> list[str]:
    """The guidance sweep against the CFG paper's Table 1: FD, then accuracy."""
    rows = [r for r in record.conditional_guidance if r.accuracy is not None]
    fd_claim = f"{CFG}, FD lowest at a small scale above 1"
    acc_claim = "The same paper, accuracy (in its Inception score's place) rising with the scale"
    if len(rows) < 3 or not any(r.guidance_scale > 1 for r in rows):
        return claim(CFG, "Not compared", "the card has no guidance sweep with at least three conditional scales, "
                                          "some above 1.")
    best, top = lowest(rows), rows[-1]
    one = next((r for r in rows if r.guidance_scale == 1), None)
    others = [f"{fd_text(r.fd)} at s = {r.guidance_scale:g}" for r in (one, top) if r is not None and r is not best]
    s = best.guidance_scale
    where = f"FD {fd_text(best.fd)} at s = {s:g}" + (f", against {' and '.join(others)}" if others else "")
    if s <= 1:
        verdict, where = "Differs", f"{where}: guidance does not lower it."
    elif top is best:
        verdict, where = "Differs", f"{where}, the largest scale measured: its minimum was not reached."
    elif s <= SMALL_SCALE:
        verdict, where = "Agrees", f"{where} (the paper's best: s = 1.1 to 1.3)."
    else:
        verdict = "Agrees in part"
        where = f"{where}: a minimum, but above s = {SMALL_SCALE:g} (the paper's: 1.1 to 1.3)."
    m = record.table_margin
    if m is not None:
        near = [f"s = {r.guidance_scale:g} ({fd_text(r.fd)})" for r in rows
                if r is not best and m.within(r.fd - best.fd)]
        where += (f" Within the {m.kind} margin ({fd_text(m.fd)}) of the lowest: "
                  f"{spoken_list(near) if near else 'no other scale'}.")
    return [*claim(fd_claim, verdict, where), *claim(acc_claim, *_accuracy(rows))]


def ddim_shape(record: QualityRecord) -> list[str]:
    """DDIM against DDPM at few steps, as in the DDIM paper's Table 1."""
    rows = [r for r in record.steps_sweep if r.guidance == "cfg"]
    fd = {(r.sampler, r.steps): r.fd for r in rows}
    both = [k for k in (10, 20, 50, 100) if ("ddim", k) in fd and ("ddpm", k) in fd]
    few = [k for k in both if k <= 50]
    if not few:
        return claim(DDIM, "Not compared", "the steps sweep has no DDIM and DDPM rows at the same step count of 10 "
                                           "to 50.")
    pairs = ", ".join(f"{fd_text(fd['ddim', k])} against {fd_text(fd['ddpm', k])} at {k}" for k in both)
    better = [str(k) for k in few if fd["ddim", k] < fd["ddpm", k]]
    worse = [str(k) for k in few if str(k) not in better]
    verdict = "Agrees" if not worse else "Differs" if not better else "Agrees in part"
    numbers = f"FD of DDIM against DDPM by steps: {pairs}" + (
        f"; DDIM lower at {spoken_list(better)} steps, not at {spoken_list(worse)}." if better and worse else ".")
    m = record.table_margin
    if m is not None:
        inside = [str(k) for k in few if m.within(fd["ddim", k] - fd["ddpm", k])]
        outside = [str(k) for k in few if str(k) not in inside]
        margin = f"the {m.kind} margin ({fd_text(m.fd)})"
        if inside and outside:
            sides = f"beyond {margin} at {spoken_list(outside)} steps, within it at {spoken_list(inside)}"
        else:
            sides = f"{'beyond' if outside else 'within'} {margin} at {spoken_list(outside or inside)} steps"
        numbers += f" The differences are {sides}."
    ddim_best = lowest([r for r in rows if r.sampler == "ddim"])
    if ("ddpm", 1000) in fd and ddim_best is not None:
        numbers += (f" DDPM at 1000 steps: {fd_text(fd['ddpm', 1000])}, DDIM's best {fd_text(ddim_best.fd)} "
                    f"({ddim_best.steps} steps){against(m, fd['ddpm', 1000] - ddim_best.fd)}.")
    return claim(DDIM, verdict, numbers)


def dpmpp_shape(record: QualityRecord) -> list[str]:
    rows = [r for r in record.steps_sweep if r.guidance == "cfg"]
    mine = next((r for r in rows if r.sampler == "dpmpp_2m" and r.steps == 20), None)
    if mine is None:
        return claim(DPMPP, "Not compared", "the steps sweep has no dpmpp_2m row at 20 steps.")
    best = lowest(rows)
    gap = mine.fd / best.fd - 1 if best.fd > 0 else 0.0
    return claim(DPMPP, "Agrees" if gap <= CLOSE else "Differs",
                 f"dpmpp_2m 20 steps: FD {fd_text(mine.fd)}, {100 * gap:.1f}% above the best ({best.sampler} "
                 f"{best.steps} steps, {fd_text(best.fd)}){against(record.table_margin, mine.fd - best.fd)}.")


def classifier_shape(record: QualityRecord) -> list[str]:
    rows = sorted((r for r in record.classifier_guidance if r.accuracy is not None), key=lambda r: r.guidance_scale)
    if len(rows) < 2:
        return claim(CLASSIFIER, "Not compared", "the card has fewer than two classifier-guidance rows.")
    verdict, numbers = _accuracy(rows)
    c, g = lowest(rows), lowest([r for r in record.guidance_sweep if r.guidance == "cfg" and r.guidance_scale > 0])
    if g is not None:
        numbers += (f" Best FD {fd_text(c.fd)} (s = {c.guidance_scale:g}, accuracy {pct(c.accuracy)}) against CFG's "
                    f"{fd_text(g.fd)} (s = {g.guidance_scale:g}" + (f", {pct(g.accuracy)})" if g.accuracy is not None
                                                                    else ")")
                    + f"{against(record.table_margin, c.fd - g.fd)}.")
    return claim(CLASSIFIER, verdict, numbers)


def floor_line(record: QualityRecord) -> list[str]:
    """The best FD measured against the floor (a figure, not a paper's claim: no verdict)."""
    floor, best = record.floor, lowest(record.guidance_sweep + record.steps_sweep + record.classifier_guidance)
    if floor is None or best is None or not floor.fd or floor.fd <= 0:
        return []
    head = (f"- Against the floor: the best FD measured, {fd_text(best.fd)} ({best.sampler} {best.steps} steps, "
            f"{best.guidance} s = {best.guidance_scale:g}), is ")
    if floor.same_n_fd is not None and floor.same_n_fd > 0:
        # FD grows at small n: tables of fewer images are compared with as many real images
        return [head + f"{best.fd / floor.same_n_fd:.1f} times the FD of as many real training images "
                f"({fd_text(floor.same_n_fd)} with {count(floor.same_n)}; {fd_text(floor.fd)} with {count(floor.n)})."]
    return [head + f"{best.fd / floor.fd:.1f} times the FD of real training images ({fd_text(floor.fd)})."]


def comparisons(record: QualityRecord) -> list[str]:
    """Markdown lines comparing the card's tables with the papers; only measured numbers are used."""
    if not record.rows:
        return ["Nothing to compare yet: the card has no measured tables (they are owed to a GPU run). No shape is "
                "claimed without them."]
    return [*cfg_shape(record), *ddim_shape(record), *dpmpp_shape(record), *classifier_shape(record),
            *floor_line(record)]
