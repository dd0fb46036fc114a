"""The store's torch side: a model's tensors read from and written to its safetensors file, through
the torch-free `ModelStore` (which checks the sha256 and publishes versions atomically)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from model_store.cards import ModelCard
from model_store.store import ModelStore


def load_tensors(store: ModelStore, ref_or_card: str | ModelCard,
                 device: str | torch.device = "cpu") -> tuple[ModelCard, dict[str, torch.Tensor]]:
    """The card and the tensors of a model, after checking the weights against the card's sha256."""
    card, data = store.verified_weights(ref_or_card)
    tensors = safetensors.torch.load(data)
    del data
    if str(device) != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return card, tensors


def save_model(store: ModelStore, name: str, tensors: dict[str, torch.Tensor],
               card_fields: dict[str, Any]) -> ModelCard:
    """Store `tensors` as the next version of `name`, with a card built from `card_fields`.

    The store sets name, version and sha256; created_at defaults to now and dtype to the dtype
    holding most floating-point elements of `tensors`."""
    fields = {"dtype": main_dtype(tensors), **card_fields} if "dtype" not in card_fields else dict(card_fields)

    def write(path: Path) -> None:
        safetensors.torch.save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path))

    return store.add_version(name, write, fields)


def main_dtype(tensors: dict[str, torch.Tensor]) -> str:
    """The dtype holding most floating-point elements of `tensors`, as a card writes it ("float16")."""
    counts: Counter[str] = Counter()
    for t in tensors.values():
        if t.is_floating_point():
            counts[str(t.dtype).removeprefix("torch.")] += t.numel()
    if not counts:
        raise ValueError("no floating-point tensors to take a dtype from; pass dtype in card_fields")
    return counts.most_common(1)[0][0]
