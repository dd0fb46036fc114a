"""Sampling for `python -m evaluation evaluate` through the worker's engine, so that the figures are those of the
images the service serves, at the speed the worker reaches.

On CUDA the engine runs the U-Net in bf16 with channels_last and replays one CUDA graph per batch
size (worker.accel); the sampler arithmetic stays fp32. On the CPU the engine calls the network as
it is, so its images equal `diffusion.sampling.sample`'s bit for bit (the tests check this).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace

import torch

from diffusion.sampling import SampleSpec
from model_store.loading import Generator

SampleBatch = Callable[[list[SampleSpec]], torch.Tensor]
"""Specs in, images [B, C, H, W] (in spec order, not clipped) out."""


def requests(specs: list[SampleSpec]) -> list[tuple[dict, int]]:
    """The specs as engine requests: each run of consecutive specs that differ only by a seed one
    higher than the previous becomes one request (image i of a request uses seed + i), with the
    number of specs it covers."""
    out: list[tuple[dict, int]] = []
    first: SampleSpec | None = None
    n = 0
    for spec in specs:
        if first is not None and spec == replace(first, seed=first.seed + n):
            n += 1
            continue
        if first is not None:
            out.append((_request(first, n), n))
        first, n = spec, 1
    if first is not None:
        out.append((_request(first, n), n))
    return out


def _request(spec: SampleSpec, num_images: int) -> dict:
    if spec.strength != 1 or spec.resample_steps != 1:
        raise ValueError("evaluation samples from noise: strength 1 and resample_steps 1 only")
    return {"class_label": spec.class_label, "guidance_scale": spec.guidance_scale, "guidance": spec.guidance,
            "sampler": spec.sampler, "steps": spec.steps, "eta": spec.eta, "seed": spec.seed,
            "num_images": num_images}


def forward_sizes(images: int, batch_images: int) -> tuple[int, ...]:
    """The row counts of the forward passes that sampling `images` images per setting in batches of
    `batch_images` makes: each batch once (one prediction per image: CFG at scale 0 or 1, classifier
    guidance) or twice (CFG at any other scale), the full batches and the last, shorter one. The
    evaluation's settings all finish a batch together, so no other count occurs."""
    if images < 1 or batch_images < 1:
        raise ValueError(f"images and batch_images must be >= 1, got {images} and {batch_images}")
    batches = {min(images, batch_images)} | ({images % batch_images} if images > batch_images else set())
    return tuple(sorted({m * b for b in batches if b for m in (1, 2)}))


def engine_sampler(gen: Generator, batch_images: int, accel: bool = True,
                   images_per_setting: int | None = None) -> tuple[SampleBatch, str]:
    """A batch sampler running on a `worker.engine.BatchEngine` of `gen` alone, and a line saying how
    it samples (for the results). `batch_images`: the most images a batch will hold. On CUDA the
    engine captures a graph for each forward size that `images_per_setting` images make
    (`forward_sizes`), or without it every power of two up to twice `batch_images` rows."""
    from worker.accel import AccelConfig
    from worker.cpu_accel import CpuAccelConfig
    from worker.engine import BatchEngine

    on_cuda = next(gen.model.parameters()).device.type == "cuda"
    # on the CPU the network stays eager torch (not the worker's ONNX Runtime default, within 1e-5 of
    # it): the card's CPU tables were measured so, and a rerun reproduces them bit for bit
    cpu_eager = AccelConfig(cpu=CpuAccelConfig(backend="eager"),
                            sizes=forward_sizes(images_per_setting, batch_images) if images_per_setting else ())
    engine = BatchEngine({gen.card.ref: gen}, max_batch_images=batch_images, accel=cpu_eager if accel else None)
    if on_cuda:
        engine.warm_up()
    ids = itertools.count()

    def sample_batch(specs: list[SampleSpec]) -> torch.Tensor:
        jobs = []
        for request, _ in requests(specs):
            job = f"eval-{next(ids)}"
            engine.add(job, gen.card.ref, request)
            jobs.append(job)
        finished: dict[str, torch.Tensor] = {}
        while len(finished) < len(jobs):
            report = engine.step()
            if report.failed:
                job, error = next(iter(report.failed.items()))
                raise RuntimeError(f"sampling failed ({job}): {error.message}")
            finished.update(report.finished)
        return torch.cat([finished[j] for j in jobs])

    if on_cuda and accel:
        how = "worker engine: bf16 autocast, channels_last, CUDA graphs (worker.accel)"
    else:
        how = f"worker engine: fp32 on {'cuda' if on_cuda else 'the cpu'}"
    return sample_batch, f"{how}; batches of up to {batch_images} images"
