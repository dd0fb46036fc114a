"""The eps-model as the worker runs it on the CPU: exported to ONNX once, run by ONNX Runtime.

A small pixel-space U-Net on a CPU spends its time in two places: the convolutions (oneDNN runs them
close to the matmul ceiling) and the memory-bound layers between them (GroupNorm, SiLU, the
scale-shift, concatenations), one eager kernel each, plus about a hundred Python dispatches per
forward pass. ONNX Runtime's CPU execution provider runs the same graph with the convolutions in a
blocked layout fused with their activations, the elementwise layers fused, and no Python between
them: measured on the 2-core development machine, its forward pass took 4.7 ms against eager's 10.8 at
batch 1 (2.3x) and 253 ms against 353 for 128 rows (1.4x), in fp32, and the samples stay within 1e-5
of eager (docs/benchmarks/engine-cpu.md, 2026-12-05).

The export is traced at load time (about a second for the shipped model) and cached on disk, keyed by
what the exported graph depends on: the module (its card's architecture, prediction type, schedule
and weights' sha256) and the torch version that traced it. The file holds no CPU-specific code:
ONNX Runtime specializes the graph for the CPU it runs on when it opens the session (milliseconds),
so the same cached file serves every CPU. Before it is used, the exported model is checked against
the eager one on a probe batch; any failure (onnxruntime missing, an operator the exporter cannot
trace, a mismatch) leaves the model eager, with one log line that says why.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

CPU_BACKENDS = ("onnxruntime", "eager")
"""How the worker runs its eps-models on the CPU: ONNX Runtime (the default), or torch as they are."""

OPSET = 17
"""The ONNX opset of the export (torch's TorchScript exporter; ONNX Runtime 1.17 and later run it)."""

EXPORT_FORMAT = 1
"""Bumped when the export changes in a way the cache key would not see (inputs, axes, opset)."""

PROBE_TOLERANCE = 1e-4
"""Most max abs difference, relative to max(1, |eps|), allowed between the exported and the eager model
on the probe batch: a forward pass agrees to about 1e-6 in fp32, so this catches a wrong graph, not
rounding."""


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/imagegen/onnx, else ~/.cache/imagegen/onnx."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "imagegen" / "onnx"


@dataclass(frozen=True)
class CpuAccelConfig:
    """How the worker runs its models on the CPU (ignored on CUDA)."""

    backend: str = "onnxruntime"  # one of CPU_BACKENDS
    threads: int = 0  # ONNX Runtime's intra-op threads; 0: as many as torch uses (torch.get_num_threads())
    # let idle pool threads spin between operators: faster when the worker has its cores to itself,
    # but it burns CPU that a process sharing the cores (the API beside `imagegen up`) could use
    spinning: bool = True
    cache_dir: Path | None = None  # where exports are kept; None: default_cache_dir(); unwritable: in memory

    def __post_init__(self) -> None:
        if self.backend not in CPU_BACKENDS:
            raise ValueError(f"CPU backend must be one of {', '.join(CPU_BACKENDS)}, got {self.backend!r}")
        if self.threads < 0:
            raise ValueError(f"CPU threads must be >= 0, got {self.threads}")


class OrtModel(nn.Module):
    """`model(x, t, y) -> eps` through an ONNX Runtime session: the eps-model contract, on CPU tensors."""

    def __init__(self, session: Any, source: str) -> None:
        super().__init__()
        self.session = session
        self.source = source  # where the graph came from: the cache file, or "memory"
        # the exporter drops an input the network never reads (an unconditional model's y): feed only
        # those the graph has
        self.inputs = {i.name for i in session.get_inputs()}

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        # zero-copy in (numpy views of contiguous CPU tensors) and out (torch over ONNX Runtime's array)
        feeds = {"x": x.detach().contiguous(), "t": t.detach().to(torch.long).contiguous(),
                 "y": y.detach().to(torch.long).contiguous()}
        out = self.session.run(None, {name: v.numpy() for name, v in feeds.items() if name in self.inputs})
        return torch.from_numpy(out[0])


def export_key(card: Any) -> str:
    """The cache key of a card's export: what the traced graph depends on, hashed."""
    what = {"weights_sha256": card.sha256, "architecture": card.architecture, "schedule": card.schedule,
            "prediction_type": card.prediction_type, "torch": torch.__version__, "opset": OPSET,
            "format": EXPORT_FORMAT}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _probe(shape: tuple[int, int, int], null_class: int, rows: int = 3) -> tuple[Tensor, Tensor, Tensor]:
    """A small fixed batch: noise images at spread timesteps, conditional and unconditional labels."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn((rows, *shape), generator=g)
    t = torch.linspace(0, 999, rows).long()
    y = torch.tensor([i % max(null_class, 1) for i in range(rows - 1)] + [null_class], dtype=torch.long)
    return x, t, y


def _export(model: nn.Module, probe: tuple[Tensor, Tensor, Tensor], target: io.BytesIO | Path) -> None:
    """Trace `model` to ONNX with a dynamic batch axis (the engine's batches change every step)."""
    batch = {0: "batch"}
    # torch 2.9+ warns that the TorchScript exporter is deprecated; it needs onnx but not onnxscript,
    # and it traces this U-Net in about a second (the dynamo exporter: about ten)
    kwargs: dict[str, Any] = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, probe, target, input_names=["x", "t", "y"], output_names=["eps"],
                          dynamic_axes={"x": batch, "t": batch, "y": batch, "eps": batch}, opset_version=OPSET,
                          **kwargs)


def _graph(model: nn.Module, probe: tuple[Tensor, Tensor, Tensor], key: str,
           cache_dir: Path) -> tuple[bytes | str, str]:
    """The exported graph: (a path or the bytes, where it came from). Read from the cache, else
    traced and written there (atomically, so that two workers starting together never read half a
    file), else traced into memory when the cache cannot be written."""
    path = cache_dir / f"{key}.onnx"
    if path.is_file():
        return str(path), str(path)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        _export(model, probe, tmp)
        os.replace(tmp, path)
        return str(path), str(path)
    except OSError as e:
        log.info("ONNX export cache %s is not writable (%s); exporting in memory", cache_dir, e)
    finally:
        with contextlib.suppress(OSError):  # a cache path under a file cannot even be looked at
            tmp.unlink(missing_ok=True)
    buffer = io.BytesIO()
    _export(model, probe, buffer)
    return buffer.getvalue(), "memory"


def _session(graph: bytes | str, config: CpuAccelConfig) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = config.threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if config.spinning else "0")
    options.log_severity_level = 3  # errors only: its warnings about the graph are not the user's business
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def onnx_model(model: nn.Module, card: Any, sample_shape: tuple[int, int, int], null_class: int,
               config: CpuAccelConfig) -> nn.Module:
    """`model` run by ONNX Runtime (an `OrtModel`), or `model` itself, with one log line, if that
    fails or disagrees with it on the probe batch."""
    if config.backend != "onnxruntime":
        return model
    started = time.perf_counter()
    probe = _probe(sample_shape, null_class)
    try:
        graph, source = _graph(model, probe, export_key(card), config.cache_dir or default_cache_dir())
        fast = OrtModel(_session(graph, config), source)
        with torch.no_grad():
            want, got = model(*probe).float(), fast(*probe).float()
        error = ((got - want).abs() / want.abs().clamp(min=1)).max().item()
        if not error <= PROBE_TOLERANCE:
            raise ValueError(f"the exported model differs from the eager one by {error:.2e} on a probe batch "
                             f"(allowed: {PROBE_TOLERANCE:g})")
    except Exception as e:  # noqa: BLE001 - whatever fails (import, trace, session, check), eager still works
        log.warning("%s: ONNX Runtime unavailable (%s: %s); running the model eagerly in torch", card.ref,
                    type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        return model
    log.info("%s: running on ONNX Runtime (graph from %s, ready in %.2f s, probe error %.1e)", card.ref, source,
             time.perf_counter() - started, error)
    return fast
