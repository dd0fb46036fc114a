"""The model card's plots as PNG (matplotlib, no display): FD against accuracy along the guidance
sweep, and FD against steps for each sampler of the steps sweep, with the real-data floor. A plot
whose rows the card lacks is not drawn."""

from __future__ import annotations

from pathlib import Path

from contract.names import SAMPLERS
from evaluation.paper_shapes import spread_sd, table_margin


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


def rows_of(quality: dict, key: str) -> list[dict]:
    """The rows of table `key` that have an FD."""
    rows = quality.get(key)
    return [r for r in rows if isinstance(r, dict) and isinstance(r.get("fd"), (int, float))] if isinstance(rows, list) else []


def floor_of(quality: dict) -> float | None:
    """The floor's FD at the tables' sample size (its `same_n` entry when the tables used fewer images
    than the 10,000 of the protocol, as FD grows at small n), or None when it was not measured."""
    floor = quality.get("floor")
    if not isinstance(floor, dict):
        return None
    same = floor.get("same_n")
    if isinstance(same, dict) and isinstance(same.get("fd"), (int, float)):
        return same["fd"]
    return floor["fd"] if isinstance(floor.get("fd"), (int, float)) else None


def spread_band(quality: dict, rows: list[dict]) -> tuple[float, float] | None:
    """(the lowest FD of `rows`, that FD plus the table margin of `paper_shapes.table_margin`): the
    FDs a plot shades as not told apart from the best, or None without a spread or rows."""
    m = table_margin(quality)
    if m is None or not rows:
        return None
    best = min(r["fd"] for r in rows)
    return best, best + m[0]


def plot_tradeoff(quality: dict, default_scale: float | None, path: Path) -> bool:
    """FD against accuracy along the guidance sweep, one point per conditional scale; False (and no
    file) when the card has no such points."""
    points = sorted((r for r in rows_of(quality, "guidance_sweep") if isinstance(r.get("accuracy"), (int, float))),
                    key=lambda r: r["guidance_scale"])
    if not points:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([100 * r["accuracy"] for r in points], [r["fd"] for r in points], "-o", color="tab:blue", zorder=2)
    sd = spread_sd(quality)
    if sd is not None:  # the repeat spread of the default setting, taken to hold at every scale
        ax.errorbar([100 * r["accuracy"] for r in points], [r["fd"] for r in points], yerr=sd, fmt="none",
                    ecolor="tab:blue", alpha=0.5, capsize=3, label=f"FD ± {sd:g} (sd between repeats)")
    for r in points:
        chosen = r["guidance_scale"] == default_scale
        ax.annotate(f"s={r['guidance_scale']:g}" + (" (default)" if chosen else ""), (100 * r["accuracy"], r["fd"]),
                    textcoords="offset points", xytext=(6, 6), fontsize=8, fontweight="bold" if chosen else "normal")
        if chosen:
            ax.plot([100 * r["accuracy"]], [r["fd"]], "o", ms=11, mfc="none", mec="tab:red", zorder=3)
    floor = floor_of(quality)
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


def plot_steps(quality: dict, path: Path) -> bool:
    """FD against steps, one line per sampler of the steps sweep; False (and no file) without rows."""
    rows = rows_of(quality, "steps_sweep")
    if not rows:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for sampler in SAMPLERS:
        mine = sorted((r for r in rows if r.get("sampler") == sampler), key=lambda r: r["steps"])
        if mine:
            style, size = STEPS_STYLE.get(sampler, ("-o", 6))
            ax.plot([r["steps"] for r in mine], [r["fd"] for r in mine], style, ms=size, label=sampler)
    floor = floor_of(quality)
    if floor is not None:
        ax.axhline(floor, ls="--", color="gray", lw=1, label=f"floor {floor:g}")
    band = spread_band(quality, rows)
    if band is not None:
        kind = "paired" if table_margin(quality)[1] else "repeat"
        ax.axhspan(*band, color="tab:green", alpha=0.12, lw=0, label=f"within the {kind} spread of the best")
    ax.set_xscale("log")
    ticks = sorted({r["steps"] for r in rows})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("sampler steps (log scale)")
    ax.set_ylabel("FD (lower is better)")
    scales = sorted({r["guidance_scale"] for r in rows})
    ax.set_title(f"Steps sweep at CFG scale {', '.join(f'{s:g}' for s in scales)}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)
    return True
