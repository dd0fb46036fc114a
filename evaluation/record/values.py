"""The leaves of the quality record: JSON values read leniently (a value of the wrong type reads as
None, an absent list or dict as an empty one), a sampling setting, and the statistics of repeated
measurements."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def number(v: Any) -> float | None:
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def integer(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def text(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def mapping(v: Any) -> dict:
    return v if isinstance(v, dict) else {}


def items(v: Any) -> list:
    return v if isinstance(v, list) else []


def given(**values: Any) -> dict[str, Any]:
    """The values that are not None (optional JSON keys are left out, not written as null)."""
    return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class Setting:
    """How images were sampled: a row's setting, the spread's, a left-out one's."""

    sampler: str
    steps: int
    guidance: str = "cfg"
    guidance_scale: float = 1.0
    eta: float = 0.0

    @classmethod
    def parse(cls, d: Any) -> Setting | None:
        d = mapping(d)
        sampler, steps, scale = text(d.get("sampler")), integer(d.get("steps")), number(d.get("guidance_scale"))
        eta = number(d.get("eta"))
        if sampler is None or steps is None or scale is None:
            return None
        return cls(sampler, steps, text(d.get("guidance")) or "cfg", scale, 0.0 if eta is None else eta)

    def to_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler, "steps": self.steps, "guidance": self.guidance,
                "guidance_scale": self.guidance_scale, "eta": self.eta}

    def label(self) -> str:
        return f"{self.sampler} {self.steps} steps, {self.guidance} scale {self.guidance_scale:g}"


@dataclass(frozen=True)
class Stats:
    """Mean, sample standard deviation, min and max of repeated measurements."""

    mean: float
    sd: float
    min: float
    max: float

    @classmethod
    def parse(cls, d: Any) -> Stats | None:
        values = [number(mapping(d).get(k)) for k in ("mean", "sd", "min", "max")]
        return None if None in values else cls(*values)

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "sd": self.sd, "min": self.min, "max": self.max}


def stats_dict(stats: Stats | None) -> dict[str, float] | None:
    return None if stats is None else stats.to_dict()
