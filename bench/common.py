"""What every benchmark shares: where it ran (device, torch, git commit), its JSON and markdown files,
percentiles, repeated timing, and the served models loaded and run the way the worker does.

Torch is imported inside the functions that need it, so that `bench.report` and the markdown
renderers stay importable without it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "benchmarks"
"""Where results are committed: <name>.json and <name>.md, and README.md (the summary)."""

STAMP = REPO / ".whl" / "stamp.json"
"""The commit and dirty flag written by bench/prepare_gpu.sh: the device machine gets a copy of the
working tree without .git, so `git rev-parse` cannot answer there."""

DEFAULT_STORE = REPO / "model_store" / "models"

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
"""The first bytes of every PNG: how a benchmark checks that an image came back."""

TERMINAL = ("succeeded", "failed", "canceled")
"""Job statuses after which a job document no longer changes."""


# --- where it ran --------------------------------------------------------------------------------

def git_stamp() -> dict[str, Any]:
    """{"commit", "dirty"} of the checkout: git's answer, else $BENCH_GIT_COMMIT / $BENCH_GIT_DIRTY,
    else the stamp that bench/prepare_gpu.sh left, else "unknown"."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                                capture_output=True, text=True, check=True, timeout=10).stdout
        return {"commit": commit, "dirty": bool(status.strip()), "source": "git"}
    except (OSError, subprocess.SubprocessError):
        pass
    if os.environ.get("BENCH_GIT_COMMIT"):
        return {"commit": os.environ["BENCH_GIT_COMMIT"],
                "dirty": os.environ.get("BENCH_GIT_DIRTY", "").lower() in ("1", "true", "yes"), "source": "env"}
    if STAMP.exists():
        stamp = json.loads(STAMP.read_text())
        return {"commit": stamp.get("commit", "unknown"), "dirty": bool(stamp.get("dirty")), "source": str(STAMP.name)}
    return {"commit": "unknown", "dirty": None, "source": "none"}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str) -> dict[str, Any]:
    """The device, software and commit a result was measured with."""
    import torch

    git = git_stamp()
    env = {
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else cpu_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "git_commit": git["commit"],
        "git_dirty": git["dirty"],
        "git_source": git["source"],
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    try:
        import diffusers

        env["diffusers"] = diffusers.__version__
    except ImportError:
        env["diffusers"] = None
    return env


def resolve_device(name: str) -> str:
    """"cpu" or "cuda" for --device (auto: cuda when torch sees a GPU), as the worker resolves it."""
    from worker.models import resolve_device as worker_resolve

    return worker_resolve(name)


def exit_on_sigterm() -> None:
    """Turn SIGTERM (`timeout`, a stopping session) into SystemExit, so that `finally` blocks and
    context managers stop the processes a benchmark started."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def sync(device: str) -> None:
    """Wait for the device's queued work, so that a wall-clock interval covers it."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


# --- statistics ----------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary(values: list[float]) -> dict[str, float]:
    """Count, mean and percentiles of a list of seconds."""
    if not values:
        return {"n": 0}
    return {"n": len(values), "mean": sum(values) / len(values), "min": min(values), "p50": percentile(values, 50),
            "p95": percentile(values, 95), "p99": percentile(values, 99), "max": max(values)}


def timed_runs(fn: Callable[[], Any], device: str, warmup: int, min_seconds: float, min_runs: int = 1,
               max_runs: int = 1000) -> list[float]:
    """Seconds of each timed call of `fn` (device work included), after `warmup` untimed calls: at
    least `min_runs` calls, more until `min_seconds` have passed, at most `max_runs`."""
    for _ in range(warmup):
        fn()
    sync(device)
    runs: list[float] = []
    started = time.perf_counter()
    while len(runs) < max_runs and (len(runs) < min_runs or time.perf_counter() - started < min_seconds):
        t0 = time.perf_counter()
        fn()
        sync(device)
        runs.append(time.perf_counter() - t0)
    return runs


def interleaved_runs(fns: dict[str, Callable[[], Any]], device: str, warmup: int, min_seconds: float,
                     min_runs: int = 1, max_runs: int = 1000) -> dict[str, list[float]]:
    """Seconds of each timed call of each of `fns`, called in turn (one of each per round), after
    `warmup` untimed calls of each: rounds until every one has `min_runs` calls and `min_seconds` of
    timed calls, or `max_runs` calls. A drift in the machine's speed then weighs on all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    runs: dict[str, list[float]] = {name: [] for name in fns}

    def more() -> bool:
        counts = [len(r) for r in runs.values()]
        if max(counts) >= max_runs:
            return False
        return min(counts) < min_runs or min(sum(r) for r in runs.values()) < min_seconds

    while more():
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync(device)
            runs[name].append(time.perf_counter() - t0)
    return runs


# --- output --------------------------------------------------------------------------------------

def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """--device, --model-store, --model, --out and --md, the same in every benchmark."""
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where the models run; auto picks cuda when available (default: auto)")
    p.add_argument("--model-store", type=Path, default=None,
                   help="model store root (default: $MODEL_STORE, else the shipped model_store/models)")
    p.add_argument("--model", default="fashion-mnist", help="generator to benchmark (default: fashion-mnist)")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON result file (default: docs/benchmarks/<name>.json on CUDA, <name>.cpu.json on the "
                        "CPU, which git ignores: CPU figures are no results)")
    p.add_argument("--md", type=Path, default=None,
                   help="markdown table (default: the JSON file's path with .md)")


def store_root(arg: Path | None) -> Path:
    if arg is not None:
        return arg
    env = os.environ.get("MODEL_STORE")
    return Path(env) if env else DEFAULT_STORE


def write_result(name: str, result: dict[str, Any], out: Path | None, md: Path | None,
                 render: Callable[[dict[str, Any]], str], cpu_suffix: bool = True) -> Path:
    """Write `result` as JSON and its markdown table; returns the JSON's path."""
    if out is None:
        suffix = ".cpu" if cpu_suffix and result.get("environment", {}).get("device") != "cuda" else ""
        out = DOCS / f"{name}{suffix}.json"
    md = md or out.with_suffix(".md")
    out.parent.mkdir(parents=True, exist_ok=True)
    md.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    md.write_text(render(result))
    print(f"{name}: wrote {out} and {md}", flush=True)
    return out


# --- the served model, as the worker runs it ------------------------------------------------------

def worker_generators(root: Path, model: str, device: str) -> dict[str, Any]:
    """`model` loaded as `python -m worker` loads its generators (worker/__main__.py: the refs
    resolved in the store, `load_generators` onto the device)."""
    from model_store import ModelStore
    from worker.models import generator_refs, load_generators

    store = ModelStore(root)
    return load_generators(store, generator_refs(store, [model]), device)


def worker_accel() -> bool:
    """Whether a worker started here would run its CUDA mode (WORKER_ACCEL, default true)."""
    from worker.settings import WorkerSettings

    return WorkerSettings().worker_accel


def worker_engine(generators: dict[str, Any], max_batch_images: int, accel: bool | None = None) -> Any:
    """A `BatchEngine` built and warmed up as `python -m worker` builds it (worker/__main__.py: the
    CUDA mode of worker.accel when WORKER_ACCEL is on, the default). `accel` False: the models as
    they are, in fp32 (the mode the correctness check compares). Keep this in step with that file.

    The CUDA mode puts the networks into channels_last in place: give an fp32 engine generators of
    its own."""
    from worker.accel import accel_from_settings
    from worker.engine import BatchEngine

    accel = worker_accel() if accel is None else accel
    engine = BatchEngine(generators, max_batch_images, accel=accel_from_settings() if accel else None)
    started = time.perf_counter()
    engine.warm_up()
    engine.warm_up_seconds = time.perf_counter() - started
    engine.accel = accel
    return engine


def engine_request(class_label: int | None, num_images: int, seed: int, *, sampler: str = "ddim", steps: int = 50,
                   guidance_scale: float = 3.0, eta: float = 0.0) -> dict[str, Any]:
    """A normalized API request, as the worker finds it in a job record."""
    return {"class_label": class_label, "num_images": num_images, "guidance": "cfg", "guidance_scale": guidance_scale,
            "sampler": sampler, "steps": steps, "eta": eta, "seed": seed}


def run_jobs(engine: Any, model_ref: str, requests: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], list[Any]]:
    """Add every job, then step the engine until none is left, as the worker's loop does; returns
    the finished images by job and the step reports."""
    for job_id, request in requests.items():
        engine.add(job_id, model_ref, request)
    finished: dict[str, Any] = {}
    reports = []
    while engine.jobs():
        report = engine.step()
        reports.append(report)
        if report.failed:
            raise RuntimeError(f"jobs failed in the engine: {report.failed}")
        finished.update(report.finished)
    return finished, reports
