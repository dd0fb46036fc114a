"""`ModelStore.update_card`: measured quality, defaults and notes written into a stored card in place,
with the weights and their sha256 untouched."""

from __future__ import annotations

import json

import pytest
import torch

from model_store import ModelStore
from model_store.store import UPDATABLE_FIELDS
from model_store.weights import load_tensors, save_model

CARD_FIELDS = {
    "kind": "generator",
    "architecture": {"type": "unet", "config": {"base_channels": 16}},
    "schedule": {"kind": "linear"},
    "prediction_type": "epsilon",
    "class_names": ["T-shirt/top", "Trouser"],
    "image_size": 28,
    "channels": 1,
    "defaults": {"sampler": "ddim", "steps": 50},
    "notes": "placeholder defaults",
}


@pytest.fixture
def store(tmp_path) -> ModelStore:
    s = ModelStore(tmp_path)
    save_model(s, "gen", {"w": torch.arange(6, dtype=torch.float16)}, CARD_FIELDS)
    return s


def test_update_rewrites_the_card_and_leaves_the_weights_and_sha256(store):
    before = store.resolve("gen")
    weights = store.weights_path(before).read_bytes()
    after = store.update_card("gen@1", {"quality": {"floor": {"fd": 1.5}}, "defaults": {"sampler": "heun", "steps": 10},
                                        "notes": "chosen from tables"})
    assert after.quality == {"floor": {"fd": 1.5}} and after.defaults == {"sampler": "heun", "steps": 10}
    assert after.notes == "chosen from tables" and after.sha256 == before.sha256 and after.version == 1
    assert store.resolve("gen") == after
    assert store.weights_path(after).read_bytes() == weights
    card, tensors = load_tensors(store, "gen")  # the sha256 check still passes
    assert torch.equal(tensors["w"], torch.arange(6, dtype=torch.float16))
    on_disk = json.loads((store.root / "gen" / "1" / "card.json").read_text())
    assert on_disk == after.to_dict()
    # no temporary file left beside the card, and no new version
    assert sorted(p.name for p in (store.root / "gen" / "1").iterdir()) == ["card.json", "weights.safetensors"]
    assert [c.ref for c in store.list()] == ["gen@1"]


def test_update_starts_from_the_card_on_disk_not_a_stale_copy(store):
    stale = store.resolve("gen")
    store.update_card(stale, {"notes": "first"})
    after = store.update_card(stale, {"quality": {"x": 1}})
    assert after.notes == "first" and after.quality == {"x": 1}


@pytest.mark.parametrize("changes, message", [
    ({"sha256": "0" * 64}, "cannot be updated"), ({"version": 2}, "cannot be updated"),
    ({"architecture": {"type": "unet", "config": {}}}, "cannot be updated"),
    ({"class_names": ["a"]}, "cannot be updated"),
    ({"notes": 3}, "must be a string"), ({"quality": [1, 2]}, "JSON object"), ({"defaults": None}, "JSON object"),
])
def test_update_refuses_fields_that_describe_the_weights_and_bad_values(store, changes, message):
    with pytest.raises(ValueError, match=message):
        store.update_card("gen", changes)
    assert store.resolve("gen").notes == "placeholder defaults"


def test_the_updatable_fields_are_the_measured_and_human_ones():
    assert set(UPDATABLE_FIELDS) == {"defaults", "quality", "notes", "training"}
