"""The spread in a card's quality record: the default setting measured again on other seed ranges,
the real-image draws, and a paired setting on the same seeds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evaluation.record.values import Setting, Stats, given, integer, items, mapping, number, stats_dict, text


@dataclass(frozen=True)
class Repeat:
    """One measurement of the spread's setting on one seed range."""

    seed: int | None  # its first seed
    fd: float
    accuracy: float | None
    seconds: float | None
    commit: str | None = None  # where an earlier run measured it (reused), else the spread's
    measured_at: str | None = None

    @classmethod
    def parse(cls, d: Any) -> Repeat | None:
        d = mapping(d)
        fd = number(d.get("fd"))
        if fd is None:
            return None
        return cls(integer(d.get("seed")), fd, number(d.get("accuracy")), number(d.get("sampling_seconds")),
                   text(d.get("commit")), text(d.get("measured_at")))

    def to_dict(self) -> dict[str, Any]:
        return {**given(seed=self.seed), "fd": self.fd, "accuracy": self.accuracy, "sampling_seconds": self.seconds,
                **given(commit=self.commit, measured_at=self.measured_at)}


def _repeats(v: Any) -> tuple[Repeat, ...]:
    return tuple(r for r in map(Repeat.parse, items(v)) if r is not None)


@dataclass(frozen=True)
class RealDraws:
    """The floor's own spread: FDs of as many random training images, drawn again and again."""

    n: int | None
    seeds: tuple[int, ...]
    fds: tuple[float, ...]
    fd: Stats | None

    @classmethod
    def parse(cls, d: Any) -> RealDraws | None:
        if not isinstance(d, dict):
            return None
        return cls(integer(d.get("n")), tuple(s for s in items(d.get("seeds")) if integer(s) is not None),
                   tuple(x for x in items(d.get("fds")) if number(x) is not None), Stats.parse(d.get("fd")))

    def to_dict(self) -> dict[str, Any]:
        return {**given(n=self.n), "seeds": list(self.seeds), "fds": list(self.fds), "fd": stats_dict(self.fd)}


@dataclass(frozen=True)
class Paired:
    """A second setting measured on the spread's seed ranges: the spread of a difference between rows
    that share their seeds."""

    setting: Setting | None
    repeats: tuple[Repeat, ...]
    differences: tuple[float, ...]  # its FD minus the spread setting's, repeat by repeat
    difference: Stats | None

    @classmethod
    def parse(cls, d: Any) -> Paired | None:
        if not isinstance(d, dict):
            return None
        differences = tuple(x for x in items(d.get("differences")) if number(x) is not None)
        return cls(Setting.parse(d.get("setting")), _repeats(d.get("repeats")), differences,
                   Stats.parse(d.get("difference")))

    def to_dict(self) -> dict[str, Any]:
        # as the measurement writes it: `difference` from the first repeat on (null while there is one)
        return {**given(setting=self.setting and self.setting.to_dict()),
                "repeats": [r.to_dict() for r in self.repeats], "differences": list(self.differences),
                **({"difference": stats_dict(self.difference)} if self.repeats else {})}

    @property
    def one_sign(self) -> bool:
        """Whether every difference (two or more) has the same sign."""
        d = self.differences
        return len(d) > 1 and (all(x > 0 for x in d) or all(x < 0 for x in d))


@dataclass(frozen=True)
class LeftOut:
    """What of the spread a time budget left out."""

    why: str | None
    repeats: int | None = None
    paired: int | None = None

    @classmethod
    def parse(cls, d: Any) -> LeftOut | None:
        if not isinstance(d, dict):
            return None
        return cls(text(d.get("why")), integer(d.get("repeats")), integer(d.get("paired")))

    def to_dict(self) -> dict[str, Any]:
        return given(why=self.why, repeats=self.repeats, paired=self.paired)


@dataclass(frozen=True)
class Spread:
    """The default setting measured again on other seed ranges: how far FD moves between repeats."""

    setting: Setting | None
    n: int | None  # images per repeat
    repeats_asked: int | None
    repeats: tuple[Repeat, ...]
    fd: Stats | None
    accuracy: Stats | None
    floor: RealDraws | None
    commit: str | None
    measured_at: str | None
    device: str | None
    torch: str | None
    paired: Paired | None = None
    left_out: LeftOut | None = None

    @classmethod
    def parse(cls, d: Any) -> Spread | None:
        if not isinstance(d, dict):
            return None
        return cls(Setting.parse(d.get("setting")), integer(d.get("n")), integer(d.get("repeats_asked")),
                   _repeats(d.get("repeats")), Stats.parse(d.get("fd")), Stats.parse(d.get("accuracy")),
                   RealDraws.parse(d.get("floor")), text(d.get("commit")), text(d.get("measured_at")),
                   text(d.get("device")), text(d.get("torch")), Paired.parse(d.get("paired")),
                   LeftOut.parse(d.get("left_out")))

    def to_dict(self) -> dict[str, Any]:
        # as the measurement writes it: `fd` and `accuracy` from the first repeat on
        stats = {"fd": stats_dict(self.fd), "accuracy": stats_dict(self.accuracy)} if self.repeats else {}
        return {**given(setting=self.setting and self.setting.to_dict(), n=self.n, repeats_asked=self.repeats_asked),
                "repeats": [r.to_dict() for r in self.repeats], **stats,
                **given(floor=self.floor and self.floor.to_dict(), commit=self.commit, measured_at=self.measured_at,
                         device=self.device, torch=self.torch, paired=self.paired and self.paired.to_dict(),
                         left_out=self.left_out and self.left_out.to_dict())}


