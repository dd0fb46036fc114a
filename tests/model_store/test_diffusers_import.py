"""`model_store.diffusers_import`: what a diffusers folder's card records, what is refused (naming what
is supported, writing nothing), and the request checks that follow from the card."""

from __future__ import annotations

import json

import numpy as np
import pytest

diffusers = pytest.importorskip("diffusers")

from diffusers_folders import CLASS_NAMES, NUM_CLASSES, save_dit_folder, save_unet_folder  # noqa: E402

from contract.errors import InvalidField  # noqa: E402
from contract.request import API, request_defaults, resolve_settings  # noqa: E402
from diffusion.schedules import NoiseSchedule, ScheduleConfig  # noqa: E402
from model_store import ModelStore  # noqa: E402
from model_store.diffusers_import import ImportRefused, import_folder  # noqa: E402


@pytest.fixture(scope="module")
def unet_folder(tmp_path_factory):
    return save_unet_folder(tmp_path_factory.mktemp("unet") / "folder")


def test_a_bare_unet_folder_is_imported_with_its_schedule_size_classes_and_null(unet_folder, tmp_path):
    store = ModelStore(tmp_path)
    card = import_folder(store, unet_folder, "tiny", class_names=CLASS_NAMES, null_class=NUM_CLASSES)
    assert (card.ref, card.kind, card.backbone, card.space) == ("tiny@1", "generator", "diffusers-unet2d", "pixel")
    assert card.architecture["config"]["num_class_embeds"] == NUM_CLASSES + 1
    assert (card.image_size, card.channels, card.class_names, card.null_class) == (32, 3, CLASS_NAMES, NUM_CLASSES)
    assert card.schedule["kind"] == "linear" and card.num_train_steps == 1000 and card.prediction_type == "epsilon"
    assert card.defaults == {"sampler": "ddim", "steps": 50, "guidance": "cfg", "guidance_scale": 4.0}
    assert store.verified_weights(card)[0] == card  # sha256-checked like every model
    # a name answers as an index does
    assert resolve_settings(card, class_label="Golden Retriever", seed=0).class_label == 1


def test_a_ddim_pipeline_folder_with_v_prediction_and_each_beta_schedule(tmp_path):
    for beta, kind in (("scaled_linear", "scaled_linear"), ("squaredcos_cap_v2", "cosine")):
        folder = save_unet_folder(tmp_path / beta, "v_prediction", pipeline=True, beta_schedule=beta,
                                  num_train_timesteps=500, beta_start=0.00085, beta_end=0.012)
        assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "DDIMPipeline"
        card = import_folder(ModelStore(tmp_path / "store"), folder, beta.replace("_", "-"))
        assert card.prediction_type == "v_prediction" and card.schedule["kind"] == kind
        assert card.num_train_steps == 500 and card.null_class is None and card.num_classes == NUM_CLASSES + 1
        theirs = diffusers.DDIMScheduler.from_pretrained(folder / "scheduler").alphas_cumprod.double().numpy()
        ours = NoiseSchedule(ScheduleConfig(**card.schedule)).alphas_cumprod.numpy()
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)


def test_steps_follow_the_models_number_of_training_steps(tmp_path):
    folder = save_unet_folder(tmp_path / "f", num_train_timesteps=100)
    card = import_folder(ModelStore(tmp_path / "store"), folder, "short", null_class=NUM_CLASSES)
    assert card.defaults["steps"] == 50
    assert resolve_settings(card, class_label=0, steps=100, seed=0).steps == 100
    with pytest.raises(InvalidField) as e:
        resolve_settings(card, class_label=0, steps=101, seed=0, vocab=API)
    assert e.value.field == "steps" and "between 1 and 100" in str(e.value)


def test_a_model_without_a_null_class_refuses_cfg_naming_guidance_scale(unet_folder, tmp_path):
    card = import_folder(ModelStore(tmp_path), unet_folder, "no-null")
    assert card.null_class is None and card.num_classes == NUM_CLASSES + 1 and card.defaults["guidance_scale"] == 1.0
    assert resolve_settings(card, class_label=2, seed=0).guidance_scale == 1.0
    with pytest.raises(InvalidField) as e:
        resolve_settings(card, class_label=2, guidance_scale=3.0, seed=0, vocab=API)
    assert e.value.field == "guidance_scale" and "no null class" in str(e.value)
    with pytest.raises(InvalidField) as e:
        resolve_settings(card, class_label=None, seed=0, vocab=API)
    assert e.value.field == "class_label"
    assert request_defaults(card)["guidance_scale"] == 1.0


def test_a_dit_pipeline_is_a_latent_model_with_its_vae_and_null_class(tmp_path):
    folder = save_dit_folder(tmp_path / "dit")
    index = json.loads((folder / "model_index.json").read_text())
    index["id2label"] = {str(i): f"class {i}" for i in range(1000)} | {"207": "golden retriever", "1": "goldfish, "
                                                                       "Carassius auratus", "2": "crane", "3": "crane"}
    (folder / "model_index.json").write_text(json.dumps(index))
    card = import_folder(ModelStore(tmp_path / "store"), folder, "dit")
    cfg = card.architecture["config"]
    assert (card.backbone, card.space, card.image_size, card.channels) == ("diffusers-dit", "latent", 16, 3)
    assert cfg["latent_shape"] == [4, 8, 8] and cfg["scaling_factor"] == 0.18215
    assert card.num_classes == 1000 and card.null_class == 1000 and card.sampling == {}
    assert card.resolve_class("golden retriever") == 207 and card.resolve_class("goldfish") == 1
    assert card.class_names[2:4] == ["crane (2)", "crane (3)"]  # ImageNet's twice-used names stay apart


def test_latent_inpainting_is_refused_naming_mask(tmp_path):
    import torch

    from contract.image_inputs import resolve_image_inputs
    from diffusion.images import png_bytes

    card = import_folder(ModelStore(tmp_path / "store"), save_dit_folder(tmp_path / "dit"), "dit")
    png = png_bytes(torch.zeros(3, 16, 16))
    with pytest.raises(InvalidField) as e:
        resolve_image_inputs(card, png, png_bytes(torch.ones(1, 16, 16)), strength=0.5, resample_steps=1, vocab=API)
    assert e.value.field == "mask" and "latent" in str(e.value)
    assert resolve_image_inputs(card, png, None, strength=0.5, resample_steps=1).init_image is not None


def _refused(store, folder, match, **kwargs):
    with pytest.raises(ImportRefused, match=match) as e:
        import_folder(store, folder, "refused", **kwargs)
    assert "\n" not in str(e.value)
    assert not (store.root / "refused").exists() and store.list() == []
    return str(e.value)


def test_refused_folders_name_why_and_write_nothing(unet_folder, tmp_path):
    store = ModelStore(tmp_path / "store")
    pickled = save_unet_folder(tmp_path / "pickled")
    (pickled / "diffusion_pytorch_model.safetensors").rename(pickled / "diffusion_pytorch_model.bin")
    message = _refused(store, pickled, "pickle")
    assert "diffusion_pytorch_model.bin" in message

    other = save_unet_folder(tmp_path / "other")
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "_class_name": "UNet2DConditionModel"}))
    assert "UNet2DModel" in _refused(store, other, "backbone 'UNet2DConditionModel' is not supported")

    pipe = save_unet_folder(tmp_path / "pipe", pipeline=True)
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    assert "DiTPipeline" in _refused(store, pipe, "pipeline 'StableDiffusionPipeline' is not supported")

    sample = save_unet_folder(tmp_path / "sample", prediction_type="sample")
    _refused(store, sample, "prediction_type 'sample' is not supported; supported: epsilon, v_prediction")
    _refused(store, unet_folder, "the null class must be the last", null_class=0)
    _refused(store, unet_folder, "say so with --null-class 3", class_names=CLASS_NAMES)
    _refused(store, tmp_path / "absent", "is not a folder")
