"""Each image's request as host arrays, one entry per image of a batch in flight.

The driver loop (`diffusion.sampling`) decides every step, on the host, which images move, which
sampler and guidance each needs and where each is in its own timestep subsequence. Read from a list
of specs, that is a Python loop over the batch every step, which for thousands of images costs more
than a GPU's step; read from these arrays it is a few numpy operations. The table is built once when
images start, and follows them through `select` and `concat` as their specs do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from diffusion.conditioning import strength_timesteps
from diffusion.schedules import CLEAN

if TYPE_CHECKING:
    from diffusion.sampler_state import SampleSpec


@dataclass(frozen=True)
class SpecTable:
    """What the loop reads of each image's spec, one entry per image (row)."""

    sampler: np.ndarray  # int64: the image's sampler, as its position in the sampler table
    draws: np.ndarray  # bool: its sampler draws noise every step (DDPM; DDIM with eta > 0)
    resample_steps: np.ndarray  # int64: RePaint's U
    unconditional: np.ndarray  # bool: no class (the null class)
    guidance_scale: np.ndarray  # float64
    classifier: np.ndarray  # bool: guided by the classifier's gradient
    subsequence: np.ndarray  # int64: the image's row of `timesteps`
    last: np.ndarray  # int64: where CLEAN is in the image's subsequence (the steps it runs)
    timesteps: np.ndarray  # [U, L] int64: the distinct subsequences of the batch, padded with CLEAN

    @classmethod
    def of(cls, specs: Sequence[SampleSpec], num_train_steps: int, samplers: Sequence[str]) -> SpecTable:
        """The table of `specs` (checked); `samplers` names the samplers in the order `sampler` counts."""
        keys: dict[tuple[int, float], int] = {}
        subsequence = [keys.setdefault((s.steps, s.strength), len(keys)) for s in specs]
        sequences = [strength_timesteps(steps, strength, num_train_steps) for steps, strength in keys]
        timesteps = np.full((len(sequences), max(map(len, sequences), default=1)), CLEAN, dtype=np.int64)
        for u, seq in enumerate(sequences):
            timesteps[u, :len(seq)] = seq
        lengths = np.array([len(seq) for seq in sequences], dtype=np.int64)
        subsequence_ = np.array(subsequence, dtype=np.int64)
        order = {name: i for i, name in enumerate(samplers)}
        return cls(
            sampler=np.array([order[s.sampler] for s in specs], dtype=np.int64),
            draws=np.array([s.sampler == "ddpm" or s.eta > 0 for s in specs], dtype=bool),
            resample_steps=np.array([s.resample_steps for s in specs], dtype=np.int64),
            unconditional=np.array([s.class_label is None for s in specs], dtype=bool),
            guidance_scale=np.array([s.guidance_scale for s in specs], dtype=np.float64),
            classifier=np.array([s.guidance == "classifier" for s in specs], dtype=bool),
            subsequence=subsequence_,
            last=lengths[subsequence_] - 1 if len(specs) else np.zeros(0, dtype=np.int64),
            timesteps=timesteps,
        )

    def __len__(self) -> int:
        return len(self.sampler)

    def at(self, rows: np.ndarray, position: np.ndarray) -> np.ndarray:
        """The timestep at `position` of the subsequence of each image at `rows`."""
        return self.timesteps[self.subsequence[rows], position]

    def sequence(self, row: int) -> list[int]:
        """One image's whole subsequence, ending with CLEAN."""
        return self.timesteps[self.subsequence[row], :self.last[row] + 1].tolist()

    def select(self, rows: np.ndarray) -> SpecTable:
        """The images at `rows`, in that order; only the subsequences they use are kept."""
        used, subsequence = np.unique(self.subsequence[rows], return_inverse=True)
        return SpecTable(self.sampler[rows], self.draws[rows], self.resample_steps[rows], self.unconditional[rows],
                         self.guidance_scale[rows], self.classifier[rows], subsequence.reshape(-1).astype(np.int64),
                         self.last[rows], self.timesteps[used])

    @staticmethod
    def concat(tables: Sequence[SpecTable]) -> SpecTable:
        """One table of all images of `tables`, in order."""
        width = max(t.timesteps.shape[1] for t in tables)
        padded = [np.pad(t.timesteps, ((0, 0), (0, width - t.timesteps.shape[1])), constant_values=CLEAN)
                  for t in tables]
        offsets = np.cumsum([0] + [len(t.timesteps) for t in tables[:-1]])
        return SpecTable(*(np.concatenate([getattr(t, name) for t in tables])
                           for name in ("sampler", "draws", "resample_steps", "unconditional", "guidance_scale",
                                        "classifier")),
                         np.concatenate([t.subsequence + o for t, o in zip(tables, offsets)]),
                         np.concatenate([t.last for t in tables]), np.concatenate(padded))
