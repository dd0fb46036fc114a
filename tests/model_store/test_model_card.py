import json

import pytest

from diffusion.unet import UNET_PRESETS, UNetConfig
from model_store import ModelCard

FASHION_MNIST = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def card_dict(**overrides) -> dict:
    d = {
        "name": "fashion-mnist",
        "version": 2,
        "kind": "generator",
        "architecture": {"type": "unet", "config": UNET_PRESETS["tiny"].to_dict()},
        "schedule": {"kind": "linear", "num_steps": 1000},
        "prediction_type": "epsilon",
        "class_names": FASHION_MNIST,
        "image_size": 28,
        "channels": 1,
        "dtype": "float16",
        "sha256": "0" * 64,
        "defaults": {"sampler": "ddim", "steps": 50, "guidance_scale": 3.0, "guidance": "cfg"},
        "training": {"steps": 100, "batch_size": 8, "device": "cpu"},
        "quality": {"fid": {"ddim-50": 12.5}},
        "links": {"guidance_classifier": "fashion-mnist-guidance-classifier"},
        "created_at": "2025-01-01T00:00:00Z",
        "notes": "test card",
    }
    return {**d, **overrides}


@pytest.fixture
def card() -> ModelCard:
    return ModelCard.from_dict(card_dict())


def test_json_round_trip_keeps_every_field(card):
    again = ModelCard.from_dict(json.loads(json.dumps(card.to_dict())))
    assert again == card
    assert again.ref == "fashion-mnist@2"
    # the U-Net config survives JSON (tuples come back as lists) and rebuilds the same config
    assert UNetConfig.from_dict(again.architecture["config"]) == UNET_PRESETS["tiny"]


def test_optional_fields_get_defaults():
    d = card_dict()
    for key in ("schedule", "prediction_type", "defaults", "training", "quality", "links", "notes"):
        del d[key]
    card = ModelCard.from_dict(d)
    assert card.schedule is None and card.prediction_type is None
    assert card.defaults == card.training == card.quality == card.links == {}
    assert card.notes == ""


def test_unknown_keys_are_rejected():
    with pytest.raises(ValueError, match=r"unknown model card keys \['sha265'\]"):
        ModelCard.from_dict(card_dict(sha265="typo"))


def test_missing_required_keys_are_named():
    d = card_dict()
    del d["class_names"], d["sha256"]
    with pytest.raises(ValueError, match=r"missing required keys \['class_names', 'sha256'\]"):
        ModelCard.from_dict(d)


@pytest.mark.parametrize("overrides", [
    {"kind": "painter"},
    {"version": 0},
    {"version": "1"},
    {"version": True},
    {"architecture": {"type": "transformer", "config": {}}},
    {"architecture": {"type": "unet"}},
    {"class_names": ["Ankle boot", "ankle-boot"]},
    {"class_names": [0, 1]},
    {"training": {"device": object()}},
])
def test_invalid_cards_are_rejected(overrides):
    with pytest.raises(ValueError):
        ModelCard.from_dict(card_dict(**overrides))


@pytest.mark.parametrize("label, index", [
    (None, None),
    (0, 0),
    (9, 9),
    ("7", 7),
    (" 3 ", 3),
    ("sneaker", 7),
    ("SNEAKER", 7),
    ("Ankle boot", 9),
    ("ankle-boot", 9),
    ("ankle_boot", 9),
    ("ankleboot", 9),
    ("T-shirt/top", 0),
    ("t-shirt/top", 0),
    ("tshirt top", 0),
])
def test_resolve_class(card, label, index):
    assert card.resolve_class(label) == index


@pytest.mark.parametrize("label", ["boot", 10, -1, "10", "", 3.0, True])
def test_resolve_class_refuses_with_the_allowed_names(card, label):
    with pytest.raises(ValueError) as e:
        card.resolve_class(label)
    assert "0..9" in str(e.value)
    assert "T-shirt/top, Trouser, Pullover" in str(e.value) and "Ankle boot" in str(e.value)


def test_unconditional_model_takes_no_class():
    card = ModelCard.from_dict(card_dict(class_names=[]))
    assert card.resolve_class(None) is None
    with pytest.raises(ValueError, match="unconditional"):
        card.resolve_class(0)
