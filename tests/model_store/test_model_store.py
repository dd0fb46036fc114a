import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model_store import (
    InvalidModelNameError,
    ModelCard,
    ModelIntegrityError,
    ModelStore,
    ModelStoreError,
    UnknownModelError,
    default_store_root,
)
from model_store.weights import load_tensors, save_model

REPO = Path(__file__).resolve().parents[2]

CARD_FIELDS = {
    "kind": "generator",
    "architecture": {"type": "unet", "config": {"base_channels": 16}},
    "schedule": {"kind": "linear"},
    "prediction_type": "epsilon",
    "class_names": ["T-shirt/top", "Trouser", "Ankle boot"],
    "image_size": 28,
    "channels": 1,
    "defaults": {"sampler": "ddim", "steps": 50},
}


def tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "conv.weight": torch.randn(8, 1, 3, 3, generator=g).half(),
        "conv.bias": torch.randn(8, generator=g),
        "embed.weight": torch.randn(4, 8, generator=g).to(torch.float16),
        "steps": torch.arange(10),
    }


@pytest.fixture
def store(tmp_path) -> ModelStore:
    return ModelStore(tmp_path / "store")


def test_save_load_round_trip_is_bit_exact(store):
    saved = tensors()
    card = save_model(store, "fashion-mnist", saved, CARD_FIELDS)
    assert card.ref == "fashion-mnist@1"
    assert card.dtype == "float16"  # most floating-point elements are fp16
    loaded_card, loaded = load_tensors(store, "fashion-mnist")
    assert loaded_card == card
    assert loaded.keys() == saved.keys()
    for k, t in saved.items():
        assert loaded[k].dtype == t.dtype and torch.equal(loaded[k], t), k


def test_round_trip_of_a_real_unet(store, tiny_unet):
    state = {k: v.half() for k, v in tiny_unet.state_dict().items()}
    arch = {"type": "unet", "config": tiny_unet.cfg.to_dict()}
    card = save_model(store, "tiny", state, {**CARD_FIELDS, "architecture": arch})
    _, loaded = load_tensors(store, card)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_layout_on_disk(store):
    card = save_model(store, "fashion-mnist", tensors(), {**CARD_FIELDS, "dtype": "float32"})
    version_dir = store.root / "fashion-mnist" / "1"
    assert sorted(p.name for p in version_dir.iterdir()) == ["card.json", "weights.safetensors"]
    assert store.weights_path(card) == version_dir / "weights.safetensors"
    text = (version_dir / "card.json").read_text()
    assert text == json.dumps(card.to_dict(), indent=2, sort_keys=True) + "\n"
    assert card.dtype == "float32"  # an explicit dtype wins over the inferred one
    # no temporary directory is left behind
    assert [p.name for p in (store.root / "fashion-mnist").iterdir()] == ["1"]


def test_versions_increment_and_resolve_picks_the_newest(store):
    old = save_model(store, "fashion-mnist", tensors(0), CARD_FIELDS)
    new = save_model(store, "fashion-mnist", tensors(1), {**CARD_FIELDS, "notes": "retrained"})
    save_model(store, "tiny", tensors(2), CARD_FIELDS)
    assert (old.version, new.version) == (1, 2)
    assert store.resolve("fashion-mnist") == new
    assert store.resolve("fashion-mnist@1") == old
    assert store.resolve("fashion-mnist@2").notes == "retrained"
    assert [c.ref for c in store.list()] == ["fashion-mnist@1", "fashion-mnist@2", "tiny@1"]
    assert store.names() == ["fashion-mnist", "tiny"]
    _, t = load_tensors(store, "fashion-mnist@1")
    assert torch.equal(t["conv.bias"], tensors(0)["conv.bias"])


def test_tampered_weights_are_refused(store):
    card = save_model(store, "fashion-mnist", tensors(), CARD_FIELDS)
    path = store.weights_path(card)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # one bit of the last tensor's data
    path.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError) as e:
        load_tensors(store, "fashion-mnist")
    message = str(e.value)
    assert str(path) in message and card.sha256 in message and "expected" in message


def test_missing_weights_are_refused(store):
    card = save_model(store, "fashion-mnist", tensors(), CARD_FIELDS)
    store.weights_path(card).unlink()
    with pytest.raises(ModelIntegrityError, match="missing"):
        load_tensors(store, card)


def test_unknown_model_lists_what_exists(store):
    with pytest.raises(UnknownModelError, match="is empty"):
        store.resolve("foo")
    save_model(store, "fashion-mnist", tensors(), CARD_FIELDS)
    save_model(store, "fashion-mnist", tensors(), CARD_FIELDS)
    save_model(store, "tiny", tensors(), CARD_FIELDS)
    with pytest.raises(UnknownModelError) as e:
        store.resolve("foo")
    assert str(e.value) == (f"unknown model 'foo'; the store at {store.root} has: "
                            "fashion-mnist@1, fashion-mnist@2, tiny@1")
    with pytest.raises(UnknownModelError) as e:
        load_tensors(store, "fashion-mnist@3")
    assert "unknown version 3 of model 'fashion-mnist'" in str(e.value)
    assert str(e.value).endswith("has: fashion-mnist@1, fashion-mnist@2")


@pytest.mark.parametrize("ref", [
    "../etc", "../../x", "a/b", "/abs", "Fashion-MNIST", "a..b", ".hidden", "", "x" * 65,
    "name@0", "name@-1", "name@01", "name@latest", "name@1@2", "name@",
])
def test_bad_names_and_versions_are_rejected(store, ref):
    with pytest.raises(InvalidModelNameError):
        store.resolve(ref)


@pytest.mark.parametrize("name", ["../escape", "a/b", "UPPER", "a..b", "name@1"])
def test_save_rejects_bad_names_and_writes_nothing(store, name):
    with pytest.raises(InvalidModelNameError):
        save_model(store, name, tensors(), CARD_FIELDS)
    assert not store.root.exists()


def test_save_rejects_fields_the_store_owns_and_bad_cards(store):
    with pytest.raises(ValueError, match="set by the store"):
        save_model(store, "fashion-mnist", tensors(), {**CARD_FIELDS, "version": 7})
    with pytest.raises(ValueError, match="unknown model card keys"):
        save_model(store, "fashion-mnist", tensors(), {**CARD_FIELDS, "colour": "blue"})
    assert store.list() == []


def test_broken_directories_are_skipped(store):
    save_model(store, "fashion-mnist", tensors(), CARD_FIELDS)
    (store.root / "fashion-mnist" / "2").mkdir()  # no card
    (store.root / "fashion-mnist" / "3").mkdir()
    (store.root / "fashion-mnist" / "3" / "card.json").write_text("{not json")
    (store.root / "empty-model").mkdir()
    (store.root / "Not A Model").mkdir()
    (store.root / ".gitkeep").touch()
    assert [c.ref for c in store.list()] == ["fashion-mnist@1"]
    assert store.resolve("fashion-mnist").version == 1
    # numbering skips over the broken versions rather than reusing them
    assert save_model(store, "fashion-mnist", tensors(), CARD_FIELDS).version == 4


def test_card_under_the_wrong_directory_is_skipped(store):
    card = save_model(store, "fashion-mnist", tensors(), CARD_FIELDS)
    (store.root / "fashion-mnist" / "1").rename(store.root / "fashion-mnist" / "5")
    assert store.list() == []
    with pytest.raises(UnknownModelError):
        store.resolve(card.name)


def test_errors_share_one_base():
    for error in (UnknownModelError, ModelIntegrityError, InvalidModelNameError):
        assert issubclass(error, ModelStoreError)


def test_env_model_store_is_honoured(tmp_path, monkeypatch):
    monkeypatch.setenv("MODEL_STORE", str(tmp_path / "from-env"))
    assert default_store_root() == tmp_path / "from-env"
    store = ModelStore()
    assert store.root == tmp_path / "from-env"
    save_model(store, "tiny", tensors(), CARD_FIELDS)
    assert (tmp_path / "from-env" / "tiny" / "1" / "card.json").is_file()
    monkeypatch.delenv("MODEL_STORE")
    assert ModelStore().root == REPO / "model_store" / "models"


def test_importing_the_store_does_not_import_torch():
    code = (
        "import sys, model_store, model_store.store, model_store.cards; "
        "assert 'torch' not in sys.modules, 'torch was imported'; "
        "assert 'safetensors' not in sys.modules, 'safetensors was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_cards_are_plain_data(store):
    card = save_model(store, "fashion-mnist", tensors(), CARD_FIELDS)
    assert isinstance(card, ModelCard)
    assert card.resolve_class("ankle-boot") == 2
    assert len(card.sha256) == 64 and card.created_at.endswith("Z")


def test_saved_models_are_readable_by_every_user(tmp_path):
    """A container's non-root user, or a service account, must be able to read a shipped model."""
    import stat

    import torch

    from model_store import ModelStore

    card = save_model(ModelStore(tmp_path), "m", {"w": torch.zeros(2)}, {
        "kind": "eval-classifier", "architecture": {"type": "eval-classifier", "config": {}},
        "class_names": ["a"], "image_size": 4, "channels": 1})
    folder = tmp_path / "m" / str(card.version)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    for f in folder.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) & 0o444 == 0o444, f
