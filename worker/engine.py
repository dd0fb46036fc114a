"""Continuous batching over loaded generators: the torch side of the worker, with no Redis in it.

Every job's images live in one `SamplerState` per model. One `step()` makes ONE model evaluation over
all of a model's images, whatever step, schedule, sampler, class, guidance scale and seed each is at;
between two steps finished jobs leave (`select`) and new jobs join (`concat`). Because every image
draws noise from its own seeded generator, an image comes out the same whatever shares its batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from contract.request import GenerateSettings
from diffusion.guidance import GuidedDenoiser
from diffusion.images import from_png, mask_from_png
from diffusion.sampling import SamplerState, SampleSpec, advance, device_ints, specs_for_request
from model_store.loading import Generator
from worker.accel import AccelConfig, Accelerated
from worker.cpu_accel import onnx_model

log = logging.getLogger(__name__)

PREVIEWS_PER_JOB = 10
"""About how many previews a job with `previews` gets: one every max(1, total // this) steps."""


class UnknownModel(ValueError):
    """The job names a model this engine has not loaded."""


@dataclass(frozen=True)
class JobError:
    """Why a job failed: a short machine code and a message for people."""

    code: str  # "invalid_request", "unknown_model", "model_error", "model_too_large", "timeout", "internal_error"
    message: str


class JobFailed(Exception):
    """How a failed job ends in RQ: the FailedJobRegistry then shows its code and message."""

    def __init__(self, error: JobError) -> None:
        super().__init__(f"{error.code}: {error.message}")
        self.error = error


@dataclass
class StepReport:
    """What one `step()` did."""

    progress: dict[str, tuple[int, int]] = field(default_factory=dict)  # job -> (step, total), slowest image
    # job -> its images x_0 [n, C, H, W] on the CPU (a latent model's decoded by its VAE), in model space
    # where [-1, 1] is the pixel range; not
    # clipped (like `sample`), so that tests can compare values a clip would hide; PNG encoding clips
    finished: dict[str, Tensor] = field(default_factory=dict)
    failed: dict[str, JobError] = field(default_factory=dict)  # job -> why; it has left the engine
    # job -> the current clean-image estimate x_0 of its images [n, C, H, W] on the CPU, for the jobs
    # that asked for previews and reached their next preview step (never on the step they finish)
    previews: dict[str, Tensor] = field(default_factory=dict)
    batch_images: list[int] = field(default_factory=list)  # images in each model evaluation made
    # wall time of the step on the host (on CUDA it waits for the device only when its queue is full)
    seconds: float = 0.0


@dataclass(eq=False)  # hashed by identity: one lane may sit under several keys
class _Lane:
    """One loaded model and the images in flight on it."""

    ref: str
    generator: Generator
    denoiser: GuidedDenoiser
    device: torch.device
    state: SamplerState | None = None
    owners: list[str] = field(default_factory=list)  # job id of each row of `state`
    pending: list[tuple[str, SamplerState]] = field(default_factory=list)  # joins at the next step


@dataclass
class _Job:
    lane: _Lane
    num_images: int
    total: int  # sampler steps
    evaluations_per_step: int  # heun: 2
    preview_every: int = 0  # steps between two previews; 0 = no previews
    step: int = 0


def decode_inputs(inputs: dict[str, bytes], channels: int) -> tuple[Tensor | None, Tensor | None]:
    """The init image [C, H, W] in [-1, 1] and the mask [1, H, W] (1 = regenerate) of a job's
    normalized input PNGs (see contract.image_inputs), each None when absent."""
    init = from_png(inputs["init_image"], channels) if inputs.get("init_image") is not None else None
    mask = mask_from_png(inputs["mask"]) if inputs.get("mask") is not None else None
    return init, mask


def _rows(state: SamplerState, rows: list[int]) -> Tensor:
    return device_ints(state.x.device, {"rows": rows})["rows"]


def _device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def _fast(gen: Generator, accel: AccelConfig, max_batch_images: int) -> torch.nn.Module:
    """The generator's eps-model on its device's fast path."""
    if _device_of(gen.model).type == "cuda":
        # CFG doubles a batch: the largest forward pass is twice the images in flight
        return Accelerated(gen.model, replace(accel, max_rows=2 * max_batch_images))
    return onnx_model(gen.model, gen.card, gen.sample_shape, gen.null_class, accel.cpu)


class BatchEngine:
    """Jobs in flight on a set of loaded generators, advanced together one model evaluation at a time."""

    def __init__(self, generators: dict[str, Generator], max_batch_images: int = 64,
                 accel: AccelConfig | None = None) -> None:
        """`accel`: the fast path of each model's device: on CUDA bf16, channels_last and CUDA graphs
        (worker.accel), on the CPU ONNX Runtime (worker.cpu_accel); None runs them as they are, fp32."""
        if max_batch_images < 1:
            raise ValueError(f"max_batch_images must be at least 1, got {max_batch_images}")
        self.max_batch_images = max_batch_images
        self._accel = accel
        self._lanes: dict[str, _Lane] = {}
        self._by_name: dict[str, _Lane] = {}
        self._jobs: dict[str, _Job] = {}
        for key, gen in generators.items():
            self.add_model(gen, key)

    # --- lanes: models joining and leaving (worker.pool loads and evicts them between steps) -----

    def add_model(self, gen: Generator, key: str | None = None) -> None:
        """Serve `gen` from the next step on, under its ref (and `key`, another name for it); a ref
        already served keeps its lane, so that its jobs share one batch."""
        self.install(self._lanes.get(gen.card.ref) or self.make_lane(gen), key)

    def make_lane(self, gen: Generator) -> _Lane:
        """A lane for `gen` on its device's fast path (the export to ONNX on the CPU can take seconds),
        not yet served. It touches nothing of the engine's, so a background load may build it."""
        model = _fast(gen, self._accel, self.max_batch_images) if self._accel is not None else gen.model
        denoiser = GuidedDenoiser(model, null_class=gen.null_class, classifier=gen.classifier, clip_x0=gen.clip_x0)
        return _Lane(gen.card.ref, gen, denoiser, _device_of(gen.model))

    def install(self, lane: _Lane, key: str | None = None) -> None:
        """Serve a lane made by `make_lane` from the next step on (between two steps)."""
        self._lanes.setdefault(lane.ref, lane)
        if key is not None:
            self._lanes.setdefault(key, lane)
        self._index_names()

    def remove_model(self, model_ref: str) -> Generator:
        """Stop serving a model that has no job in flight (an eviction); returns its generator."""
        lane = self._lane_for(model_ref)
        if any(job.lane is lane for job in self._jobs.values()):
            raise ValueError(f"{lane.ref} has jobs in flight; it cannot be removed")
        for key in [k for k, other in self._lanes.items() if other is lane]:
            del self._lanes[key]
        self._index_names()
        return lane.generator

    def generator(self, model_ref: str) -> Generator:
        """The loaded generator `model_ref` names."""
        return self._lane_for(model_ref).generator

    def _index_names(self) -> None:
        # a bare name means the newest version loaded, as it means the newest in the store
        self._by_name = {}
        for lane in self._lanes.values():
            newest = self._by_name.get(lane.generator.card.name)
            if newest is None or newest.generator.card.version < lane.generator.card.version:
                self._by_name[lane.generator.card.name] = lane

    def images_by_model(self) -> dict[str, int]:
        """Images in flight (joined or about to join) per model ref, for the models that have any."""
        images: dict[str, int] = {}
        for job in self._jobs.values():
            images[job.lane.ref] = images.get(job.lane.ref, 0) + job.num_images
        return images

    def warm_up(self, refs: list[str] | None = None) -> None:
        """Capture the CUDA graphs of accelerated models, then one throwaway step per model (CFG and,
        where there is one, classifier guidance), so that the first job does not pay for lazy
        initialisation (allocator, kernels, autotuning). `refs`: those models only (one just loaded)."""
        for lane in dict.fromkeys(self._lanes.values()):
            if refs is not None and lane.ref not in refs:
                continue
            gen = lane.generator
            model = lane.denoiser.model
            if isinstance(model, Accelerated) and not model.buckets:
                seconds = model.capture(gen.sample_shape, gen.num_classes)
                if seconds:
                    log.info("%s: captured CUDA graphs for batches of %s rows in %.1f s", lane.ref,
                             ", ".join(map(str, model.buckets)), seconds)
            specs = [SampleSpec(class_label=0, guidance_scale=2.0, steps=1)]
            if gen.classifier is not None:
                specs.append(SampleSpec(class_label=0, guidance="classifier", steps=1))
            state = SamplerState.start(specs, gen.sample_shape, gen.num_classes, gen.schedule, lane.device)
            advance(state, lane.denoiser, gen.schedule)
            if lane.device.type == "cuda":
                torch.cuda.synchronize(lane.device)

    # --- admission -----------------------------------------------------------------------------

    def networks(self) -> list[torch.nn.Module]:
        """The eps-model each loaded generator runs, as the engine calls it (its device's fast path,
        or the network itself)."""
        return list({id(lane.denoiser.model): lane.denoiser.model for lane in self._lanes.values()}.values())

    def wrap_networks(self, wrap: Callable[[torch.nn.Module], torch.nn.Module]) -> list[torch.nn.Module]:
        """Replace each network the engine calls by `wrap(network)` (instrumentation: bench.engine times
        the forward pass apart from the rest of a step); returns the new ones."""
        wrapped: dict[int, torch.nn.Module] = {}
        for lane in self._lanes.values():
            model = lane.denoiser.model
            lane.denoiser.model = wrapped.setdefault(id(model), wrap(model))
        return list(wrapped.values())

    def models(self) -> list[str]:
        """Refs ("name@version") of the loaded generators."""
        return sorted({lane.ref for lane in self._lanes.values()})

    def _lane_for(self, model_ref: str) -> _Lane:
        lane = self._lanes.get(model_ref) or self._by_name.get(model_ref)
        if lane is None:
            raise UnknownModel(f"model {model_ref!r} is not loaded on this worker; it serves: "
                               f"{', '.join(self.models()) or 'nothing'}")
        return lane

    def add(self, job_id: str, model_ref: str, request: GenerateSettings | Mapping[str, Any],
            inputs: dict[str, bytes] | None = None) -> None:
        """Queue a job to join the batch at the next step; ValueError if this engine cannot run it.

        `request` is the normalized request: the contract's settings, or a job record's `request`
        (read with `GenerateSettings.from_record`). `inputs` holds the normalized PNGs of img2img and
        inpainting by request field (`init_image`, `mask`), the same for every image of the job."""
        if job_id in self._jobs:
            raise ValueError(f"job {job_id} is already running")
        lane = self._lane_for(model_ref)
        settings = request if isinstance(request, GenerateSettings) else GenerateSettings.from_record(request)
        spec, num_images = SampleSpec(**settings.sampled()), settings.num_images
        gen = lane.generator
        if spec.guidance == "classifier" and gen.classifier is None:
            raise ValueError(f"guidance 'classifier' needs a guidance classifier, and {lane.ref} has none "
                             "(its card links no guidance_classifier); use guidance 'cfg'")
        init, mask = decode_inputs(inputs or {}, gen.image_shape[0])
        if init is not None:  # a latent model starts from the VAE's encoding of the input
            init = gen.encode(init.unsqueeze(0).to(lane.device))[0]
        # checks every field (class range, steps, eta, seed + i, the inputs' shapes) and draws each x_T
        state = SamplerState.start(specs_for_request(spec, num_images), gen.sample_shape, gen.num_classes,
                                   gen.schedule, lane.device, init_images=[init] * num_images,
                                   masks=[mask] * num_images, track_x0=settings.previews)
        lane.pending.append((job_id, state))
        total = state.progress(0)[1]
        every = max(1, total // PREVIEWS_PER_JOB) if settings.previews else 0
        self._jobs[job_id] = _Job(lane, num_images, total, 2 if spec.sampler == "heun" else 1, every)

    def capacity(self) -> int:
        """Images that can still join without passing max_batch_images (negative if an oversized job runs)."""
        return self.max_batch_images - sum(j.num_images for j in self._jobs.values())

    def jobs(self) -> list[str]:
        """Ids of the jobs in flight, joined or about to join."""
        return list(self._jobs)

    def progress(self, job_id: str) -> tuple[int, int]:
        """(sampler steps done by the job's slowest image, steps in all)."""
        job = self._jobs[job_id]
        return job.step, job.total

    def remaining_evaluations(self, job_id: str) -> int:
        """Model evaluations the job still needs (an upper bound: heun skips its last corrector)."""
        job = self._jobs[job_id]
        return (job.total - job.step) * job.evaluations_per_step

    def cancel(self, job_ids: list[str]) -> list[str]:
        """Take jobs out of the batch now (cancel, timeout, hand-back); returns those that were in it."""
        gone = set(job_ids) & set(self._jobs)
        if not gone:
            return []
        for lane in self._lanes.values():
            lane.pending = [(j, s) for j, s in lane.pending if j not in gone]
            if lane.state is not None and gone & set(lane.owners):
                self._keep(lane, [r for r, j in enumerate(lane.owners) if j not in gone])
        for j in gone:
            del self._jobs[j]
        return [j for j in job_ids if j in gone]

    # --- stepping ------------------------------------------------------------------------------

    def step(self) -> StepReport:
        """One model evaluation per model with work; then finished and failed jobs leave."""
        started = time.perf_counter()
        report = StepReport()
        for lane in dict.fromkeys(self._lanes.values()):
            self._join(lane)
            if lane.state is None:
                continue
            self._advance(lane, report)
            self._harvest(lane, report)
        # no synchronize here: the host queues the next steps while the device works. On CUDA the
        # seconds are the host's, which wait for the device whenever its queue is full (and when a
        # finished job's images are copied back), so over many steps they add up to the device's time
        report.seconds = time.perf_counter() - started
        return report

    def _join(self, lane: _Lane) -> None:
        if not lane.pending:
            return
        states = ([lane.state] if lane.state is not None else []) + [s for _, s in lane.pending]
        owners = lane.owners + [j for j, s in lane.pending for _ in range(len(s))]
        lane.state, lane.owners, lane.pending = SamplerState.concat(states), owners, []

    def _rows_by_job(self, lane: _Lane) -> dict[str, list[int]]:
        rows: dict[str, list[int]] = {}
        for r, j in enumerate(lane.owners):
            rows.setdefault(j, []).append(r)
        return rows

    def _keep(self, lane: _Lane, rows: list[int]) -> None:
        if rows:
            lane.state, lane.owners = lane.state.select(rows), [lane.owners[r] for r in rows]
        else:
            lane.state, lane.owners = None, []

    def _advance(self, lane: _Lane, report: StepReport) -> None:
        state, schedule = lane.state, lane.generator.schedule
        # images that join already finished (img2img with strength 0) take no model evaluation
        evaluated = state.done.count(False)
        try:
            advance(state, lane.denoiser, schedule)
            if evaluated:
                report.batch_images.append(evaluated)
            return
        except Exception as e:  # noqa: BLE001 - any model error: find the job that causes it
            # `advance` calls the model before it draws any noise or changes the state, so each job
            # can redo this step on its own and still draw its own noise (the failing-job test checks
            # this with DDPM batch-mates)
            log.warning("a step of %d images on %s failed (%s: %s); retrying it job by job",
                        len(state), lane.ref, type(e).__name__, e)
        parts: list[tuple[str, SamplerState]] = []
        for job_id, rows in self._rows_by_job(lane).items():
            sub = state.select(rows)
            evaluated = sub.done.count(False)
            try:
                advance(sub, lane.denoiser, schedule)
            except Exception as e:  # noqa: BLE001
                job = self._jobs.pop(job_id)
                report.failed[job_id] = JobError(
                    "model_error", f"sampling failed at step {job.step + 1} of {job.total} on {lane.ref}: "
                                   f"{type(e).__name__}: {e}")
                continue
            if evaluated:
                report.batch_images.append(evaluated)
            parts.append((job_id, sub))
        lane.state = SamplerState.concat([s for _, s in parts]) if parts else None
        lane.owners = [j for j, s in parts for _ in range(len(s))]

    def _harvest(self, lane: _Lane, report: StepReport) -> None:
        if lane.state is None:
            return
        state, done, keep = lane.state, lane.state.done, []
        for job_id, rows in self._rows_by_job(lane).items():
            job = self._jobs[job_id]
            step = min(state.progress(r)[0] for r in rows)
            moved, job.step = step != job.step, step
            report.progress[job_id] = (job.step, job.total)
            # the only copies to the host: a finished job's images, once, and the previews asked for
            if all(done[r] for r in rows):
                report.finished[job_id] = lane.generator.decode(state.x[_rows(state, rows)]).cpu()
                del self._jobs[job_id]
            else:
                keep.extend(rows)
                if job.preview_every and moved and job.step % job.preview_every == 0:
                    report.previews[job_id] = lane.generator.decode(state.x0[_rows(state, rows)]).cpu()
        if len(keep) < len(state):
            self._keep(lane, keep)
