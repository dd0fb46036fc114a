"""The model card's plots as PNG (matplotlib, no display): FD against accuracy along the guidance
sweep, and FD against steps for each sampler of the steps sweep, with the real-data floor and, where
the card has a spread, its error bars and margin. A plot whose rows the card lacks is not drawn."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from contract.names import SAMPLERS
from evaluation.record import QualityRecord, Row, lowest


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # no date or version in the file, so that a rerun on the same numbers gives the same bytes
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    _pyplot().close(fig)


def spread_band(record: QualityRecord, rows: Sequence[Row]) -> tuple[float, float] | None:
    """(the lowest FD of `rows`, that FD plus the table margin): the FDs a plot shades as not told
    apart from the best, or None without a spread or rows."""
    best, m = lowest(rows), record.table_margin
    return None if m is None or best is None else (best.fd, best.fd + m.fd)


def plot_tradeoff(record: QualityRecord, default_scale: float | None, path: Path) -> bool:
    """FD against accuracy along the guidance sweep, one point per conditional scale; False (and no
    file) when the card has no such points."""
    points = [r for r in record.conditional_guidance if r.accuracy is not None]
    if not points:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    acc, fd = [100 * r.accuracy for r in points], [r.fd for r in points]
    ax.plot(acc, fd, "-o", color="tab:blue", zorder=2)
    sd = record.spread_sd
    if sd is not None:  # the repeat spread of the default setting, taken to hold at every scale
        ax.errorbar(acc, fd, yerr=sd, fmt="none", ecolor="tab:blue", alpha=0.5, capsize=3,
                    label=f"FD ± {sd:g} (sd between repeats)")
    for r, x in zip(points, acc):
        chosen = r.guidance_scale == default_scale
        ax.annotate(f"s={r.guidance_scale:g}" + (" (default)" if chosen else ""), (x, r.fd),
                    textcoords="offset points", xytext=(6, 6), fontsize=8, fontweight="bold" if chosen else "normal")
        if chosen:
            ax.plot([x], [r.fd], "o", ms=11, mfc="none", mec="tab:red", zorder=3)
    floor = record.floor_fd
    if floor is not None:
        ax.axhline(floor, ls="--", color="gray", lw=1, label=f"floor {floor:g} (training images)")
    if floor is not None or sd is not None:
        ax.legend(loc="upper center", fontsize=8)
    ax.set_xlabel("accuracy: share classified as the requested class (%)")
    ax.set_ylabel("FD (lower is better)")
    ax.set_title("Guidance sweep: DDIM 50 steps, classifier-free guidance", fontsize=10)
    ax.grid(alpha=0.3)
    _save(fig, path)
    return True


STEPS_STYLE = {"ddpm": ("-o", 6), "ddim": ("-s", 8), "dpmpp_2m": ("-^", 7), "euler": ("--x", 9), "heun": ("-D", 5)}
"""Line and marker (and marker size) per sampler: deterministic DDIM and Euler give the same images,
so Euler is dashed with open crosses over DDIM's squares, and both stay visible."""


def plot_steps(record: QualityRecord, path: Path) -> bool:
    """FD against steps, one line per sampler of the steps sweep; False (and no file) without rows."""
    rows = record.steps_sweep
    if not rows:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for sampler in SAMPLERS:
        mine = sorted((r for r in rows if r.sampler == sampler), key=lambda r: r.steps)
        if mine:
            style, size = STEPS_STYLE.get(sampler, ("-o", 6))
            ax.plot([r.steps for r in mine], [r.fd for r in mine], style, ms=size, label=sampler)
    floor = record.floor_fd
    if floor is not None:
        ax.axhline(floor, ls="--", color="gray", lw=1, label=f"floor {floor:g}")
    band = spread_band(record, rows)
    if band is not None:
        ax.axhspan(*band, color="tab:green", alpha=0.12, lw=0,
                   label=f"within the {record.table_margin.kind} margin of the best")
    ax.set_xscale("log")
    ticks = sorted({r.steps for r in rows})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("sampler steps (log scale)")
    ax.set_ylabel("FD (lower is better)")
    scales = sorted({r.guidance_scale for r in rows})
    ax.set_title(f"Steps sweep at CFG scale {', '.join(f'{s:g}' for s in scales)}", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the lines, not over them
    ax.grid(alpha=0.3)
    _save(fig, path)
    return True
