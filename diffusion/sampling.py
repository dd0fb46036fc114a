"""The one driver loop that advances a batch of images in flight (`diffusion.sampler_state`).

A `SamplerState` holds a batch of images in flight. Each image carries its own request (class,
guidance, sampler, steps, eta, seed) and its own place in its own timestep subsequence. One call
of `advance` makes one model evaluation for every image, then lets each image's sampler update it.
The worker batches requests by concatenating states and dropping finished images between calls;
`sample` runs one batch to the end. An image may also start from an input image (img2img) and keep
part of it (inpainting): see `diffusion.conditioning`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from diffusion.conditioning import (
    keep_known,
    renoise,
)
from diffusion.guidance import Conditioning, GuidancePlan, GuidedDenoiser
from diffusion.noise import stacked_randn
from diffusion.sampler_state import (
    SAMPLERS,
    MovingSet,
    SamplerState,
    SampleSpec,
    device_ints,
    specs_for_request,
)
from diffusion.sampler_state import as_column as _col
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

__all__ = ["SAMPLER_STEPS", "SampleSpec", "SamplerState", "advance", "clip_eps", "device_ints", "sample",
           "specs_for_request"]


def clip_eps(x: Tensor, eps: Tensor, ab: Tensor) -> Tensor:
    """eps re-derived from x_0 clipped to [-1, 1] (ADM's clip_denoised; diffusers' DDIM with
    clip_sample and use_clipped_model_output), so that every sampler sees a consistent pair."""
    x0 = predict_x0(x, eps, ab).clamp(-1, 1)
    return (x - ab.sqrt() * x0) / (1 - ab).sqrt()


@dataclass
class _Step:
    """One call of `advance`: the images that move, the model's prediction for them, and the new
    values the samplers write. Tensors here have one row per moving image (position k in `rows`)."""

    state: SamplerState
    moving: MovingSet  # the moving images (rows, sampler groups, ...)
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

if tuple(SAMPLER_STEPS) != SAMPLERS:
    raise RuntimeError("SAMPLER_STEPS must follow SAMPLERS' order: SpecTable codes samplers by that order")
_HEUN = SAMPLERS.index("heun")


def _indices(state: SamplerState, moving: MovingSet) -> dict[str, np.ndarray]:
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
