"""The models a worker holds: loaded on demand within a memory budget, evicted least recently used.

Torch only, no Redis: the worker's admission (worker.admission) asks `prepare(ref)` for the model of
the job whose turn it is, and writes the `events` this leaves (loads, evictions) to Redis itself.

- A model's size is what it takes on the device: the bytes of its parameters and buffers, its
  guidance classifier's and (for a latent model) its VAE's, all in float32, plus the engine's
  reserve for it, RESERVE_FRACTION of that (see there). It is known before loading: the networks
  are built from their cards on the meta device.
- The budget (WORKER_MODEL_BUDGET_MB) bounds the sum of the loaded models' sizes and the one being
  loaded. No budget: every model fits.
- To make room, the least recently used models with no image in flight are evicted, and only as
  many as needed. A model with images in flight is never evicted: the job waits for room instead.
- A model larger than the whole budget is refused: its jobs fail at once with a message naming
  it, its size and the budget. A model whose load failed is refused for LOAD_RETRY_S, then tried
  again.
- Loading runs on a background thread (reading, sha256, building the network, moving it to the
  device, its fast path: the export to ONNX on the CPU, and one throwaway step), so that the batches
  already running keep stepping; the loop installs the loaded model into the engine between two
  steps (`poll`). On CUDA the throwaway step and, with WORKER_ACCEL, the graph capture happen there,
  on the loop's thread: capturing while another thread launches kernels on the same device is not
  safe in torch's default capture mode.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

import torch

from model_store import ModelStore
from model_store.loading import load_generator
from worker.engine import BatchEngine, JobError
from worker.models import estimated_bytes, generator_bytes

log = logging.getLogger(__name__)

RESERVE_FRACTION = 0.25
"""The engine's reserve per model, as a fraction of its weights' bytes: its share of the working
memory that grows with it (its sampler state, activations of its forward passes, CUDA graph pools).
An estimate, so a budget should leave the device some headroom beyond it."""

LOAD_RETRY_S = 60.0
"""Seconds a model whose load failed is refused before a job may try loading it again."""

MIB = 2**20


class Readiness(str, Enum):
    """What `prepare` says about the model of the job whose turn it is."""

    READY = "ready"  # loaded: the job can join the batch
    LOADING = "loading"  # being loaded: the job waits in its queue
    NO_ROOM = "no_room"  # the budget is held by models with images in flight: the job waits
    REFUSED = "refused"  # too large for the budget, or its load failed: its jobs fail (`refusal`)


@dataclass
class PoolEvent:
    """A load started or ended, or an eviction, for the worker to log, count and advertise."""

    kind: Literal["loading", "loaded", "load_failed", "evicted"]
    ref: str
    seconds: float = 0.0  # a load's, from its start to the model serving
    bytes: int = 0  # the model's size (weights and reserve)


@dataclass
class _Load:
    ref: str
    started: float
    thread: threading.Thread | None = None
    lane: object | None = None  # the engine's lane for the model, built off the loop (BatchEngine.make_lane)
    error: BaseException | None = None


def size_with_reserve(weight_bytes: int) -> int:
    """A model's size against the budget: its weights plus the engine's reserve for it."""
    return weight_bytes + int(weight_bytes * RESERVE_FRACTION)


def mib(n: int) -> str:
    return f"{n / MIB:.1f} MiB"


@dataclass
class ModelPool:
    """The models of one worker's engine (see the module docstring). Without a store it loads nothing
    and serves what the engine was built with."""

    engine: BatchEngine
    store: ModelStore | None = None
    device: str = "cpu"
    budget_bytes: int | None = None
    events: list[PoolEvent] = field(default_factory=list)
    _sizes: dict[str, int] = field(default_factory=dict)
    _used_at: dict[str, float] = field(default_factory=dict)  # ref -> when a job last used it (LRU)
    _refused: dict[str, tuple[JobError, float]] = field(default_factory=dict)  # ref -> (why, until)
    _load: _Load | None = None

    def __post_init__(self) -> None:
        for ref in self.engine.models():  # loaded at start (no budget: every model, before the first job)
            self._sizes[ref] = size_with_reserve(generator_bytes(self.engine.generator(ref)))
            self._used_at[ref] = time.monotonic()

    # --- what the worker asks ---------------------------------------------------------------------

    def prepare(self, ref: str) -> Readiness:
        """Make `ref` ready for a job if it can be: loaded, it is marked used now; else a load starts
        when the budget has room for it or can make some by evicting idle models."""
        if self.refusal(ref) is not None:
            return Readiness.REFUSED
        if ref in self.engine.models():
            self._used_at[ref] = time.monotonic()
            return Readiness.READY
        if self._load is not None:
            return Readiness.LOADING  # one load at a time: the job whose turn it is waits for it
        if self.store is None:
            self._refuse(ref, JobError("unknown_model", f"model {ref!r} is not loaded on this worker, which loads "
                                                        f"none on demand; it serves {', '.join(self.engine.models())}"),
                         forever=True)
            return Readiness.REFUSED
        try:
            need = self.size(ref)
        except Exception as e:  # noqa: BLE001 - an unreadable card: its jobs fail, naming why
            self._refuse(ref, JobError("model_error", f"cannot size {ref}: {type(e).__name__}: {e}"))
            return Readiness.REFUSED
        if self.budget_bytes is not None and need > self.budget_bytes:
            self._refuse(ref, JobError("model_too_large", f"model {ref} needs {mib(need)} on the device "
                                                          f"({mib(self._weights(need))} of weights plus the engine's "
                                                          f"reserve), more than this worker's whole budget of "
                                                          f"{mib(self.budget_bytes)} (WORKER_MODEL_BUDGET_MB); it "
                                                          "cannot be served here"), forever=True)
            return Readiness.REFUSED
        victims = self._victims(need)
        if victims is None:
            return Readiness.NO_ROOM
        for victim in victims:
            self._evict(victim)
        self._start_load(ref, need)
        return Readiness.LOADING

    def refusal(self, ref: str) -> JobError | None:
        """Why jobs of `ref` fail at once on this worker, or None."""
        refused = self._refused.get(ref)
        if refused is None:
            return None
        if time.monotonic() >= refused[1]:
            del self._refused[ref]
            return None
        return refused[0]

    def loading(self) -> str | None:
        """The ref being loaded now, if any."""
        return None if self._load is None else self._load.ref

    def loaded_bytes(self) -> dict[str, int]:
        """The size of every loaded model, by ref."""
        return {ref: self._sizes[ref] for ref in self.engine.models()}

    def size(self, ref: str) -> int:
        """`ref`'s size against the budget (weights and reserve), known before it loads."""
        card_ref = ref if self.store is None else self.store.resolve(ref).ref
        if card_ref not in self._sizes:
            self._sizes[card_ref] = size_with_reserve(estimated_bytes(self.store, card_ref))
        return self._sizes[card_ref]

    def wait(self, seconds: float) -> None:
        """Sleep up to `seconds`, waking when the load under way ends (nothing else to do meanwhile)."""
        if self._load is not None and self._load.thread is not None:
            self._load.thread.join(seconds)
        else:
            time.sleep(seconds)

    def poll(self) -> None:
        """Install a finished load into the engine (on the loop's thread, between two steps)."""
        load = self._load
        if load is None or (load.thread is not None and load.thread.is_alive()):
            return
        self._load = None
        if load.error is not None or load.lane is None:
            error = load.error or RuntimeError("the load ended without a model")
            log.error("loading %s failed: %s: %s", load.ref, type(error).__name__, error)
            self._refuse(load.ref, JobError("model_error", f"loading {load.ref} failed: {type(error).__name__}: "
                                                           f"{error}"))
            self.events.append(PoolEvent("load_failed", load.ref, time.monotonic() - load.started))
            return
        self.engine.install(load.lane)
        if self.device == "cuda":
            self.engine.warm_up([load.ref])  # its CUDA graphs are captured here, on the loop's thread
        self._sizes[load.ref] = size_with_reserve(generator_bytes(self.engine.generator(load.ref)))
        self._used_at[load.ref] = time.monotonic()
        seconds = time.monotonic() - load.started
        self.events.append(PoolEvent("loaded", load.ref, seconds, self._sizes[load.ref]))
        log.info("loaded %s (%s with the engine's reserve) in %.2f s; holding %s of %s", load.ref,
                 mib(self._sizes[load.ref]), seconds, mib(self._used()),
                 "no limit" if self.budget_bytes is None else mib(self.budget_bytes))

    def close(self, seconds: float = 30.0) -> None:
        """Wait for a load under way to end (at exit: a daemon thread killed mid-read is harmless,
        but a clean exit is quieter)."""
        if self._load is not None and self._load.thread is not None:
            self._load.thread.join(seconds)

    # --- making room ------------------------------------------------------------------------------

    def _weights(self, size: int) -> int:
        return round(size / (1 + RESERVE_FRACTION))

    def _used(self) -> int:
        held = sum(self.loaded_bytes().values())
        return held + (self._sizes.get(self._load.ref, 0) if self._load is not None else 0)

    def _victims(self, need: int) -> list[str] | None:
        """The least recently used idle models to evict so that `need` bytes fit (none if they fit
        already), or None if even evicting every idle one would not make room."""
        if self.budget_bytes is None:
            return []
        free = self.budget_bytes - self._used()
        busy = self.engine.images_by_model()
        idle = sorted((ref for ref in self.engine.models() if ref not in busy), key=lambda r: self._used_at.get(r, 0))
        victims = []
        while free < need and idle:
            ref = idle.pop(0)
            victims.append(ref)
            free += self._sizes[ref]
        return victims if free >= need else None

    def _evict(self, ref: str) -> None:
        self.engine.remove_model(ref)
        self._used_at.pop(ref, None)
        if self.device == "cuda":
            torch.cuda.empty_cache()  # hand the freed blocks back, for the next model's load
        self.events.append(PoolEvent("evicted", ref, bytes=self._sizes[ref]))
        log.info("evicted %s (%s, least recently used, no image in flight)", ref, mib(self._sizes[ref]))

    def _refuse(self, ref: str, error: JobError, forever: bool = False) -> None:
        self._refused[ref] = (error, float("inf") if forever else time.monotonic() + LOAD_RETRY_S)
        log.warning("refusing the jobs of %s: %s", ref, error.message)

    # --- loading off the loop -------------------------------------------------------------------

    def _start_load(self, ref: str, need: int) -> None:
        load = _Load(ref, time.monotonic())
        load.thread = threading.Thread(target=self._run_load, args=(load,), name=f"load {ref}", daemon=True)
        self._load = load
        self.events.append(PoolEvent("loading", ref, bytes=need))
        log.info("loading %s (%s) on a background thread", ref, mib(need))
        load.thread.start()

    def _run_load(self, load: _Load) -> None:
        """The background thread: read, verify, build, move to the device, the device's fast path
        (on the CPU the export to ONNX), one throwaway step."""
        try:
            # float32 everywhere, as worker.models.load_generators loads at start
            gen = load_generator(self.store, load.ref, device=self.device, dtype=torch.float32)
            lane = self.engine.make_lane(gen)
            if self.device != "cuda":
                # the first job must not pay for lazy initialisation: a throwaway step in an engine of
                # its own (on CUDA it comes with the graph capture, on the loop's thread)
                scratch = BatchEngine({}, max_batch_images=1)
                scratch.install(lane)
                scratch.warm_up()
            load.lane = lane
        except BaseException as e:  # noqa: BLE001 - reported by poll() on the loop's thread
            load.error = e

