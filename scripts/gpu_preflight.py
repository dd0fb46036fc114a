"""The GPU pipeline's preflight (scripts/gpu_models.sh, issue #22): in about half a minute, run on the
device what the next ten minutes depend on, so that a broken path fails before any training and the
pipeline can size its budgets from what this GPU really does. One process, one CUDA start.

Checks, each timed, each written into --out (JSON) whatever happens to the others:
  graphs      the --preset U-Net through the worker's accelerated wrapper at the forward sizes the
              evaluation will use: capture time, the graph pool's memory, a padded replay and the
              largest one against eager fp32 (required)
  layout      the largest replay with and without channels_last
  engine      one engine step at --engine-images images for DDIM, DDPM and classifier guidance, split
              into host time (until step() returns) and the step's wall time (required)
  compile     torch.compile of one residual block, forward and backward under bf16: whether it works,
              its compile time, and whether compiling the generator should pay off in --train-minutes
  evaluation  `python -m evaluation evaluate` of the store's generator, 2 images per class, in this
              process: the evaluation classifier, the engine on the store's model (required)
  renderer    the model-card renderer's imports (required)

Exit status 0 when every required check passed, else 1. `compile.use` says whether the generator's
training should compile (the pipeline passes --no-compile when it is false).

Run: PYTHONPATH=. python scripts/gpu_preflight.py --device cuda --store model_store/models --out pf.json
On the CPU (the smoke) the graphs, layout and compile checks are skipped: they are CUDA paths."""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device, repeats: int = 5) -> float:
    """Median milliseconds of `fn` over `repeats` runs, after one untimed run."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(1000 * (time.perf_counter() - t0))
    return round(statistics.median(times), 3)


def random_unet(preset: str, device: torch.device) -> nn.Module:
    """The preset's U-Net in eval mode, with its zero-initialized output layers drawn at random too, so
    that a comparison of two forward passes compares more than zeros."""
    from diffusion.unet import UNET_PRESETS, UNet

    torch.manual_seed(0)
    model = UNet(UNET_PRESETS[preset])
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.02)
    return model.to(device).eval()


def check_graphs(model: nn.Module, sizes: tuple[int, ...], device: torch.device) -> dict:
    """Capture the sizes, then replay a padded batch and the largest one against eager fp32."""
    from worker.accel import AccelConfig, Accelerated

    cfg = model.cfg
    shape, classes = (cfg.in_channels, cfg.image_size, cfg.image_size), cfg.num_classes
    torch.cuda.reset_peak_memory_stats(device)
    reserved = torch.cuda.memory_reserved(device)
    fast = Accelerated(model, AccelConfig(sizes=sizes))
    seconds = fast.capture(shape, classes)
    out = {"sizes": list(fast.buckets), "capture_s": round(seconds, 2),
           "pool_mib": round((torch.cuda.memory_reserved(device) - reserved) / 2**20, 1),
           "peak_allocated_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)}
    g = torch.Generator(device="cpu").manual_seed(1)
    errors = {}
    for n in (max(1, sizes[0] - 3), max(sizes)):  # padded into the smallest graph; the largest, full
        x = torch.randn((n, *shape), generator=g).to(device)
        t = torch.randint(0, 1000, (n,), generator=g).to(device)
        y = torch.randint(0, classes + 1, (n,), generator=g).to(device)
        with torch.no_grad():
            got = fast(x, t, y)
            ref = model(x.contiguous(), t, y).float()  # fp32, no autocast, as the model is
        errors[n] = round(((got - ref).abs().mean() / ref.abs().mean()).item(), 5)
    out["relative_error_vs_fp32"] = errors
    # bf16 against fp32: close, not equal (the worker's CUDA test holds the same bound)
    out["ok"] = all(e < 0.02 for e in errors.values())
    model.to(memory_format=torch.contiguous_format)
    return out


def _inputs(n: int, shape: tuple[int, ...], classes: int, device: torch.device):
    return (torch.zeros((n, *shape), device=device), torch.zeros(n, dtype=torch.long, device=device),
            torch.full((n,), classes, dtype=torch.long, device=device))


def check_layout(model: nn.Module, size: int, device: torch.device) -> dict:
    """The largest graph replayed with and without channels_last (GroupNorm on CUDA returns NCHW, so
    channels_last may pay a layout copy around each norm)."""
    from worker.accel import AccelConfig, Accelerated

    cfg = model.cfg
    shape, classes = (cfg.in_channels, cfg.image_size, cfg.image_size), cfg.num_classes
    out = {}
    for name, channels_last in (("channels_last", True), ("contiguous", False)):
        fast = Accelerated(model, AccelConfig(sizes=(size,), channels_last=channels_last))
        fast.capture(shape, classes)
        out[f"{name}_ms"] = _timed(lambda f=fast: f(*_inputs(size, shape, classes, device)), device)
        del fast
        model.to(memory_format=torch.contiguous_format)
        torch.cuda.empty_cache()
    out["rows"] = size
    out["ok"] = True
    return out


def check_engine(store_root: str, preset: str, images: int, device: torch.device) -> dict:
    """One engine step at `images` images (DDIM, DDPM, classifier guidance), on the preset's U-Net with
    the store's generator card and guidance classifier: the host's share and the step's wall time."""
    from model_store import ModelStore
    from model_store.loading import load_generator
    from worker.accel import AccelConfig
    from worker.engine import BatchEngine

    gen = load_generator(ModelStore(store_root), "fashion-mnist", device=str(device))
    net = random_unet(preset, device) if gen.image_shape == (1, 28, 28) else gen.model
    gen = replace(gen, model=net)
    out: dict = {"images": images, "preset": preset}
    kinds = {"ddim": {"sampler": "ddim", "guidance": "cfg", "guidance_scale": 3.0},
             "ddpm": {"sampler": "ddpm", "guidance": "cfg", "guidance_scale": 3.0},
             "classifier": {"sampler": "ddim", "guidance": "classifier", "guidance_scale": 2.0}}
    accel = AccelConfig(sizes=(images, 2 * images)) if device.type == "cuda" else None
    engine = BatchEngine({gen.card.ref: gen}, max_batch_images=images, accel=accel)
    engine.warm_up()
    # the images spread over the classes as evenly as they go, one job per class that gets any
    classes = gen.num_classes
    counts = [images // classes + (c < images % classes) for c in range(classes)]
    for name, kind in kinds.items():
        if kind["guidance"] == "classifier" and gen.classifier is None:
            out[name] = {"skipped": "the store's generator links no guidance classifier"}
            continue
        jobs = [(f"{name}-{c}", c, n) for c, n in enumerate(counts) if n]
        for job, c, n in jobs:
            engine.add(job, gen.card.ref, {"class_label": c, "num_images": n, "steps": 50, "eta": 0.0,
                                           "seed": 1000 * c, **kind})
        t0 = time.perf_counter()
        engine.step()  # the first: the jobs join (SamplerState.start) and take their first step
        _sync(device)
        first = time.perf_counter() - t0
        host, wall = [], []
        for _ in range(3):
            t0 = time.perf_counter()
            engine.step()
            host.append(time.perf_counter() - t0)
            _sync(device)
            wall.append(time.perf_counter() - t0)
        engine.cancel([job for job, _, _ in jobs])
        engine.step()  # the cancelled jobs leave
        out[name] = {"join_and_first_step_ms": round(1000 * first, 1),
                     "host_ms": round(1000 * min(host), 1), "step_ms": round(1000 * min(wall), 1)}
    out["ok"] = not engine.jobs()
    return out


def check_compile(model: nn.Module, device: torch.device, train_minutes: float, batch: int = 512) -> dict:
    """torch.compile of the network's widest residual block, forward and backward under bf16 autocast,
    against the same block eager; and the rule the pipeline follows: compile the generator only if this
    works and the time it saves in `train_minutes` exceeds what compiling costs, taken as this block's
    compile time times the number of blocks (an overestimate: part of the compile time is fixed, but a
    compile that overruns eats training time, while eager's cost is known)."""
    from diffusion.layers import ResBlock, SelfAttention

    blocks = [m for m in model.modules() if isinstance(m, ResBlock | SelfAttention)]
    res = [m for m in model.modules() if isinstance(m, ResBlock)]
    captured: dict = {}
    block = max(res, key=lambda m: m.conv1.weight.numel())
    hook = block.register_forward_pre_hook(lambda mod, args: captured.setdefault("args", args))
    cfg = model.cfg
    with torch.no_grad():
        model(*_inputs(2, (cfg.in_channels, cfg.image_size, cfg.image_size), cfg.num_classes, device))
    hook.remove()
    x0, emb0 = captured["args"]
    x = x0[:1].expand(batch, *x0.shape[1:]).contiguous().requires_grad_(True)
    emb = emb0[:1].expand(batch, *emb0.shape[1:]).contiguous()
    eager = copy.deepcopy(block).train()
    compiled = torch.compile(copy.deepcopy(block).train())

    def step(fn: nn.Module) -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = fn(x, emb).float().square().mean()
        loss.backward()

    t0 = time.perf_counter()
    step(compiled)
    _sync(device)
    compile_s = time.perf_counter() - t0
    eager_ms, compiled_ms = _timed(lambda: step(eager), device), _timed(lambda: step(compiled), device)
    saving = 60 * train_minutes * max(0.0, 1 - compiled_ms / eager_ms)
    cost = compile_s * len(blocks)
    return {"block": f"ResBlock {tuple(x.shape)}", "compile_s": round(compile_s, 2), "eager_ms": eager_ms,
            "compiled_ms": compiled_ms, "blocks": len(blocks), "estimated_saving_s": round(saving, 1),
            "estimated_cost_s": round(cost, 1), "use": saving > cost, "ok": True}


def check_evaluation(store_root: str, device: torch.device, work: Path) -> dict:
    """The evaluation command as the pipeline runs it, at 2 images per class and 2 steps."""
    from evaluation.__main__ import run

    out = work / "preflight-evaluate.json"
    code = run(["evaluate", "--store", store_root, "--per-class", "2", "--steps", "2", "--batch-size", "20",
                "--device", device.type, "--out", str(out)])
    return {"exit": code, "ok": code == 0 and '"fd"' in out.read_text()}


def check_renderer() -> dict:
    import matplotlib  # noqa: F401

    import evaluation.model_card  # noqa: F401

    return {"ok": True}


REQUIRED = ("graphs", "engine", "evaluation", "renderer")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--store", default="model_store/models")
    p.add_argument("--preset", default="fmnist", help="U-Net preset the pipeline trains")
    p.add_argument("--images", type=int, default=10_000, help="images per setting the evaluation samples")
    p.add_argument("--batch", type=int, default=2048, help="the evaluation's --batch-size")
    p.add_argument("--engine-images", type=int, default=2048, help="images in the engine step check")
    p.add_argument("--train-minutes", type=float, default=3.5, help="the generator's training budget")
    p.add_argument("--skip", nargs="*", default=[], help="checks to leave out")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    from evaluation.sampling import forward_sizes

    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    results: dict = {"device": torch.cuda.get_device_name(device) if on_cuda else "cpu",
                     "torch": torch.__version__, "preset": args.preset}
    started = time.perf_counter()
    model = random_unet(args.preset, device)
    sizes = forward_sizes(args.images, args.batch)
    checks: dict[str, Callable[[], dict]] = {
        "renderer": check_renderer,
        "graphs": lambda: check_graphs(model, sizes, device),
        "layout": lambda: check_layout(model, max(sizes), device),
        "engine": lambda: check_engine(args.store, args.preset, args.engine_images, device),
        "evaluation": lambda: check_evaluation(args.store, device, Path(tempfile.mkdtemp())),
        "compile": lambda: check_compile(model, device, args.train_minutes),
    }
    for name, check in checks.items():
        if name in args.skip or (not on_cuda and name in ("graphs", "layout", "compile")):
            results[name] = {"skipped": "asked" if name in args.skip else "a CUDA path", "ok": True}
            continue
        t0 = time.perf_counter()
        try:
            results[name] = check()
        except Exception as exc:  # noqa: BLE001 - every check is reported, whatever the others raise
            traceback.print_exc()
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
        results[name]["seconds"] = round(time.perf_counter() - t0, 2)
        print(f"preflight {name}: {json.dumps(results[name])}", flush=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    compile_result = results["compile"]
    results["compile"]["use"] = bool(on_cuda and compile_result.get("ok") and compile_result.get("use"))
    results["seconds"] = round(time.perf_counter() - started, 2)
    failed = [n for n in REQUIRED if not results[n].get("ok")]
    results["ok"] = not failed
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"preflight: {'ok' if not failed else 'FAILED: ' + ', '.join(failed)} in {results['seconds']} s; "
          f"compile the generator: {'yes' if results['compile']['use'] else 'no'}", flush=True)
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
