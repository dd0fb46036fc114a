"""The quality record itself: the measured rows, the floor, the provenance, the defaults chosen, and
the figures derived from them (the floor at the tables' n, the margins, the later commits)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from evaluation.record.spread import Spread
from evaluation.record.values import Setting, given, integer, items, mapping, number, text

ROW_TABLES = ("guidance_sweep", "classifier_guidance", "steps_sweep")
"""The tables of evaluation.md whose entries are measured rows, in the order the record reads them."""

SPREAD_SDS = 2.0
"""A difference of two FDs up to this many standard deviations of a difference is within the margin."""


@dataclass(frozen=True)
class Row:
    """One measured setting of a table: its FD and accuracy (None where unconditional)."""

    sampler: str
    steps: int
    guidance: str
    guidance_scale: float
    eta: float
    fd: float
    accuracy: float | None
    n: int | None  # images scored
    seconds: float | None  # sampling time
    commit: str | None = None  # only on rows a later --fill-card added, which may be of another commit
    measured_at: str | None = None

    @classmethod
    def parse(cls, d: Any) -> Row | None:
        setting, d = Setting.parse(d), mapping(d)
        fd = number(d.get("fd"))
        if setting is None or fd is None:
            return None
        return cls(**setting.__dict__, fd=fd, accuracy=number(d.get("accuracy")), n=integer(d.get("n")),
                   seconds=number(d.get("sampling_seconds")), commit=text(d.get("commit")),
                   measured_at=text(d.get("measured_at")))

    def to_dict(self) -> dict[str, Any]:
        return {**self.setting.to_dict(), "fd": self.fd, "accuracy": self.accuracy, "n": self.n,
                "sampling_seconds": self.seconds, **given(commit=self.commit, measured_at=self.measured_at)}

    @property
    def setting(self) -> Setting:
        return Setting(self.sampler, self.steps, self.guidance, self.guidance_scale, self.eta)


def lowest(rows: tuple[Row, ...] | list[Row]) -> Row | None:
    """The row with the lowest FD (the first of equals), or None without rows."""
    return min(rows, key=lambda r: r.fd, default=None)


@dataclass(frozen=True)
class Floor:
    """FD of real training images against the test set: what a perfect generator would score."""

    fd: float | None  # with as many images as the test set (10,000)
    n: int | None
    what: str | None
    same_n_fd: float | None = None  # with as many images as the tables scored, where fewer (FD grows at small n)
    same_n: int | None = None

    @classmethod
    def parse(cls, d: Any) -> Floor | None:
        if not isinstance(d, dict):
            return None
        same = mapping(d.get("same_n"))
        floor = cls(number(d.get("fd")), integer(d.get("n")), text(d.get("what")), number(same.get("fd")),
                    integer(same.get("n")))
        return None if floor.fd is None and floor.same_n_fd is None else floor

    def to_dict(self) -> dict[str, Any]:
        same = given(fd=self.same_n_fd, n=self.same_n) if self.same_n_fd is not None else None
        return given(fd=self.fd, n=self.n, what=self.what, same_n=same)

    @property
    def at_table_n(self) -> float | None:
        """The floor at the tables' sample size: what their FDs are divided by."""
        return self.same_n_fd if self.same_n_fd is not None else self.fd


@dataclass(frozen=True)
class NotMeasured:
    """A setting a time budget left out of a table (never estimated)."""

    table: str
    sampler: str | None = None
    steps: int | None = None
    guidance: str | None = None
    guidance_scale: float | None = None
    eta: float | None = None
    why: str | None = None

    @classmethod
    def parse(cls, d: Any) -> NotMeasured | None:
        d = mapping(d)
        table = text(d.get("table"))
        if not table:
            return None
        return cls(table, text(d.get("sampler")), integer(d.get("steps")), text(d.get("guidance")),
                   number(d.get("guidance_scale")), number(d.get("eta")), text(d.get("why")))

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, **given(sampler=self.sampler, steps=self.steps, guidance=self.guidance,
                                              guidance_scale=self.guidance_scale, eta=self.eta, why=self.why)}

    @property
    def setting(self) -> Setting | None:
        """The setting to measure, or None where the entry does not say it whole."""
        return Setting.parse(self.to_dict())


@dataclass(frozen=True)
class Provenance:
    """What was measured, with what, where and when."""

    model: str | None = None
    eval_classifier: str | None = None
    per_class: int | None = None  # images generated per class and setting
    reference: str | None = None
    seed: int | None = None
    device: str | None = None
    torch: str | None = None
    commit: str | None = None
    measured_at: str | None = None
    sampling: str | None = None  # how the images were sampled
    not_measured: tuple[NotMeasured, ...] = ()

    KEYS = ("model", "eval_classifier", "per_class", "reference", "seed", "device", "torch", "commit",
            "measured_at", "sampling", "not_measured")

    @classmethod
    def parse(cls, d: dict) -> Provenance:
        ints = ("per_class", "seed")
        values = {k: (integer if k in ints else text)(d.get(k)) for k in cls.KEYS if k != "not_measured"}
        left = tuple(m for m in map(NotMeasured.parse, items(d.get("not_measured"))) if m is not None)
        return cls(**values, not_measured=left)

    def to_dict(self) -> dict[str, Any]:
        items = {k: getattr(self, k) for k in self.KEYS if k != "not_measured"}
        left = [m.to_dict() for m in self.not_measured] or None
        return given(**items, not_measured=left)


@dataclass(frozen=True)
class DefaultsChoice:
    """Sampling defaults chosen from the tables, and why (`quality.defaults_choice`)."""

    defaults: dict[str, Any]  # sampler, steps, guidance_scale, guidance: what the card's `defaults` become
    reason: str  # for people: which rows decided, with their numbers
    measured: bool  # whether the chosen combination itself is a measured row
    rule: str  # the rule, in words

    @classmethod
    def parse(cls, d: Any) -> DefaultsChoice | None:
        d = mapping(d)
        reason = text(d.get("reason"))
        if not reason or Setting.parse(d) is None:
            return None
        measured = d.get("measured", True)
        return cls({k: v for k, v in d.items() if k not in ("measured", "rule", "reason")}, reason,
                   measured if isinstance(measured, bool) else True, text(d.get("rule")) or "")

    def to_dict(self) -> dict[str, Any]:
        return {**self.defaults, "measured": self.measured, "rule": self.rule, "reason": self.reason}

    @property
    def setting(self) -> Setting:
        return Setting.parse(self.defaults)


class Margin(NamedTuple):
    """How far apart two FDs of the tables may be and still be within the spread."""

    fd: float
    paired: bool  # True: from a measured paired difference; False: the bound from independent repeats

    @property
    def kind(self) -> str:
        return "paired" if self.paired else "repeat"

    def within(self, difference: float) -> bool:
        return abs(difference) <= self.fd


# --- the record ----------------------------------------------------------------------------------------

_KNOWN = (*ROW_TABLES, "floor", "spread", "defaults_choice", *Provenance.KEYS)


def _rows(v: Any) -> tuple[Row, ...]:
    return tuple(r for r in map(Row.parse, items(v)) if r is not None)


@dataclass(frozen=True)
class QualityRecord:
    """A generator card's measured quality."""

    guidance_sweep: tuple[Row, ...] = ()
    steps_sweep: tuple[Row, ...] = ()
    classifier_guidance: tuple[Row, ...] = ()
    floor: Floor | None = None
    spread: Spread | None = None
    provenance: Provenance = Provenance()
    defaults_choice: DefaultsChoice | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # top-level keys this record does not know, kept as read

    @classmethod
    def parse(cls, quality: Any) -> QualityRecord:
        """The record of a card's `quality` (or of `python -m evaluation evaluate` results)."""
        q = mapping(quality)
        return cls(_rows(q.get("guidance_sweep")), _rows(q.get("steps_sweep")), _rows(q.get("classifier_guidance")),
                   Floor.parse(q.get("floor")), Spread.parse(q.get("spread")), Provenance.parse(q),
                   DefaultsChoice.parse(q.get("defaults_choice")), {k: v for k, v in q.items() if k not in _KNOWN})

    def to_dict(self) -> dict[str, Any]:
        tables = {k: [r.to_dict() for r in self.table(k)] for k in ROW_TABLES if self.table(k)}
        parts = given(floor=self.floor and self.floor.to_dict(), spread=self.spread and self.spread.to_dict(),
                       defaults_choice=self.defaults_choice and self.defaults_choice.to_dict())
        return {**tables, **parts, **self.provenance.to_dict(), **self.extra}

    # --- the tables

    def table(self, key: str) -> tuple[Row, ...]:
        """The rows of table `key` (one of ROW_TABLES)."""
        return getattr(self, key)

    @property
    def rows(self) -> tuple[Row, ...]:
        """Every measured row, table by table (ROW_TABLES)."""
        return tuple(r for key in ROW_TABLES for r in self.table(key))

    @property
    def conditional_guidance(self) -> tuple[Row, ...]:
        """The guidance sweep's rows with a scale above 0 (scale 0 is unconditional), by scale."""
        return tuple(sorted((r for r in self.guidance_sweep if r.guidance_scale > 0), key=lambda r: r.guidance_scale))

    @property
    def best_guidance(self) -> Row | None:
        """The conditional row of the guidance sweep with the lowest FD: the steps sweep's scale."""
        return lowest([r for r in self.guidance_sweep if r.guidance_scale > 0])

    @property
    def floor_fd(self) -> float | None:
        """The floor at the tables' sample size, or None where it was not measured."""
        return None if self.floor is None else self.floor.at_table_n

    def later_commits(self) -> list[str]:
        """The commits of rows added by `python -m evaluation evaluate --fill-card` (rows that carry their
        own commit, as it may differ from the tables'), oldest first: by the first `measured_at` of each."""
        first: dict[str, str] = {}
        for r in self.rows:
            if r.commit:
                when = r.measured_at or ""
                first[r.commit] = min(first.get(r.commit, when), when)
        return sorted(first, key=lambda c: first[c])

    def rows_of_commit(self, commit: str) -> list[Row]:
        return [r for r in self.rows if r.commit == commit]

    # --- the spread and the margins

    @property
    def spread_sd(self) -> float | None:
        """The standard deviation of FD between the spread's repeats (None without one)."""
        return None if self.spread is None or self.spread.fd is None else self.spread.fd.sd

    @property
    def spread_margin(self) -> float | None:
        """The largest difference of two FDs measured with independent seeds that is within the repeat
        spread: SPREAD_SDS standard deviations of a difference, sqrt(2) sd each."""
        sd = self.spread_sd
        return None if sd is None else SPREAD_SDS * math.sqrt(2) * sd

    @property
    def paired_sd(self) -> float | None:
        """The standard deviation of the difference between two settings measured on the same seed
        ranges (the spread's paired repeats), or None."""
        paired = self.spread and self.spread.paired
        return None if not paired or paired.difference is None else paired.difference.sd

    @property
    def table_margin(self) -> Margin | None:
        """The margin for a difference between two rows of the tables, which share their seeds: SPREAD_SDS
        sd of the measured paired difference where there is one, else the independent repeats' bound
        (which paired rows may beat); None without a spread."""
        if self.paired_sd is not None:
            return Margin(SPREAD_SDS * self.paired_sd, True)
        return None if self.spread_margin is None else Margin(self.spread_margin, False)


@dataclass(frozen=True)
class ClassifierQuality:
    """A classifier card's `quality`: its held-out accuracy (the evaluation classifier), or its
    accuracy on the test split noised to each timestep (a guidance classifier)."""

    test_accuracy: float | None = None
    test_images: int | None = None
    accuracy_by_t: tuple[tuple[str, float], ...] = ()  # (timestep, accuracy), in the card's order
    measured_on: str | None = None
    commit: str | None = None

    @classmethod
    def parse(cls, quality: Any) -> ClassifierQuality:
        q = mapping(quality)
        by_t = tuple((t, a) for t, a in mapping(q.get("test_accuracy_by_t")).items() if number(a) is not None)
        return cls(number(q.get("test_accuracy")), integer(q.get("test_images")), by_t, text(q.get("measured_on")),
                   text(q.get("commit")))
