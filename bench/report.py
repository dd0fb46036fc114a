"""Renders docs/benchmarks/: each benchmark's markdown table from its JSON, the plots (with matplotlib,
when installed), and README.md, the summary against the targets of issue #7, which names the results
still owed and the command that produces them.

    python -m bench.report                          # from the JSON files in docs/benchmarks/
    python -m bench.report --import /work/.device/… # first copy the JSON files a device run brought back
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import render
from bench.common import DOCS

BENCHMARKS: dict[str, tuple[str, Callable[[dict[str, Any]], str]]] = {
    "engine": ("1. Sampling engine (GPU)", render.engine),
    "latency": ("2. Single-request latency (GPU)", render.latency),
    "load": ("3. Service under load (GPU)", render.load),
    "mixed": ("4. Mixed load: continuous against static batching (GPU)", render.mixed),
    "bookkeeping": ("Beside 3: the worker's bookkeeping per job, outside the engine (GPU)", render.bookkeeping),
    "quickstart": ("5. CPU quick start (the 2-core development machine)", render.quickstart),
}

GPU_RUN = """\
A session whose task has a GPU machine (the device tool's `status` says `can_start_another: true`):

1. Here, on the development machine: `bash bench/prepare_gpu.sh` (downloads into `.whl/` the wheels
   the device image lacks, listed in `bench/gpu-wheels.txt`, and stamps the commit into `.whl/stamp.json`).
2. The device: `run(command="bash bench/run_all_gpu.sh", carry=[".whl"], timeout_s=600)`. It runs
   benchmarks 1-4 and the worker's bookkeeping per job (about 5 minutes on an H100/H200, 9 at
   most) and brings back `engine.json`, `latency.json`, `load.json`, `mixed.json`,
   `bookkeeping.json` and `run_all_gpu.log`; then `give_back`. Every call
   must carry `.whl` (a later call that does not loses it there).
3. Here: `.venv/bin/python -m bench.report --import <files_at of that run>`, which copies the JSON
   files into `docs/benchmarks/` and renders the tables, the plots and this page; commit
   `docs/benchmarks/`.

One benchmark alone, on the device: `run(command="bash -c 'pip install -q --no-index --no-deps --target
/tmp/site .whl/*.whl && PYTHONPATH=/tmp/site:. python3 -m bench.engine --device cuda --out $OUT/engine.json'",
carry=[".whl"])`. Each benchmark's flags: `python -m bench.<name> --help`.
"""

CPU_RESULTS: dict[str, tuple[str, Callable[[dict[str, Any]], str]]] = {
    "engine-cpu": ("1. Sampling engine, on the 2-core CPU machine", render.engine),
    "load-cpu": ("3. Service under load, on the 2-core CPU machine", render.load),
    "mixed-cpu": ("4. Mixed load: continuous against static batching, on the 2-core CPU machine", render.mixed),
    "bookkeeping-cpu": ("Beside 3: the worker's bookkeeping per job, on the 2-core CPU machine", render.bookkeeping),
    "models-cpu": ("Many models on one worker: a short job behind another model's burst, and a model swap, on the "
                   "2-core CPU machine", render.models),
}
"""Benchmarks that benchmarks.md also runs on the CPU ("CPU here, GPU on the device"): committed as
CPU results beside, never instead of, the GPU ones."""

LOAD_CPU_RUN = ("`.venv/bin/python -m bench.load --device cpu --request-timeout 600 --out "
                "docs/benchmarks/load-cpu.json` here, with nothing else running (on this CPU the 256 one-image jobs "
                "of the last level run as one batch of about three minutes, past the default timeout of 120 s)")

MIXED_CPU_RUN = ("`.venv/bin/python -m bench.mixed --device cpu --requests 100 --timeout 300 --out "
                 "docs/benchmarks/mixed-cpu.json` here, with nothing else running (100 requests: a trace of about a "
                 "minute at the CPU's pace, against about 200 s per policy for the default 300)")

BOOKKEEPING_CPU_RUN = ("`.venv/bin/python -m bench.bookkeeping --device cpu --jobs 512 --out "
                       "docs/benchmarks/bookkeeping-cpu.json` here, with nothing else running")

ENGINE_CPU_RUN = ("`.venv/bin/python -m bench.engine --device cpu --out docs/benchmarks/engine-cpu.json` here, with "
                  "nothing else running (batch 1, 16 and 64, DDIM 20 and 50, CFG 3; about 15 minutes)")

MODELS_CPU_RUN = ("`.venv/bin/python -m bench.models --device cpu --out docs/benchmarks/models-cpu.json` here, with "
                  "nothing else running (the two shipped generators, fashion-mnist@2 and @1; about a minute)")

QUICKSTART_RUN = "`.venv/bin/python -m bench.quickstart` here, on the 2-core machine, with nothing else running."


def load_results(folder: Path, names: Any = BENCHMARKS) -> dict[str, dict[str, Any]]:
    out = {}
    for name in names:
        path = folder / f"{name}.json"
        if path.exists():
            out[name] = json.loads(path.read_text())
    return out


def import_results(source: Path, folder: Path, allow_cpu: bool = False) -> list[str]:
    """Copy the benchmark JSON files of a device run into `folder`; their names. A GPU benchmark
    measured on the CPU is refused unless `allow_cpu`: CPU figures are no results."""
    copied = []
    for path in sorted(source.glob("*.json")):
        doc = json.loads(path.read_text())
        name = doc.get("benchmark")
        if name not in BENCHMARKS:
            continue
        if name != "quickstart" and doc.get("environment", {}).get("device") != "cuda" and not allow_cpu:
            print(f"bench.report: {path} was measured on the CPU: not imported (--allow-cpu to force)",
                  file=sys.stderr)
            continue
        shutil.copyfile(path, folder / f"{name}.json")
        copied.append(name)
    return copied


# --- the headline figures against the targets of issue #7 -----------------------------------------

def _row(target: str, figure: str, met: bool | None) -> str:
    return f"| {target} | {figure} | {'-' if met is None else ('yes' if met else '**no**')} |"


def targets(results: dict[str, dict[str, Any]]) -> list[str]:
    rows = ["| target (issue #7) | measured | met |", "|---|---|---|"]
    eng = results.get("engine")
    if eng:
        big = [r for r in eng["results"] if r["batch"] >= 256 and (r.get("project") or {}).get("images_per_s")]
        if big:
            best = max(big, key=lambda r: r["project"]["images_per_s"])
            ratio = best.get("project_over_peer")
            frac = best["project"]["fraction_of_ceiling"]
            rows.append(_row("throughput at batch >= 256: >= 5x the peer loop",
                             f"{ratio:.2f}x at batch {best['batch']}" if ratio else "-",
                             ratio >= 5 if ratio else None))
            rows.append(_row("throughput at batch >= 256: >= 35% of the bf16 matmul ceiling",
                             f"{100 * frac:.1f}% at batch {best['batch']}", frac >= 0.35))
        one = next((r for r in eng["results"] if r["batch"] == 1 and (r.get("project") or {}).get("images_per_s")),
                   None)
        if one:
            ms = 1e3 / one["project"]["images_per_s"]
            rows.append(_row("batch-1 engine time for one image <= 60 ms", f"{ms:.1f} ms", ms <= 60))
        c = eng["correctness"]
        rows.append(_row("project and peer samples agree (max abs diff < 1e-3)", f"{c['max_abs_diff']:.2e}",
                         c["passed"]))
    lat = results.get("latency")
    if lat:
        over = lat["overhead"]["p50_over_worker_engine_s"] * 1e3
        rows.append(_row("single-request overhead over the engine time <= 30 ms at p50", f"{over:.1f} ms", over <= 30))
    load = results.get("load")
    if load:
        at = next((r for r in load["results"] if r["clients"] == 256), None)
        if at:
            frac = at["fraction_of_engine"]
            rows.append(_row("256 one-image clients: >= 80% of the engine's own throughput",
                             f"{100 * frac:.0f}% ({at['images_per_s']:.1f} of "
                             f"{at['engine_images_per_s']:.1f} images/s)",
                             frac >= 0.8))
    mixed = results.get("mixed")
    if mixed:
        ratio = mixed["static_over_continuous_short"].get("p95")
        rows.append(_row("mixed load: short-job p95 >= 3x lower with continuous batching",
                         f"{ratio:.1f}x" if ratio else "-", ratio >= 3 if ratio else None))
    quick = results.get("quickstart")
    if quick:
        first = quick["figures"]["first_png_s"]["max"]
        rows.append(_row("CPU quick start: first PNG within 20 s of a cold start", f"{first:.1f} s", first <= 20))
    return rows


def cpu_targets(cpu_results: dict[str, dict[str, Any]], results: dict[str, dict[str, Any]]) -> list[str]:
    """The CPU engine's targets (issue "The CPU engine"): against the peer loop and the fp32 matmul
    ceiling measured in the same run, and the quick start with the fast path on."""
    rows = ["| target (the CPU engine) | measured | met |", "|---|---|---|"]
    eng = cpu_results.get("engine-cpu")
    if eng:
        for batch in (1, 64):
            at = [r for r in eng["results"] if r["batch"] == batch and r.get("project_over_peer")]
            if at:
                worst = min(r["project_over_peer"] for r in at)
                rows.append(_row(f"project/peer >= 1.5x at batch {batch}", ", ".join(
                    f"{r['project_over_peer']:.2f}x (DDIM {r['steps']})" for r in at), worst >= 1.5))
        best = max((r for r in eng["results"] if (r.get("project") or {}).get("fraction_of_ceiling")),
                   key=lambda r: r["project"]["fraction_of_ceiling"], default=None)
        if best:
            frac = best["project"]["fraction_of_ceiling"]
            rows.append(_row(">= 70% of the fp32 matmul ceiling", f"{100 * frac:.0f}% at batch {best['batch']} "
                             f"(DDIM {best['steps']})", frac >= 0.7))
        c = eng["correctness"]
        served = c.get("served_mode") or {}
        if served:
            rows.append(_row(f"the served samples within 1e-3 of the peer's (DDIM {c['steps']})",
                             f"{served['max_abs_diff']:.2e}", served["max_abs_diff"] < 1e-3))
    quick = results.get("quickstart")
    if quick:
        first = quick["figures"]["first_png_s"]["max"]
        rows.append(_row("CPU quick start with the fast path: first PNG within 10 s", f"{first:.1f} s", first <= 10))
    return rows


NOTES = """\
- Benchmark 1 times the engine as `python -m worker` builds it (`bench/common.py: worker_engine`, which
  follows `worker/__main__.py`: on CUDA its accelerated mode, `WORKER_ACCEL`, on by default: bf16
  autocast, channels_last, CUDA graphs per batch-size bucket), and the same engine in fp32
  (`project_fp32`). The correctness check compares the fp32 mode with the peer loop (max abs
  difference under 1e-3, TF32 off) and reports the served mode's difference beside it. It uses 50
  DDIM steps: diffusers' DDIM steps to t - T // steps, which is our trailing subsequence only when
  the step count divides T = 1000.
- The seed loop is the notebook's DDPM `p_sample_loop` respaced to the same 50 trailing timesteps, so
  that all three loops make the same number of model evaluations (the notebook itself walks all of
  its training steps).
- Benchmark 4 drives the engine directly (real model evaluations, real wall clock): the worker has
  no static-batching mode to compare against, so the service is not part of that measurement.
- Benchmark 5 must run on an otherwise idle machine: with another process busy on one of the two
  cores, the worker's two OpenMP threads contend and the request ran tens of times slower than with
  `OMP_NUM_THREADS=1` (seen 2026-11-28). The JSON records the load average at the start.
- Benchmark 3 on the CPU: the load generator, the API and the worker share the machine's two cores,
  and the engine's own figure at batch 1 is noisy (0.87 to 1.46 images/s in runs on 2026-11-28 and
  29), which is how a level can show under 70% or over 100%. At 256 clients the clients' POST wait
  (60 s) runs out before their one batch ends: on 2026-11-28 they then polled every 50 ms, about
  5,000 requests/s that took the worker's CPU, and the service made 55% of the engine's throughput;
  since `GET /jobs/{id}?wait=` they long-poll, and it made 93% (2026-11-29, commit `0f21814`).
- The bookkeeping measurement (`bench/bookkeeping.py`) submits one-image jobs in process and lets one
  worker work the queue in burst mode, with one sampler step per job so that the engine's share is
  small: per job, the wall time outside engine steps and the Redis commands. On a GPU the engine
  runs 256 one-image jobs in a fraction of a second, so these milliseconds per job bound benchmark
  3's share of the engine. On the 2-core CPU machine, writing the ends of one step's jobs in one
  round trip (and skipping the queue peek while any job fits) took it from 7.5-9.3 to 5.1-5.5 ms
  per job (two runs each, tiny random models, commit `d34e296` against `461d997`, 2026-11-29).
- Benchmark 1 on the CPU (engine-cpu) times the engine as served there: its eps-model exported to
  ONNX and run by ONNX Runtime in fp32 (`worker/cpu_accel.py`). The step split shows where it wins:
  the forward pass, 2.3x faster than eager torch at batch 1 (4.7 against 10.8 ms) and 1.4x at batch 64
  (253 against 353 ms for 128 rows). What keeps batch 64 under 1.5x and the engine near 50% of the
  fp32 matmul ceiling, from an ONNX Runtime profile of one 128-row forward pass (2026-12-05, this
  machine): the convolutions take about half of the time and run near the ceiling; the rest is
  memory-bound work between them, GroupNorm (about 14%), the scale-shift and residual adds and
  multiplies (about 13%), the layout reorders around the norms that the blocked convolutions need
  (about 9%), SiLU and the skip concatenations. Tried and not kept, each measured on this machine:
  channels_last in eager torch (no gain at 128 rows), `torch.jit.optimize_for_inference` (slower),
  inductor with frozen weights (about 1.5x over eager at 128 rows but 1.6x at batch 1, and 30 to 45 s
  of compilation per batch shape: no cold start under 10 s), a GroupNorm folded into the scale-shift
  before the export (5% faster at 128 rows, slower at batch 1), and bf16 autocast (AMX; fast at large
  batches, but 2e-2 to 4e-2 off per forward pass, far outside the 1e-3 the samples must keep).
  ONNX Runtime's idle threads spin between operators (faster by a quarter at batch 1, measured
  against no spinning); the cost is the host's part of a step at batch 64 (4.4 ms against 1.7 eager).
- Each figure is a median over timed runs after a warm-up; the raw run times are in the JSON.
"""


def summary_page(results: dict[str, dict[str, Any]], plots: list[str],
                 cpu_results: dict[str, dict[str, Any]] | None = None) -> str:
    lines = ["# Benchmarks", "",
             "The protocol is `../shared/spec/benchmarks.md`: every figure is measured side by side in one run on one "
             "machine, with the device, torch version and git commit recorded beside it. Each benchmark is a command "
             "in `bench/` that writes `<name>.json` and `<name>.md` here; `python -m bench.report` renders this page. "
             "CPU runs of the GPU benchmarks write `<name>.cpu.json`, which git ignores: they are no results.", ""]
    if results:
        lines += ["## Against the targets", ""] + targets(results) + ["", "## Results", ""]
        for name, (title, _) in BENCHMARKS.items():
            r = results.get(name)
            if r is not None:
                env = r["environment"]
                lines.append(f"- {title}: [{name}.md]({name}.md), {env['device_name']}, torch {env['torch']}, commit "
                             f"`{str(env['git_commit'])[:12]}`{' (dirty)' if env.get('git_dirty') else ''}, "
                             f"{env['date']}.")
        lines.append("")
    owed = [name for name in BENCHMARKS if name not in results]
    if owed:
        lines += ["## Owed", ""] + [f"- {BENCHMARKS[n][0]}" for n in owed] + [""]
        if any(n != "quickstart" for n in owed):
            lines += ["The GPU figures are owed to a session whose task has a GPU machine; none is ever measured or "
                      "committed from the CPU machine. How to produce them is below.", ""]
    if cpu_results:
        lines += ["## On the CPU", "", "What benchmarks.md measures on the 2-core machine as well (CPU figures, no "
                  "stand-in for the GPU ones):", ""]
        if "engine-cpu" in cpu_results:
            lines += cpu_targets(cpu_results, results) + [""]
        for name, r in cpu_results.items():
            env = r["environment"]
            lines.append(f"- {CPU_RESULTS[name][0]}: [{name}.md]({name}.md), {env['device_name']}, torch "
                         f"{env['torch']}, commit `{str(env['git_commit'])[:12]}`"
                         f"{' (dirty)' if env.get('git_dirty') else ''}, {env['date']}.")
        lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    lines += ["## How to produce them", "", "Benchmarks 1-4, on the GPU:", "", GPU_RUN,
              f"Benchmark 1 on the CPU: {ENGINE_CPU_RUN}.", "",
              f"Benchmark 3 on the CPU: {LOAD_CPU_RUN}.", "", f"Benchmark 4 on the CPU: {MIXED_CPU_RUN}.", "",
              f"The worker's bookkeeping on the CPU: {BOOKKEEPING_CPU_RUN}.", "",
              f"Many models on one worker, on the CPU: {MODELS_CPU_RUN}.", "",
              f"Benchmark 5: {QUICKSTART_RUN}", "", "## Notes", "",
              NOTES]
    return "\n".join(lines)


# --- plots ------------------------------------------------------------------------------------------

def make_plots(results: dict[str, dict[str, Any]], folder: Path) -> list[str]:
    """PNG plots of the results present; none if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench.report: matplotlib is not installed; no plots", file=sys.stderr)
        return []
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    made = []

    def plain_log_axes(ax: Any, xs: list[int]) -> None:
        ax.set_xscale("log")
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.xaxis.set_minor_formatter(NullFormatter())
        if ax.get_yscale() == "log":
            ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.yaxis.set_minor_formatter(NullFormatter())

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
        made.append(name)

    eng = results.get("engine")
    if eng:
        fig, ax = plt.subplots(figsize=(6, 4))
        # one line per loop, at the most steps measured (older results have one steps value, no per-row one)
        steps = eng["settings"]["steps"]
        steps = max(steps) if isinstance(steps, list) else steps
        rows = [r for r in eng["results"] if r.get("steps", steps) == steps]
        for loop in eng["settings"]["loops"]:
            pts = [(r["batch"], r[loop]["images_per_s"]) for r in rows if (r.get(loop) or {}).get("images_per_s")]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=loop)
        ax.set(yscale="log", xlabel="batch size", ylabel="images/s",
               title=f"Engine, DDIM {steps} + CFG ({eng['environment']['device_name']})")
        plain_log_axes(ax, [r["batch"] for r in rows])
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
        save(fig, "engine_throughput.png")
    lat = results.get("latency")
    if lat:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        keys = [("service", "through the service"), ("engine_in_worker", "engine in the worker"),
                ("engine_direct", "engine directly")]
        for i, q in enumerate(("p50", "p95")):
            ax.bar([k + 0.38 * i for k in range(len(keys))], [lat["figures"][k][q] * 1e3 for k, _ in keys], 0.38,
                   label=q)
        ax.set_xticks([k + 0.19 for k in range(len(keys))], [label for _, label in keys])
        ax.set(ylabel="ms", title="Single-request latency, one image")
        ax.legend()
        save(fig, "latency.png")
    load = results.get("load")
    if load:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
        clients = [r["clients"] for r in load["results"]]
        for q in ("p50", "p95", "p99"):
            a1.plot(clients, [r["latency_s"].get(q, float("nan")) * 1e3 for r in load["results"]], marker="o", label=q)
        a1.set(xlabel="concurrent clients", ylabel="latency, ms", title="Latency under load")
        plain_log_axes(a1, clients)
        a1.legend()
        a2.plot(clients, [r["images_per_s"] for r in load["results"]], marker="o", label="service")
        a2.plot(clients, [r["engine_images_per_s"] for r in load["results"]], marker="s", label="engine alone")
        a2.set(xlabel="concurrent clients", ylabel="images/s", title="Throughput")
        plain_log_axes(a2, clients)
        a2.legend()
        save(fig, "load.png")
    mixed = results.get("mixed")
    if mixed:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        modes = list(mixed["runs"])
        for i, q in enumerate(("p50", "p95")):
            ax.bar([k + 0.38 * i for k in range(len(modes))],
                   [mixed["runs"][m]["short_latency_s"].get(q, float("nan")) * 1e3 for m in modes], 0.38, label=q)
        ax.set_xticks([k + 0.19 for k in range(len(modes))], modes)
        ax.set(ylabel="ms", title="Short-request latency under mixed load")
        ax.legend()
        save(fig, "mixed.png")
    return made


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, default=DOCS, help="folder of the results (default: docs/benchmarks)")
    p.add_argument("--import", dest="source", type=Path, default=None,
                   help="first copy the benchmark JSON files of this folder (a device run's files) into --dir")
    p.add_argument("--allow-cpu", action="store_true",
                   help="import GPU benchmarks measured on the CPU too (to look at the pages; never to commit)")
    args = p.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.source is not None:
        copied = import_results(args.source, args.dir, args.allow_cpu)
        print(f"bench.report: imported {', '.join(copied) or 'nothing'} from {args.source}")
    results = load_results(args.dir)
    for name, result in results.items():
        (args.dir / f"{name}.md").write_text(BENCHMARKS[name][1](result))
    cpu_results = load_results(args.dir, CPU_RESULTS)
    for name, result in cpu_results.items():
        (args.dir / f"{name}.md").write_text(CPU_RESULTS[name][1](result))
    plots = make_plots(results, args.dir)
    (args.dir / "README.md").write_text(summary_page(results, plots, cpu_results))
    print(f"bench.report: {len(results)} results, {len(plots)} plots; wrote {args.dir / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
