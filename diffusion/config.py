"""What every architecture config shares: plain-dict round trips for model cards."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, TypeVar

C = TypeVar("C", bound="ArchConfig")


class ArchConfig:
    """Mixin for frozen config dataclasses: `to_dict`/`from_dict`, and JSON lists read back as tuples so
    that a config loaded from a card equals (and hashes like) the one built in code."""

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        return cls(**d)
