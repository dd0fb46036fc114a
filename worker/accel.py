"""The eps-model as the worker runs it on a GPU: bf16 autocast, channels_last, and one CUDA graph per
batch-size bucket, captured at worker start.

A small pixel-space U-Net at the batch sizes a service sees spends most of its time launching
kernels from Python. A CUDA graph replays a whole forward pass with one launch; since a graph has
fixed shapes, a batch is padded up to the nearest captured size (a bucket). Every layer of the U-Net
works per image (convolutions, GroupNorm, attention within an image), so the padding rows change
nothing in the real ones; they are sliced off. Autocast runs the convolutions and matmuls in bf16
and keeps what needs it (normalizations, softmax) in fp32; the sampler's update arithmetic is
outside this module and stays fp32.

On the CPU this wrapper calls the model as it is; the CPU's own fast path is ONNX Runtime
(`worker.cpu_accel`, configured by `AccelConfig.cpu`). With `WORKER_ACCEL` off the engine runs the
models as they are, in fp32 eager torch, on either device: the reference the fast paths are checked
against.
"""

from __future__ import annotations

import bisect
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from worker.cpu_accel import CpuAccelConfig
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)


def default_buckets(max_rows: int) -> tuple[int, ...]:
    """Powers of two up to the first one >= `max_rows` (the most rows one forward pass can get)."""
    sizes, b = [], 1
    while True:
        sizes.append(b)
        if b >= max_rows:
            return tuple(sizes)
        b *= 2


@dataclass(frozen=True)
class AccelConfig:
    """How the worker runs its models on CUDA (ignored on the CPU)."""

    bf16: bool = True  # autocast the forward pass to bf16 (fp32 where autocast keeps it)
    channels_last: bool = True  # NHWC weights and inputs: the layout tensor-core convolutions want
    cuda_graphs: bool = True  # capture one graph per bucket at start, replay it per step
    max_rows: int = 128  # the largest forward pass to capture (CFG doubles a batch of images)
    # the batch sizes to capture, where the caller knows them (the evaluation does: its batches take
    # 2 to 4 sizes); empty: every power of two up to max_rows, for a service's any-size batches
    sizes: tuple[int, ...] = ()
    cpu: CpuAccelConfig = CpuAccelConfig()  # on the CPU: ONNX Runtime, or eager (worker.cpu_accel)

    def __post_init__(self) -> None:
        if any(int(n) != n or n < 1 for n in self.sizes):
            raise ValueError(f"AccelConfig.sizes must be positive integers, got {self.sizes}")

    @property
    def buckets(self) -> tuple[int, ...]:
        """The batch sizes to capture, ascending."""
        return tuple(sorted(set(self.sizes))) if self.sizes else default_buckets(self.max_rows)


OFF = AccelConfig(bf16=False, channels_last=False, cuda_graphs=False, cpu=CpuAccelConfig(backend="eager"))
"""The model as it is, in fp32: the reference the fast path is checked against."""


def accel_from_settings(settings: WorkerSettings | None = None) -> AccelConfig | None:
    """The engine's fast paths as the worker's environment sets them (WORKER_ACCEL, WORKER_CPU_BACKEND,
    WORKER_CPU_THREADS, WORKER_CACHE_DIR); None with WORKER_ACCEL off: every model eager fp32."""
    s = settings or WorkerSettings()
    if not s.worker_accel:
        return None
    cache = Path(s.worker_cache_dir) if s.worker_cache_dir else None
    return AccelConfig(cpu=CpuAccelConfig(backend=s.worker_cpu_backend, threads=s.worker_cpu_threads,
                                          cache_dir=cache))


class _Graph:
    """One captured forward pass at a fixed batch size, with its static input and output buffers."""

    def __init__(self, graph: torch.cuda.CUDAGraph, x: Tensor, t: Tensor, y: Tensor, out: Tensor) -> None:
        self.graph, self.x, self.t, self.y, self.out = graph, x, t, y, out


class Accelerated(nn.Module):
    """`model(x, t, y)` with the same contract, faster on CUDA; returns fp32 eps."""

    def __init__(self, model: nn.Module, config: AccelConfig = AccelConfig()) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.device = next(model.parameters()).device
        self.on_cuda = self.device.type == "cuda"
        self._graphs: dict[int, _Graph] = {}
        if self.on_cuda and config.channels_last:
            model.to(memory_format=torch.channels_last)

    @property
    def buckets(self) -> tuple[int, ...]:
        """The batch sizes with a captured graph, ascending."""
        return tuple(sorted(self._graphs))

    def _eager(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        if not self.on_cuda:
            return self.model(x, t, y)
        if self.config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # no autocast weight cache: a graph captured with one would replay casts of stale weights
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.config.bf16, cache_enabled=False):
            return self.model(x, t, y)

    def capture(self, shape: tuple[int, int, int], num_classes: int) -> float:
        """Capture a graph for every bucket (images of `shape`, labels 0..num_classes); returns the
        seconds it took. A no-op on the CPU or with cuda_graphs off.

        The graphs share one memory pool, captured largest first: a forward pass's intermediates are
        dead once it returns (only each graph's static output stays alive), and the graphs replay one
        at a time on one stream, so every smaller graph reuses the largest one's blocks instead of
        holding a pool of its own."""
        if self.model.training:
            # dropout and friends would be recorded as they run in training, and replayed so forever
            raise ValueError("Accelerated.capture needs the model in eval mode (call model.eval() first)")
        if not (self.on_cuda and self.config.cuda_graphs):
            return 0.0
        started = time.perf_counter()
        pool = torch.cuda.graph_pool_handle()
        for size in sorted(self.config.buckets, reverse=True):
            x = torch.zeros((size, *shape), device=self.device)
            if self.config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            t = torch.zeros(size, dtype=torch.long, device=self.device)
            y = torch.full((size,), num_classes, dtype=torch.long, device=self.device)
            # warm-up on a side stream (cuDNN picks its algorithms, the allocator fills), as the
            # CUDA graphs guide asks before a capture
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side), torch.no_grad():
                for _ in range(2):
                    self._eager(x, t, y)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.no_grad(), torch.cuda.graph(graph, pool=pool):
                out = self._eager(x, t, y)
            self._graphs[size] = _Graph(graph, x, t, y, out)
        torch.cuda.synchronize(self.device)
        return time.perf_counter() - started

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        n = x.shape[0]
        sizes = self.buckets
        k = bisect.bisect_left(sizes, n)
        if k == len(sizes) or torch.is_grad_enabled():
            # larger than every bucket (an oversized job running alone), or under autograd: eager
            return self._eager(x, t, y).float()
        g = self._graphs[sizes[k]]
        # the padding rows keep whatever the buffers held: finite inputs of an earlier pass
        g.x[:n].copy_(x)
        g.t[:n].copy_(t)
        g.y[:n].copy_(y)
        g.graph.replay()
        # a copy: the next replay overwrites the static output
        return g.out[:n].float() if g.out.dtype != torch.float32 else g.out[:n].clone()

