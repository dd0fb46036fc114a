"""`imagegen models`: what the store holds, as a table for people or JSON for scripts.

Reads cards only, so it runs without torch.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from model_store import ModelCard, ModelStore

COLUMNS = ("MODEL", "KIND", "CLASSES", "IMAGE", "DEFAULTS", "CREATED")
"""Table header, one column per field of `_row`."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `imagegen models`."""
    p.add_argument("--store", metavar="DIR", default=None,
                   help="model store root (default: $MODEL_STORE, else the package's models/ directory)")
    p.add_argument("--json", action="store_true",
                   help="print a JSON list (one object per model version) instead of a table")


def describe(card: ModelCard) -> dict[str, Any]:
    """The listing entry of one model version: what a caller needs to pick and call it."""
    return {
        "ref": card.ref, "name": card.name, "version": card.version, "kind": card.kind,
        "num_classes": card.num_classes, "class_names": card.class_names,
        "image_size": card.image_size, "channels": card.channels, "dtype": card.dtype,
        "backbone": card.backbone, "space": card.space, "null_class": card.null_class,
        "defaults": card.defaults, "links": card.links, "created_at": card.created_at,
    }


def _row(card: ModelCard) -> tuple[str, ...]:
    defaults = " ".join(f"{k}={v}" for k, v in card.defaults.items()) or "-"
    size = f"{card.image_size}x{card.image_size}x{card.channels}"
    return (card.ref, card.kind, str(card.num_classes), size, defaults, card.created_at)


def format_table(cards: list[ModelCard]) -> str:
    """Aligned columns, one line per model version."""
    rows = [COLUMNS, *(_row(card) for card in cards)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    # the last column is not padded, so lines carry no trailing blanks
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows)


def run(args: argparse.Namespace) -> int:
    """Print the store's models."""
    store = ModelStore(args.store)
    cards = store.list()
    if args.json:
        print(json.dumps([describe(card) for card in cards], indent=2))
    elif not cards:
        print(f"no models in the store at {store.root}; train one with `imagegen train`")
    else:
        print(format_table(cards))
    return 0
