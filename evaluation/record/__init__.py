"""A generator card's `quality`, typed: the JSON that `python -m evaluation evaluate` writes (the
tables, the floor, the spread, where and how they were measured, the defaults chosen from them),
parsed once, with the figures derived from it.

This is the one place that tolerates missing or malformed entries, as cards written by hand or by
older code may hold them: a row without a finite FD, scale, sampler and step count is left out, a
field of the wrong type reads as absent. Everything after the parser reads typed fields.
`to_dict` writes the JSON back as the writers produce it (a card's `quality` round-trips), keeping
top-level keys it does not know. Torch-free.
"""

from evaluation.record.quality import (
    ROW_TABLES,
    SPREAD_SDS,
    ClassifierQuality,
    DefaultsChoice,
    Floor,
    Margin,
    NotMeasured,
    Provenance,
    QualityRecord,
    Row,
    lowest,
)
from evaluation.record.spread import LeftOut, Paired, RealDraws, Repeat, Spread
from evaluation.record.values import Setting, Stats

__all__ = ["ROW_TABLES", "SPREAD_SDS", "ClassifierQuality", "DefaultsChoice", "Floor", "LeftOut", "Margin",
           "NotMeasured", "Paired", "Provenance", "QualityRecord", "RealDraws", "Repeat", "Row", "Setting", "Spread",
           "Stats", "lowest"]
