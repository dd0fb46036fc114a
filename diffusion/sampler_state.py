"""A batch of images in flight: what each image asks for (`SampleSpec`), where each one is
(`SamplerState`), and what stays the same from step to step while the same images move
(`MovingSet`). `diffusion.sampling` advances it; the worker joins and drops images between steps
with `concat` and `select`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffusion.conditioning import MAX_RESAMPLE_STEPS, image_inputs, inpaint_noise, noised_start
from diffusion.guidance import GUIDANCE_KINDS, GuidancePlan
from diffusion.noise import MAX_SEED, ImageNoise, stacked_randn
from diffusion.schedules import NoiseSchedule
from diffusion.spec_table import SpecTable

SAMPLERS = ("ddpm", "ddim", "dpmpp_2m", "euler", "heun")
"""The samplers, in the order of SpecTable's sampler codes (diffusion.sampling.SAMPLER_STEPS implements each)."""
_DDPM = SAMPLERS.index("ddpm")


@dataclass(frozen=True)
class SampleSpec:
    """What one image asks for."""

    class_label: int | None  # 0..K-1, or None for unconditional
    guidance_scale: float = 1.0  # s >= 0 (CFG: 0 unconditional, 1 conditional; classifier: gradient scale)
    guidance: str = "cfg"  # "cfg" or "classifier"
    sampler: str = "ddim"  # one of SAMPLERS
    steps: int = 50  # 1..T
    eta: float = 0.0  # DDIM stochasticity, 0..1; only for "ddim"
    seed: int = 0  # this image's own seed
    strength: float = 1.0  # img2img: share of the steps run from the noised input, 0..1; 1 ignores the input
    resample_steps: int = 1  # inpainting: RePaint's U, times each step is taken (1 = no resampling), 1..10

    def check(self, num_classes: int, num_train_steps: int) -> None:
        """Raise ValueError naming the field if this spec cannot be sampled."""
        if self.class_label is not None and not 0 <= self.class_label < num_classes:
            raise ValueError(f"class_label must be in 0..{num_classes - 1} or None, got {self.class_label}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
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
    _moving: MovingSet | None = field(default=None, init=False, repr=False, compare=False)

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
        table = SpecTable.of(specs, schedule.num_train_steps, list(SAMPLERS))
        noise = [ImageNoise(s.seed) for s in specs]
        # an image that draws noise every step draws its first steps' noise with its x_T, in one call
        z = stacked_randn(noise, shape, device, ahead=(1 + table.last * table.draws).tolist())
        # only images that skip steps are noised from their input; the rest keep x_T = z
        noised = table.last < np.array([s.steps for s in specs], dtype=np.int64)
        x = z
        if noised.any():
            first = torch.from_numpy(table.at(np.arange(len(specs)), np.zeros(len(specs), dtype=np.int64)))
            ab = as_column(schedule.alpha_bar(first.to(device)))
            x = noised_start(z, init, ab, torch.from_numpy(noised).to(device))
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

    def moving(self) -> MovingSet | None:
        """The unfinished images and what a step needs to know of them that stays the same while they
        are the same (None if every image is finished); built again only when the set changes."""
        mask = self.index < self.table.last
        if self._moving is not None and np.array_equal(self._moving.mask, mask):
            return self._moving
        self._moving = MovingSet.of(self, mask) if mask.any() else None
        return self._moving


@dataclass
class MovingSet:
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
    def of(cls, state: SamplerState, mask: np.ndarray) -> MovingSet:
        rows, table = np.flatnonzero(mask), state.table
        sampler, draws = table.sampler[rows], table.draws[rows]
        groups = {name: np.flatnonzero(sampler == i) for i, name in enumerate(SAMPLERS)}
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


def as_column(v: Tensor) -> Tensor:
    return v.view(-1, 1, 1, 1)


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
