"""Per-sample sampler state and the one driver loop that advances it.

A `SamplerState` holds a batch of images in flight. Each image carries its own request (class,
guidance, sampler, steps, eta, seed) and its own place in its own timestep subsequence. One call
of `advance` makes one model evaluation for every image, then lets each image's sampler update it.
The worker batches requests by concatenating states and dropping finished images between calls;
`sample` runs one batch to the end. An image may also start from an input image (img2img) and keep
part of it (inpainting): see `diffusion.conditioning`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffusion.conditioning import (
    MAX_RESAMPLE_STEPS,
    image_inputs,
    inpaint_noise,
    keep_known,
    noised_start,
    renoise,
)
from diffusion.guidance import GUIDANCE_KINDS, Conditioning, GuidancePlan, GuidedDenoiser
from diffusion.noise import MAX_SEED, ImageNoise, stacked_randn
from diffusion.samplers import (
    ddim_step,
    ddpm_step,
    dpmpp_2m_step,
    euler_step,
    heun_corrector,
    heun_predictor,
    predict_x0,
)
from diffusion.schedules import CLEAN, NoiseSchedule
from diffusion.spec_table import SpecTable


@dataclass(frozen=True)
class SampleSpec:
    """What one image asks for."""

    class_label: int | None  # 0..K-1, or None for unconditional
    guidance_scale: float = 1.0  # s >= 0 (CFG: 0 unconditional, 1 conditional; classifier: gradient scale)
    guidance: str = "cfg"  # "cfg" or "classifier"
    sampler: str = "ddim"  # a key of SAMPLER_STEPS
    steps: int = 50  # 1..T
    eta: float = 0.0  # DDIM stochasticity, 0..1; only for "ddim"
    seed: int = 0  # this image's own seed
    strength: float = 1.0  # img2img: share of the steps run from the noised input, 0..1; 1 ignores the input
    resample_steps: int = 1  # inpainting: RePaint's U, times each step is taken (1 = no resampling), 1..10

    def check(self, num_classes: int, num_train_steps: int) -> None:
        """Raise ValueError naming the field if this spec cannot be sampled."""
        if self.class_label is not None and not 0 <= self.class_label < num_classes:
            raise ValueError(f"class_label must be in 0..{num_classes - 1} or None, got {self.class_label}")
        if self.sampler not in SAMPLER_STEPS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLER_STEPS)}, got {self.sampler!r}")
        if self.guidance not in GUIDANCE_KINDS:
            raise ValueError(f"guidance must be one of {', '.join(GUIDANCE_KINDS)}, got {self.guidance!r}")
        if self.guidance == "classifier" and self.class_label is None:
            raise ValueError("guidance 'classifier' needs a class_label")
        if not 1 <= self.steps <= num_train_steps:
            raise ValueError(f"steps must be in 1..{num_train_steps}, got {self.steps}")
        if not self.guidance_scale >= 0:
            raise ValueError(f"guidance_scale must be >= 0, got {self.guidance_scale}")
        if not 0 <= self.eta <= 1:
            raise ValueError(f"eta must be in 0..1, got {self.eta}")
        if self.eta != 0 and self.sampler != "ddim":
            raise ValueError(f"eta is only for sampler 'ddim', got eta={self.eta} with {self.sampler!r}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be in 0..{MAX_SEED}, got {self.seed}")
        if not 0 <= self.strength <= 1:
            raise ValueError(f"strength must be in 0..1, got {self.strength}")
        if not (isinstance(self.resample_steps, int) and 1 <= self.resample_steps <= MAX_RESAMPLE_STEPS):
            raise ValueError(f"resample_steps must be an integer in 1..{MAX_RESAMPLE_STEPS}, got {self.resample_steps}")


def specs_for_request(spec: SampleSpec, num_images: int) -> list[SampleSpec]:
    """The per-image specs of a request: image i uses seed `spec.seed + i`."""
    return [replace(spec, seed=spec.seed + i) for i in range(num_images)]


@dataclass
class SamplerState:
    """A batch of images in flight. Tensor fields have one row per image; array and list fields are
    host-side, so that no decision in the loop waits on the device."""

    specs: list[SampleSpec]
    table: SpecTable  # the specs as host arrays, with each image's timestep subsequence
    index: np.ndarray  # int64: position in the subsequence: the image is at timesteps[i][index[i]]
    stage: np.ndarray  # int64: heun: 1 while the corrector's evaluation is pending
    noise: list[ImageNoise]
    x: Tensor  # [B, C, H, W] where the model evaluates next (x_t in the VP parametrization)
    x_start: Tensor  # heun: x at the start of the step under way
    memo: Tensor  # heun: the predictor's derivative; dpmpp_2m: the previous step's x0 prediction
    class_label: Tensor  # [B] long, null class for unconditional
    guidance_scale: Tensor  # [B] float
    classifier: Tensor  # [B] bool
    eta: Tensor  # [B] float
    init: Tensor  # [B, C, H, W] the input image of img2img and inpainting; zeros where there is none
    regenerate: Tensor  # [B, C, H, W] bool: inpainting's mask, True where regenerated; all True if none
    inpaint: np.ndarray  # bool: the image has a mask: its kept region is put back after every step
    repeat: np.ndarray  # int64: inpainting: times the step under way has been resampled (0..resample_steps-1)
    inpaint_noise: list[ImageNoise | None]  # inpainting: the kept region's and the jumps' own stream
    x0: Tensor  # [B, C, H, W] the latest estimate of the clean image (previews); the input until the first step
    track_x0: np.ndarray  # bool: keep x0 up to date for this image (a step in which no moving image needs it skips it)
    # what stays the same from step to step while the same images move; not carried by select or concat
    _moving: _Moving | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def start(
        cls, specs: list[SampleSpec], shape: tuple[int, int, int], num_classes: int,
        schedule: NoiseSchedule, device: torch.device | str = "cpu", *,
        init_images: list[Tensor | None] | None = None, masks: list[Tensor | None] | None = None,
        track_x0: bool = True,
    ) -> SamplerState:
        """Fresh images at pure noise x_T ~ N(0, I), the first draw z of each image's own generator.

        `init_images` and `masks` hold per image an input [C, H, W] and a mask [1 or C, H, W] (1 =
        regenerate, 0 = keep), or None. An image with an input and strength < 1 starts instead at that
        input noised with the same z to the step its strength selects (SDEdit), so its noise depends
        on its seed alone; with strength 1 it starts from x_T = z exactly, as plain generation does.
        `track_x0=False` spares each step the x0 estimate that only previews read."""
        for s in specs:
            s.check(num_classes, schedule.num_train_steps)
        init, regenerate, has_mask = image_inputs(specs, shape, init_images, masks, device)
        table = SpecTable.of(specs, schedule.num_train_steps, list(SAMPLER_STEPS))
        noise = [ImageNoise(s.seed) for s in specs]
        # an image that draws noise every step draws its first steps' noise with its x_T, in one call
        z = stacked_randn(noise, shape, device, ahead=(1 + table.last * table.draws).tolist())
        # only images that skip steps are noised from their input; the rest keep x_T = z
        noised = table.last < np.array([s.steps for s in specs], dtype=np.int64)
        x = z
        if noised.any():
            first = torch.from_numpy(table.at(np.arange(len(specs)), np.zeros(len(specs), dtype=np.int64)))
            x = noised_start(z, init, _col(schedule.alpha_bar(first.to(device))), torch.from_numpy(noised).to(device))
        n = len(specs)
        return cls(
            specs=list(specs),
            table=table,
            index=np.zeros(n, dtype=np.int64),
            stage=np.zeros(n, dtype=np.int64),
            noise=noise,
            x=x,
            x_start=torch.zeros_like(x),
            memo=torch.zeros_like(x),
            class_label=torch.tensor([num_classes if s.class_label is None else s.class_label for s in specs],
                                     dtype=torch.long, device=device),
            guidance_scale=torch.tensor([s.guidance_scale for s in specs], dtype=torch.float32, device=device),
            classifier=torch.tensor([s.guidance == "classifier" for s in specs], dtype=torch.bool, device=device),
            eta=torch.tensor([s.eta for s in specs], dtype=torch.float32, device=device),
            init=init,
            regenerate=regenerate,
            inpaint=np.array(has_mask, dtype=bool),
            repeat=np.zeros(n, dtype=np.int64),
            inpaint_noise=[inpaint_noise(s.seed) if m else None for s, m in zip(specs, has_mask)],
            x0=init.clone(),
            track_x0=np.full(n, track_x0, dtype=bool),
        )

    def __len__(self) -> int:
        return len(self.specs)

    @property
    def timesteps(self) -> list[list[int]]:
        """Each image's subsequence, ending with CLEAN (built from the table on each read)."""
        return [self.table.sequence(i) for i in range(len(self))]

    @property
    def done(self) -> list[bool]:
        return (self.index == self.table.last).tolist()

    def progress(self, row: int) -> tuple[int, int]:
        """(steps finished, steps in all) for one image: the steps it runs (img2img skips some; a
        resampled inpainting step counts once)."""
        return int(self.index[row]), int(self.table.last[row])

    def select(self, rows: list[int]) -> SamplerState:
        """The images at `rows`, in that order."""
        r = np.asarray(rows, dtype=np.int64)
        idx = device_ints(self.x.device, {"rows": r})["rows"]
        rows = r.tolist()
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.init:
                v = getattr(self, f.name)
                if isinstance(v, Tensor):
                    out[f.name] = v[idx]
                elif isinstance(v, np.ndarray):
                    out[f.name] = v[r]
                elif isinstance(v, SpecTable):
                    out[f.name] = v.select(r)
                else:
                    out[f.name] = [v[i] for i in rows]
        return SamplerState(**out)

    @staticmethod
    def concat(states: list[SamplerState]) -> SamplerState:
        """One batch of all images of `states`, each keeping its own place."""
        out: dict[str, Any] = {}
        for f in fields(SamplerState):
            if f.init:
                vs = [getattr(s, f.name) for s in states]
                if isinstance(vs[0], Tensor):
                    out[f.name] = torch.cat(vs)
                elif isinstance(vs[0], np.ndarray):
                    out[f.name] = np.concatenate(vs)
                elif isinstance(vs[0], SpecTable):
                    out[f.name] = SpecTable.concat(vs)
                else:
                    out[f.name] = [v for lst in vs for v in lst]
        return SamplerState(**out)

    def moving(self) -> _Moving | None:
        """The unfinished images and what a step needs to know of them that stays the same while they
        are the same (None if every image is finished); built again only when the set changes."""
        mask = self.index < self.table.last
        if self._moving is not None and np.array_equal(self._moving.mask, mask):
            return self._moving
        self._moving = _Moving.of(self, mask) if mask.any() else None
        return self._moving


@dataclass
class _Moving:
    """The images that move in a step, their sampler groups, their guidance plan and the device indices
    made from these: the same from step to step until an image finishes or the batch changes (heun's
    stage and every place in a subsequence change each step, and are not here)."""

    mask: np.ndarray  # bool per row of the state: the image is unfinished
    rows: np.ndarray  # int64: the moving images' rows (position k in the step -> row)
    groups: dict[str, np.ndarray]  # sampler name -> positions k of its images
    drawing: dict[str, np.ndarray]  # sampler name -> rows of its images that draw noise every step
    streams: dict[str, list[ImageNoise]]  # sampler name -> the noise streams of those rows
    ix: dict[str, Tensor]  # on the device: rows, the guidance plan, group_<name>, ddim_noisy, not_ddpm
    track: bool  # some moving image keeps its x0 estimate

    @classmethod
    def of(cls, state: SamplerState, mask: np.ndarray) -> _Moving:
        rows, table = np.flatnonzero(mask), state.table
        sampler, draws = table.sampler[rows], table.draws[rows]
        groups = {name: np.flatnonzero(sampler == i) for i, name in enumerate(SAMPLER_STEPS)}
        drawing = {name: rows[g[draws[g]]] for name, g in groups.items()}
        plan = GuidancePlan.host_rows(table.unconditional[rows], table.guidance_scale[rows], table.classifier[rows])
        ix = device_ints(state.x.device, {
            "rows": rows, **plan, **{f"group_{name}": g for name, g in groups.items()},
            # positions within the ddim group of its stochastic rows
            "ddim_noisy": np.flatnonzero(draws[groups["ddim"]]),
            "not_ddpm": (sampler != _DDPM).astype(np.int64),
        })
        streams = {name: [state.noise[r] for r in d.tolist()] for name, d in drawing.items() if d.size}
        return cls(mask, rows, groups, drawing, streams, ix, bool(state.track_x0[rows].any()))


def _col(v: Tensor) -> Tensor:
    return v.view(-1, 1, 1, 1)


def clip_eps(x: Tensor, eps: Tensor, ab: Tensor) -> Tensor:
    """eps re-derived from x_0 clipped to [-1, 1] (ADM's clip_denoised; diffusers' DDIM with
    clip_sample and use_clipped_model_output), so that every sampler sees a consistent pair."""
    x0 = predict_x0(x, eps, ab).clamp(-1, 1)
    return (x - ab.sqrt() * x0) / (1 - ab).sqrt()


def device_ints(device: torch.device, lists: Mapping[str, Sequence[int] | np.ndarray]) -> dict[str, Tensor]:
    """Host lists (or arrays) of ints as long tensors on `device`, in ONE transfer that does not wait
    on the device: packed into one pinned buffer and copied asynchronously (a plain torch.tensor(...,
    device=cuda) from pageable memory synchronizes with every kernel queued before it)."""
    values = [np.asarray(v, dtype=np.int64).reshape(-1) for v in lists.values()]
    flat = torch.from_numpy(np.concatenate(values) if values else np.zeros(0, dtype=np.int64))
    if device.type == "cuda":
        flat = flat.pin_memory().to(device, non_blocking=True)
    else:
        flat = flat.to(device)
    return dict(zip(lists, flat.split([len(v) for v in values])))


@dataclass
class _Step:
    """One call of `advance`: the images that move, the model's prediction for them, and the new
    values the samplers write. Tensors here have one row per moving image (position k in `rows`)."""

    state: SamplerState
    moving: _Moving  # the moving images (rows, sampler groups, ...)
    host: dict[str, np.ndarray]  # this step's indices on the host: timesteps, heun's stages, ...
    ix: dict[str, Tensor]  # the device indices of the step: the moving set's and this step's
    x: Tensor  # where the model evaluated
    eps: Tensor  # the guided prediction, classifier-shifted and clipped as the model asks
    grad: Tensor | None  # DDPM's classifier mean shift; None without classifier guidance
    ab_s: Tensor  # alpha_bar at each image's timestep now, next and before, [B, 1, 1, 1]
    ab_t: Tensor
    ab_prev: Tensor
    start: Tensor  # the state's heun start and memo, and DDIM's eta, at the moving rows
    memo: Tensor
    eta: Tensor
    new_x: Tensor  # what the samplers write
    new_start: Tensor
    new_memo: Tensor

    def noise(self, sampler: str) -> Tensor:
        """One draw from each image's own stream, for the images of `sampler` that draw noise; each
        stream may draw as many steps ahead as its image has steps left."""
        rows = self.moving.drawing[sampler]
        ahead = self.state.table.last[rows] - self.state.index[rows]
        return stacked_randn(self.moving.streams[sampler], tuple(self.x.shape[1:]), self.x.device, ahead.tolist())


def _ddpm(s: _Step, gi: Tensor | slice) -> None:
    s.new_x[gi] = ddpm_step(s.x[gi], s.eps[gi], s.ab_s[gi], s.ab_t[gi], s.noise("ddpm"),
                            None if s.grad is None else s.grad[gi])


def _ddim(s: _Step, gi: Tensor | slice) -> None:
    # only the stochastic images (eta > 0) draw noise: eta 0 is deterministic and takes none
    z = torch.zeros_like(s.x[gi])
    if s.moving.drawing["ddim"].size:
        z[s.ix["ddim_noisy"]] = s.noise("ddim")
    s.new_x[gi] = ddim_step(s.x[gi], s.eps[gi], s.ab_s[gi], s.ab_t[gi], _col(s.eta[gi]), z)


def _euler(s: _Step, gi: Tensor | slice) -> None:
    s.new_x[gi] = euler_step(s.x[gi], s.eps[gi], s.ab_s[gi], s.ab_t[gi])


def _dpmpp_2m(s: _Step, gi: Tensor | slice) -> None:
    s.new_x[gi], s.new_memo[gi] = dpmpp_2m_step(s.x[gi], s.eps[gi], s.ab_s[gi], s.ab_t[gi], s.ab_prev[gi],
                                                s.new_memo[gi], _col(s.ix["dpmpp_first"].bool()))


def _heun(s: _Step, gi: Tensor | slice) -> None:
    # predictor rows take an Euler step (on the last step, to sigma = 0, that is the whole step);
    # corrector rows finish the step their predictor began
    if s.host["heun_pred"].size:
        pi = s.ix["heun_pred"]
        x_t, d = heun_predictor(s.x[pi], s.eps[pi], s.ab_s[pi], s.ab_t[pi])
        s.new_start[pi], s.new_memo[pi], s.new_x[pi] = s.x[pi], d, x_t
    if s.host["heun_corr"].size:
        ci = s.ix["heun_corr"]
        s.new_x[ci] = heun_corrector(s.start[ci], s.memo[ci], s.eps[ci], s.ab_s[ci], s.ab_t[ci])


SAMPLER_STEPS: dict[str, Callable[[_Step, Tensor | slice], None]] = {
    "ddpm": _ddpm,
    "ddim": _ddim,
    "dpmpp_2m": _dpmpp_2m,
    "euler": _euler,
    "heun": _heun,
}
"""Each sampler's update of its images in one `advance`, by name: the samplers this core implements.
Each writes its rows of `new_x` (and of the heun/dpmpp_2m memory) from the shared prediction; its rows
are an index tensor of positions, or slice(None) when the sampler moves every row of the step."""

_HEUN, _DDPM = list(SAMPLER_STEPS).index("heun"), list(SAMPLER_STEPS).index("ddpm")


def _indices(state: SamplerState, moving: _Moving) -> dict[str, np.ndarray]:
    """This step's own indices, decided on the host (the moving set's are in `moving.ix`)."""
    rows, groups = moving.rows, moving.groups
    index, stage = state.index[rows], state.stage[rows]
    # per position k in `rows`: the image's timestep now, next and before, and where the model evaluates
    t_cur, t_next = state.table.at(rows, index), state.table.at(rows, index + 1)
    heun, dpmpp = groups["heun"], groups["dpmpp_2m"]
    return {
        "t_cur": t_cur, "t_next": t_next, "t_prev": state.table.at(rows, np.maximum(index - 1, 0)),
        "t_eval": np.where(stage == 1, t_next, t_cur),
        "heun_pred": heun[stage[heun] == 0], "heun_corr": heun[stage[heun] == 1],
        # dpmpp_2m: a first-order step on the first step, and on every repeat of a resampled one (a
        # resampled step starts from a re-noised x_t, off the path the history x0_prev lies on; the
        # last repeat's x0 is then the history of the next step, which does start from its x_t)
        "dpmpp_first": ((index[dpmpp] == 0) | (state.repeat[rows[dpmpp]] > 0)).astype(np.int64),
    }


def _predict(state: SamplerState, ix: dict[str, Tensor], pick: Callable[[Tensor], Tensor],
             denoiser: GuidedDenoiser, schedule: NoiseSchedule) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """The one model evaluation of the moving images: (x, eps as the samplers use it, DDPM's grad,
    alpha_bar where the model evaluated)."""
    cond = Conditioning(pick(state.class_label), pick(state.guidance_scale), pick(state.classifier))
    x = pick(state.x)
    pred = denoiser(x, ix["t_eval"], cond, GuidancePlan(ix["rows_c"], ix["rows_u"], ix["both"], ix["classifier_rows"]))
    eps, grad = pred.eps, pred.grad
    ab_eval = _col(schedule.alpha_bar(ix["t_eval"]))
    if grad is not None:
        # the score shift of ADM Alg. 2 for every sampler but DDPM, which shifts its mean instead
        eps = eps - _col(ix["not_ddpm"] * (1 - ab_eval.view(-1)).sqrt()) * grad
    if denoiser.clip_x0:
        eps = clip_eps(x, eps, ab_eval)
    return x, eps, grad, ab_eval


def advance(state: SamplerState, denoiser: GuidedDenoiser, schedule: NoiseSchedule) -> None:
    """One model evaluation for every unfinished image of `state`, then each image's sampler update;
    an inpainted image then gets its kept region back, and may jump back to take the step again.

    Every decision is made on the host from the state's arrays, and every index the device needs
    goes over in one transfer (those of the moving set once, while it stays the same): the loop never
    waits on the device (until a caller reads a result)."""
    moving = state.moving()
    if moving is None:
        return
    host = _indices(state, moving)
    ix = {**moving.ix, **device_ints(state.x.device, host)}
    rows, groups = moving.rows, moving.groups
    r = ix["rows"]
    pick = (lambda v: v) if len(rows) == len(state) else (lambda v: v[r])  # noqa: E731 - no gather when every row moves
    x, eps, grad, ab_eval = _predict(state, ix, pick, denoiser, schedule)
    # the clean image this evaluation predicts (previews); an inpainted image keeps its known region
    x0 = torch.where(pick(state.regenerate), predict_x0(x, eps, ab_eval), pick(state.init)) if moving.track else None

    start, memo = pick(state.x_start), pick(state.memo)
    # only heun writes a start and only heun and dpmpp_2m a memory: the others leave them as they are
    keeps_memory = bool(groups["heun"].size or groups["dpmpp_2m"].size)
    step = _Step(state, moving, host, ix, x, eps, grad,
                 *(_col(schedule.alpha_bar(ix[name])) for name in ("t_cur", "t_next", "t_prev")),
                 start, memo, pick(state.eta), x.clone(), start.clone() if keeps_memory else start,
                 memo.clone() if keeps_memory else memo)
    for name, g in groups.items():
        if g.size:
            # a sampler that moves every row takes them all as they are: views, not gathered copies
            SAMPLER_STEPS[name](step, slice(None) if len(g) == len(rows) else ix[f"group_{name}"])
    _finish_step(state, step, x0)


def _finish_step(state: SamplerState, step: _Step, x0: Tensor | None) -> None:
    """Inpaint the complete steps, write the new values back, and move each image on (or, for
    RePaint's resampling and heun's corrector, keep it at its step)."""
    rows, t_next = step.moving.rows, step.host["t_next"]
    stage, repeat, inpaint = state.stage[rows], state.repeat[rows], state.inpaint[rows]
    to_clean = t_next == CLEAN
    # a step is complete unless heun's corrector is still to come; only then is it inpainted
    complete = ~((state.table.sampler[rows] == _HEUN) & (stage == 0) & ~to_clean)
    jump = complete & inpaint & ~to_clean & (repeat + 1 < state.table.resample_steps[rows])
    inpainted = np.flatnonzero(complete & inpaint)
    if inpainted.size:
        _inpaint_step(state, rows, inpainted, np.flatnonzero(jump), step.new_x, step.ab_s, step.ab_t, t_next)

    if len(rows) == len(state):
        state.x, state.x_start, state.memo = step.new_x, step.new_start, step.new_memo
        if x0 is not None:
            state.x0 = x0
    else:
        r = step.ix["rows"]
        state.x[r], state.x_start[r], state.memo[r] = step.new_x, step.new_start, step.new_memo
        if x0 is not None:
            state.x0[r] = x0
    # heun's predictor: the corrector comes next; RePaint's jump: back to this step's timestep, to take
    # it again; else on to the next step
    state.stage[rows] = np.where(complete, 0, 1)
    state.repeat[rows] = np.where(jump, repeat + 1, np.where(complete, 0, repeat))
    state.index[rows] += complete & ~jump


def _inpaint_step(state: SamplerState, rows: np.ndarray, inpainted: np.ndarray, jumps: np.ndarray, new_x: Tensor,
                  ab_s: Tensor, ab_t: Tensor, t_next: np.ndarray) -> None:
    """Put the kept region back into the complete steps `inpainted` (positions in `rows`, like
    `t_next`) of `new_x`, then re-noise the `jumps` among them back to the step's start (RePaint).
    Noise comes from each image's inpainting stream: the kept region's eps', then the jump's z."""
    dev, shape = new_x.device, tuple(new_x.shape[1:])
    # at t' = CLEAN the kept region is the input itself, with no noise to draw
    noisy = np.flatnonzero(t_next[inpainted] != CLEAN)
    ix = device_ints(dev, {"k": inpainted, "r": rows[inpainted], "noisy": noisy, "jumps": jumps})
    ki, ri = ix["k"], ix["r"]
    eps = torch.zeros((len(inpainted), *shape), device=dev)
    if noisy.size:
        drawing = rows[inpainted[noisy]]
        # an eps' per step to come but the last (a lower bound: resampling draws more)
        ahead = state.table.last[drawing] - state.index[drawing] - 1
        eps[ix["noisy"]] = stacked_randn([state.inpaint_noise[i] for i in drawing.tolist()], shape, dev,
                                         ahead.tolist())
    new_x[ki] = keep_known(new_x[ki], state.init[ri], state.regenerate[ri], ab_t[ki], eps)
    if jumps.size:
        ji = ix["jumps"]
        z = stacked_randn([state.inpaint_noise[i] for i in rows[jumps].tolist()], shape, dev)
        new_x[ji] = renoise(new_x[ji], ab_s[ji], ab_t[ji], z)


def sample(
    model: torch.nn.Module,
    schedule: NoiseSchedule,
    specs: list[SampleSpec],
    shape: tuple[int, int, int],
    num_classes: int,
    classifier: torch.nn.Module | None = None,
    device: torch.device | str = "cpu",
    callback: Callable[[SamplerState], None] | None = None,
    clip_x0: bool = False,
    init_images: list[Tensor | None] | None = None,
    masks: list[Tensor | None] | None = None,
) -> Tensor:
    """Run a whole batch to clean images; returns x_0 as [B, C, H, W] in `specs` order (within [-1, 1]
    only when `clip_x0`: each step's x_0 estimate is clipped to the data range). `init_images` and
    `masks` as in `SamplerState.start`: img2img and inpainting, per image."""
    denoiser = GuidedDenoiser(model, null_class=num_classes, classifier=classifier, clip_x0=clip_x0)
    state = SamplerState.start(specs, shape, num_classes, schedule, device, init_images=init_images, masks=masks)
    while not all(state.done):
        advance(state, denoiser, schedule)
        if callback is not None:
            callback(state)
    return state.x
