"""A time budget for `python -m evaluation evaluate --max-minutes`: a setting is started only if its estimated
time fits in what is left, so that a run on a lent GPU ends in time with whole settings measured and
the rest listed as not measured (never estimated). Torch-free.

The estimate is the setting's cost in network rows (images x model evaluations x rows per
evaluation: two where classifier-free guidance needs both predictions) times the seconds per row of
the last measured setting of the same sampler and guidance kind. Both move the pace: a sampler's host
work per step differs (DDPM draws fresh noise for every image at every step, Heun's rows alternate
between predictor and corrector), and classifier guidance also pays for the guidance classifier's
gradient. A pair not timed yet takes the slowest pace of its guidance kind, else the slowest of all."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


def evaluations(sampler: str, steps: int) -> int:
    """Model evaluations per image of one sample (Heun: two per step but the last)."""
    return 2 * steps - 1 if sampler == "heun" else steps


def network_rows(sampler: str, steps: int, guidance: str, guidance_scale: float, images: int) -> int:
    """U-Net rows one setting costs: CFG at a scale other than 0 and 1 needs the conditional and the
    unconditional prediction of every image, the other settings one."""
    doubled = guidance == "cfg" and guidance_scale not in (0, 1)
    return images * evaluations(sampler, steps) * (2 if doubled else 1)


@dataclass
class Budget:
    """Seconds allowed from `started` (None: no limit), and the pace measured so far."""

    seconds: float | None
    started: float = field(default_factory=time.perf_counter)
    # (sampler, guidance kind) -> seconds per network row of the last setting so timed
    pace: dict[tuple[str, str], float] = field(default_factory=dict)

    def left(self) -> float | None:
        return None if self.seconds is None else self.seconds - (time.perf_counter() - self.started)

    def estimate(self, kind: tuple[str, str], rows: int) -> float | None:
        """Seconds a setting of `rows` rows should take, from the last pace of its (sampler, guidance)
        pair, else the slowest of its guidance kind, else the slowest of all; None before any setting
        was timed."""
        pace = self.pace.get(kind)
        if pace is None:
            same_guidance = [p for (_, guidance), p in self.pace.items() if guidance == kind[1]]
            pace = max(same_guidance or self.pace.values(), default=None)
        return None if pace is None else pace * rows

    def fits(self, kind: tuple[str, str], rows: int) -> tuple[bool, str]:
        """Whether to start a setting, and if not, why (for the results' `not_measured`)."""
        left = self.left()
        if left is None:
            return True, ""
        if left <= 0:
            return False, f"--max-minutes ({self.seconds / 60:g}) used up"
        estimate = self.estimate(kind, rows)
        if estimate is not None and estimate > left:
            return False, (f"would pass --max-minutes ({self.seconds / 60:g}): about {estimate:.0f} s at the "
                           f"measured pace, {left:.0f} s left")
        return True, ""

    def record(self, kind: tuple[str, str], rows: int, seconds: float) -> None:
        if rows > 0:
            self.pace[kind] = seconds / rows
