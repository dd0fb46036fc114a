"""Benchmark 1, the sampling engine: images/s of the engine as the worker runs it (project), of a
diffusers-style loop (peer) and of the seed notebook's loop (seed) around the same weights, for each
batch size; their ratios; the fraction of the bf16 matmul ceiling each reaches; and, in the same run,
the check that project and peer samples agree (same x_T, DDIM eta 0, fp32).

    python -m bench.engine                              # on the device: batch 1, 16, 64, 256, 1024; DDIM 50
    python -m bench.engine --device cpu                 # on the CPU: batch 1, 16, 64; DDIM 20 and 50
    python -m bench.engine --batch-sizes 1,2 --steps 5  # a quick look

The loops of one (steps, batch) setting are timed interleaved, one run of each in turn, so that a
machine whose speed drifts during the run (a shared CPU, turbo, a busy neighbour) moves every loop's
figure alike and the ratios stay fair. `--split-batches` times one engine step split into the
forward pass and the host's bookkeeping around it, beside the peer loop's own split.

Exits 1 (after writing its JSON) if the correctness check fails.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from bench import render
from bench.common import (
    add_common_arguments,
    engine_request,
    environment,
    interleaved_runs,
    resolve_device,
    run_jobs,
    store_root,
    sync,
    worker_engine,
    worker_generators,
    write_result,
)
from bench.loops import diffusers_ddim, peer_loop, seed_loop

LOOPS = ("project", "project_fp32", "peer", "seed")
"""project: the engine as the worker runs it (its CUDA mode when WORKER_ACCEL is on, the default);
project_fp32: the same engine with the models as they are, in fp32 (WORKER_ACCEL=false)."""
DEFAULT_LOOPS = ("project", "peer", "seed")
TOLERANCE = 1e-3
"""Most max abs difference allowed between project and peer samples (benchmarks.md)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__.splitlines()[0])
    add_common_arguments(p)
    p.add_argument("--batch-sizes", default=None,
                   help="comma-separated (default: 1,16,64,256,1024 on CUDA, 1,16,64 on the CPU)")
    p.add_argument("--loops", default=",".join(DEFAULT_LOOPS),
                   help=f"which of {','.join(LOOPS)} to time (default: {','.join(DEFAULT_LOOPS)})")
    p.add_argument("--steps", default=None, help="DDIM steps, comma-separated (default: 50 on CUDA, 20,50 on the CPU)")
    p.add_argument("--guidance-scale", type=float, default=3.0, help="CFG scale (default: 3)")
    p.add_argument("--class-label", type=int, default=7, help="class of every image (default: 7)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per loop and batch size (default: 1)")
    p.add_argument("--min-seconds", type=float, default=2.0,
                   help="time each loop and batch size for at least this long (default: 2)")
    p.add_argument("--max-runs", type=int, default=50, help="most timed runs per loop and batch size (default: 50)")
    p.add_argument("--ceiling-size", type=int, default=None,
                   help="side n of the n x n x n matmul timed as the ceiling (default: 8192 bf16 on CUDA, 1024 "
                        "fp32 on the CPU)")
    p.add_argument("--check-batch", type=int, default=16, help="images in the correctness check (default: 16)")
    p.add_argument("--check-steps", type=int, default=50,
                   help="DDIM steps of the correctness check; must divide the model's training steps, since "
                        "diffusers' DDIM steps to t - T // steps (default: 50)")
    p.add_argument("--split-batches", default=None,
                   help="batch sizes at which one engine step is split into forward pass and host bookkeeping, "
                        "comma-separated (default: 1 and 64, those of --batch-sizes; none: empty)")
    p.add_argument("--profile-batch", type=int, default=0,
                   help="profile one project run at this batch size with torch.profiler (default: 0, none)")
    return p.parse_args(argv)


# --- ceilings and FLOPs --------------------------------------------------------------------------

def matmul_ceiling(device: str, n: int | None) -> dict[str, Any]:
    """FLOP/s of an n x n x n matmul: bf16 on CUDA (the benchmark's ceiling), fp32 on the CPU (bf16
    matmuls on a CPU say nothing about it)."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    n = n or (8192 if device == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    reps = 10 if device == "cuda" else 3
    for _ in range(3 if device == "cuda" else 1):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    seconds = time.perf_counter() - t0
    note = ("the ceiling of benchmarks.md" if device == "cuda" and n == 8192 else
            f"on the {device}: a stand-in, not the ceiling of benchmarks.md")
    return {"matmul_n": n, "dtype": str(dtype).removeprefix("torch."), "reps": reps, "seconds": seconds,
            "flops_per_s": 2 * n ** 3 * reps / seconds, "note": note}


def flops_per_row(model: torch.nn.Module, shape: tuple[int, ...], null_class: int, device: str) -> float:
    """Model FLOPs of one forward pass per batch row (torch.utils.flop_counter: matmuls, convolutions,
    attention), counted on a batch of two rows (one conditional, one unconditional)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(2, *shape, device=device)
    t = torch.full((2,), 500, device=device, dtype=torch.long)
    y = torch.tensor([0, null_class], device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, t, y)
    return counter.get_total_flops() / 2


# --- the three loops -----------------------------------------------------------------------------

class Bench:
    """The loaded models and the three loops over them, for one device."""

    def __init__(self, args: argparse.Namespace, device: str, max_batch: int):
        from model_store import ModelStore
        from model_store.loading import load_generator

        self.args, self.device = args, device
        root = store_root(args.model_store)
        generators = worker_generators(root, args.model, device)
        self.ref = next(iter(generators))
        self.gen = generators[self.ref]
        capacity = max(max_batch, args.check_batch, 64)
        self.engine = worker_engine(generators, max_batch_images=capacity)
        # what the served engine runs its network on, on the CPU: "onnxruntime", or "eager" (not chosen,
        # or its fallback)
        from worker.cpu_accel import OrtModel

        self.cpu_backend = ("onnxruntime" if any(isinstance(m, OrtModel) for m in self.engine.networks())
                            else "eager")
        # the fp32 mode gets networks of its own: the CUDA mode turns the worker's to channels_last in place
        self.engine_fp32 = worker_engine(worker_generators(root, args.model, device), capacity, accel=False)
        # the reference loops get their own fp32 eager copy of the weights, whatever the engine does to its own
        self.ref_gen = load_generator(ModelStore(root), self.ref, device=device, dtype=torch.float32,
                                      with_classifier=False)
        self.null = self.gen.num_classes
        self.shape = self.gen.image_shape
        self.scheduler = diffusers_ddim(self.gen.card.schedule, self.gen.clip_x0)
        self.num_train_steps = self.gen.schedule.num_train_steps
        self._jobs = itertools.count()

    def request(self, batch: int, seed: int, steps: int) -> dict[str, Any]:
        return engine_request(self.args.class_label, batch, seed, steps=steps, guidance_scale=self.args.guidance_scale)

    def labels(self, batch: int) -> torch.Tensor:
        return torch.full((batch,), self.args.class_label, device=self.device, dtype=torch.long)

    def project(self, batch: int, steps: int, seed: int = 1000, fp32: bool = False) -> tuple[torch.Tensor, int]:
        """One job of `batch` images through the engine (its fp32 mode with `fp32`); (x_0 on the CPU,
        model evaluations made)."""
        job = f"bench-{next(self._jobs)}"
        engine = self.engine_fp32 if fp32 else self.engine
        finished, reports = run_jobs(engine, self.ref, {job: self.request(batch, seed, steps)})
        return finished[job], sum(len(r.batch_images) for r in reports)

    def peer(self, batch: int, steps: int, x_T: torch.Tensor | None = None) -> torch.Tensor:
        if x_T is None:
            x_T = torch.randn((batch, *self.shape), device=self.device)
        return peer_loop(self.ref_gen.model, self.scheduler, x_T, self.labels(batch), self.null,
                         self.args.guidance_scale, steps)

    def seed(self, batch: int, steps: int) -> torch.Tensor:
        from diffusion.schedules import timestep_subsequence

        timesteps = timestep_subsequence(steps, self.num_train_steps)[:-1]
        return seed_loop(self.ref_gen.model, self.gen.schedule.alphas_cumprod, timesteps, (batch, *self.shape),
                         self.labels(batch), self.null, self.args.guidance_scale)

    def x_T(self, request: dict[str, Any]) -> torch.Tensor:
        """The x_T the engine draws for `request`: the state `BatchEngine.add` starts, built by the same
        public calls (per-image seeded generators, diffusion.noise.stacked_randn)."""
        from contract.request import GenerateSettings
        from diffusion.sampling import SamplerState, SampleSpec, specs_for_request

        settings = GenerateSettings.from_record(request)
        spec, n = SampleSpec(**settings.sampled()), settings.num_images
        state = SamplerState.start(specs_for_request(spec, n), self.shape, self.null, self.gen.schedule, self.device,
                                   track_x0=False)
        return state.x.clone()


def check_correctness(bench: Bench, batch: int, steps: int) -> dict[str, Any]:
    """Project in its fp32 mode against peer from the same x_T (DDIM eta 0, TF32 off): max abs
    difference of x_0, which must be under TOLERANCE; and, for information, the same difference for
    the engine as the worker runs it (its CUDA mode computes in bf16)."""
    if bench.gen.schedule.num_train_steps % steps:
        raise ValueError(f"--check-steps {steps} does not divide the {bench.gen.schedule.num_train_steps} training "
                         "steps: diffusers' DDIM would take other timesteps than ours")
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        request = bench.request(batch, seed=4242, steps=steps)
        ours, _ = bench.project(batch, steps, seed=4242, fp32=True)
        theirs = bench.peer(batch, steps, x_T=bench.x_T(request))
        served, _ = bench.project(batch, steps, seed=4242)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    diff = (ours.float() - theirs.float()).abs().max().item()
    served_diff = (served.float() - theirs.float()).abs().max().item()
    return {"batch": batch, "seed": 4242, "steps": steps, "eta": 0.0, "dtype": "float32", "tf32": False,
            "max_abs_diff": diff, "tolerance": TOLERANCE, "passed": bool(diff < TOLERANCE),
            "served_mode": {"accel": bench.engine.accel and bench.device == "cuda", "max_abs_diff": served_diff,
                            "mean_abs_diff": (served.float() - theirs.float()).abs().mean().item()}}


def loop_fn(bench: Bench, loop: str, batch: int, steps: int, made: list[int]) -> Callable[[], Any]:
    """One run of `loop` at (batch, steps); a project run appends its model evaluations to `made`."""
    if loop in ("project", "project_fp32"):
        return lambda: made.append(bench.project(batch, steps, fp32=loop == "project_fp32")[1])
    if loop == "peer":
        return lambda: bench.peer(batch, steps)
    return lambda: bench.seed(batch, steps)


def time_loops(bench: Bench, loops: list[str], batch: int, steps: int, flops_image: float,
               ceiling: float) -> dict[str, dict[str, Any]]:
    """Images/s of each loop at (batch, steps), timed interleaved (one run of each loop in turn), with
    the FLOP/s each reaches and its share of the ceiling."""
    args = bench.args
    made: dict[str, list[int]] = {loop: [] for loop in loops}
    fns = {loop: loop_fn(bench, loop, batch, steps, made[loop]) for loop in loops}
    out: dict[str, dict[str, Any]] = {}
    try:
        runs = interleaved_runs(fns, bench.device, args.warmup, args.min_seconds, max_runs=args.max_runs)
    except torch.cuda.OutOfMemoryError as e:
        torch.cuda.empty_cache()
        return {loop: {"error": f"out of memory: {e}".splitlines()[0]} for loop in loops}
    for loop in loops:
        median = sorted(runs[loop])[len(runs[loop]) // 2]
        images_per_s = batch / median
        achieved = images_per_s * flops_image
        out[loop] = {"images_per_s": images_per_s, "median_s": median, "runs_s": runs[loop],
                     "model_evaluations": made[loop][-1] if made[loop] else steps,
                     "achieved_flops_per_s": achieved, "fraction_of_ceiling": achieved / ceiling}
    return out


class _Timed(torch.nn.Module):
    """An eps-model that adds the wall time of its calls to `seconds` (CPU: the calls are synchronous)."""

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner, self.seconds = inner, 0.0

    def forward(self, *args: Any) -> Any:
        t0 = time.perf_counter()
        out = self.inner(*args)
        self.seconds += time.perf_counter() - t0
        return out


def _best_split(run: Callable[[], Any], timed: list[_Timed], steps: int, repeats: int) -> dict[str, float]:
    """The best of `repeats` runs of `run`, per step: its wall time, the part spent in the `timed`
    networks' forward passes, and the rest."""
    best: tuple[float, float] | None = None
    for _ in range(repeats):
        for t in timed:
            t.seconds = 0.0
        t0 = time.perf_counter()
        run()
        total = time.perf_counter() - t0
        if best is None or total < best[0]:
            best = (total, sum(t.seconds for t in timed))
    total, forward = best
    return {"step_ms": 1e3 * total / steps, "forward_ms": 1e3 * forward / steps,
            "host_ms": 1e3 * (total - forward) / steps}


def step_split(bench: Bench, batch: int, steps: int, repeats: int = 3) -> dict[str, Any]:
    """Per step, at `batch` images: the forward pass and the rest (the host's bookkeeping: guidance,
    sampler update, joins and harvest for the engine; cat, CFG and scheduler.step for the peer), for
    the engine as served, the engine in fp32 eager, and the peer loop; the best of `repeats` runs.
    CPU only: on CUDA the forward's wall time is its launch, not its work."""
    split: dict[str, Any] = {"batch": batch, "steps": steps}
    for name, engine in (("project", bench.engine), ("project_fp32", bench.engine_fp32)):
        timed = engine.wrap_networks(_Timed)
        try:
            split[name] = _best_split(lambda name=name: bench.project(batch, steps, fp32=name == "project_fp32"),
                                      timed, steps, repeats)
        finally:
            engine.wrap_networks(lambda t: t.inner)
    model = bench.ref_gen.model
    bench.ref_gen.model = timed_peer = _Timed(model)
    try:
        split["peer"] = _best_split(lambda: bench.peer(batch, steps), [timed_peer], steps, repeats)
    finally:
        bench.ref_gen.model = model
    return split


def profile_project(bench: Bench, batch: int, steps: int) -> dict[str, Any]:
    """One project run at `batch` under torch.profiler: the top operators by self device time (CUDA)
    or self CPU time, and how busy the device was over the run."""
    from torch.profiler import ProfilerActivity, profile

    bench.project(batch, steps)  # warm
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if bench.device == "cuda" else [])
    sync(bench.device)
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        bench.project(batch, steps)
        sync(bench.device)
    wall = time.perf_counter() - t0
    averages = prof.key_averages()

    def device_us(e: Any) -> float:
        return float(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0)) or 0.0)

    key = device_us if bench.device == "cuda" else (lambda e: float(e.self_cpu_time_total))
    top = sorted(averages, key=key, reverse=True)[:25]
    busy = sum(device_us(e) for e in averages) / 1e6
    table = ""
    for sort_by in (["self_cuda_time_total", "self_device_time_total"] if bench.device == "cuda" else []) \
            + ["self_cpu_time_total"]:
        try:
            table = averages.table(sort_by=sort_by, row_limit=25)
            break
        except (AttributeError, KeyError, ValueError):  # the key's name changed across torch versions
            continue
    return {
        "batch": batch, "wall_s": wall, "device_busy_s": busy if bench.device == "cuda" else None,
        "top": [{"name": e.key, "calls": e.count, "self_cpu_ms": e.self_cpu_time_total / 1e3,
                 "self_device_ms": device_us(e) / 1e3} for e in top],
        "table": table,
    }


def _ints(text: str | None, default: str) -> list[int]:
    return [int(v) for v in (text if text is not None else default).split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    on_cuda = device == "cuda"
    batches = _ints(args.batch_sizes, "1,16,64,256,1024" if on_cuda else "1,16,64")
    steps_list = _ints(args.steps, "50" if on_cuda else "20,50")
    # on the CPU, by default, the smallest batch and the largest up to 64
    split_default = sorted({min(batches), max((b for b in batches if b <= 64), default=min(batches))})
    split_batches = [] if on_cuda else _ints(args.split_batches, ",".join(map(str, split_default)))
    loops = [name for name in args.loops.split(",") if name]
    unknown = set(loops) - set(LOOPS)
    if unknown or not batches or min(batches) < 1 or not steps_list or min(steps_list) < 1:
        print(f"bench.engine: error: bad --loops {sorted(unknown)}, --batch-sizes {args.batch_sizes!r} or --steps "
              f"{args.steps!r}", file=sys.stderr)
        return 2
    bench = Bench(args, device, max(batches + split_batches))
    ceiling = matmul_ceiling(device, args.ceiling_size)
    per_row = flops_per_row(bench.ref_gen.model, bench.shape, bench.null, device)
    print(f"bench.engine: {bench.ref} on {device} ({bench.cpu_backend}); {per_row / 1e9:.3f} GFLOP per row; ceiling "
          f"{ceiling['flops_per_s'] / 1e12:.2f} TFLOP/s ({ceiling['note']})", flush=True)

    correctness = check_correctness(bench, args.check_batch, args.check_steps)
    print(f"bench.engine: correctness, project (fp32) vs peer: max abs diff {correctness['max_abs_diff']:.2e} "
          f"({'pass' if correctness['passed'] else 'FAIL'}, tolerance {TOLERANCE:g}); the served mode: "
          f"{correctness['served_mode']['max_abs_diff']:.2e}", flush=True)

    rows = []
    for steps in steps_list:
        # CFG at scale != 0, 1 evaluates two rows per image per step in every loop
        flops_image = per_row * 2 * steps
        for batch in batches:
            row: dict[str, Any] = {"steps": steps, "batch": batch,
                                   **time_loops(bench, loops, batch, steps, flops_image, ceiling["flops_per_s"])}
            for loop in loops:
                figure = row[loop].get("images_per_s")
                print(f"bench.engine: DDIM {steps:4d} batch {batch:5d} {loop:12s} "
                      + (f"{figure:10.2f} images/s" if figure else row[loop].get("error", "")), flush=True)
            for other in ("peer", "seed"):
                a, b = row.get("project", {}).get("images_per_s"), row.get(other, {}).get("images_per_s")
                row[f"project_over_{other}"] = a / b if a and b else None
            rows.append(row)

    splits = [step_split(bench, b, max(steps_list)) for b in split_batches]
    for sp in splits:
        print(f"bench.engine: one step at batch {sp['batch']}: " + "; ".join(
            f"{k} {sp[k]['forward_ms']:.2f} ms forward + {sp[k]['host_ms']:.2f} ms host"
            for k in ("project", "project_fp32", "peer")), flush=True)
    profile = profile_project(bench, args.profile_batch, max(steps_list)) if args.profile_batch else None
    params = sum(p.numel() for p in bench.ref_gen.model.parameters())
    result = {
        "benchmark": "engine",
        "environment": environment(device),
        "settings": {
            "model": bench.ref, "parameters": params, "image_shape": list(bench.shape), "sampler": "ddim", "eta": 0.0,
            "steps": steps_list, "guidance": "cfg", "guidance_scale": args.guidance_scale,
            "class_label": args.class_label, "batch_sizes": batches, "loops": loops, "warmup": args.warmup,
            "min_seconds": args.min_seconds, "max_runs": args.max_runs, "timing": "interleaved",
            "max_batch_images": bench.engine.max_batch_images, "clip_x0": bench.gen.clip_x0,
            "accel": bench.engine.accel and on_cuda, "cpu_backend": None if on_cuda else bench.cpu_backend,
            "engine_warm_up_s": bench.engine.warm_up_seconds,
            "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
            "project": "worker.engine.BatchEngine built and warmed up as worker/__main__.py does (WORKER_ACCEL: "
                       "on CUDA bf16 autocast, channels_last, CUDA graphs per bucket; on the CPU the model run by "
                       "ONNX Runtime, fp32, WORKER_CPU_BACKEND); one job of B images added, step() until it "
                       "finishes; timed from add to the images on the host",
            "project_fp32": "the same engine with WORKER_ACCEL off: the models as they are, eager fp32",
            "peer": "diffusers DDIMScheduler (trailing, set_alpha_to_one, clip_sample = the card's clip_x0), one "
                    "forward on cat([x, x]) with labels cat([y, null]) per step, eager fp32, x_0 copied to the host",
            "seed": "the seed notebook's p_sample_loop (extract on the CPU per lookup, every step kept) respaced to "
                    "the same trailing timesteps, CFG, eager fp32; DDPM, so not compared for correctness",
        },
        "flops": {"per_row": per_row, "per_image": {str(st): per_row * 2 * st for st in steps_list},
                  "note": "torch.utils.flop_counter.FlopCounterMode on one forward; per image = per row x 2 (CFG) x "
                          "steps; useful FLOPs, the same for every loop"},
        "ceiling": ceiling,
        "correctness": correctness,
        "results": rows,
        "step_split": splits,
        "profile": profile,
    }
    write_result("engine", result, args.out, args.md, render.engine)
    return 0 if correctness["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
