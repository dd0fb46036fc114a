"""`imagegen train`: flags from TrainConfig, a short run on a stand-in image folder, export to the store,
then `imagegen generate` from what was exported."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path

import pytest
from cli_helpers import last_json, one_torch_thread, pixels, write_image_folder

from diffusion.train import TrainConfig, config_fields
from imagegen.cli import build_parser, main
from model_store import ModelStore
from model_store.weights import load_tensors

CLASSES = ("bag", "boot", "shirt")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """One short classifier run, then one short generator run linked to it, in one store."""
    root = tmp_path_factory.mktemp("train")
    data = write_image_folder(root / "data", CLASSES)
    store = root / "store"
    common = ["--preset", "tiny", "--steps", "30", "--batch-size", "16", "--limit", "64", "--data", str(data),
              "--device", "cpu", "--sample-every", "0", "--store", str(store)]
    summaries = {}
    with one_torch_thread():
        for task, name, extra in (
            ("guidance-classifier", "tiny-clf", []),
            ("generator", "tiny-gen", ["--guidance-classifier", "tiny-clf", "--defaults-json", '{"steps": 3}']),
        ):
            summaries[task] = _train(["train", "--task", task, *common, "--run-dir", str(root / f"run-{task}"),
                                      "--export-name", name, *extra])
    return {"root": root, "store": store, "data": data, **summaries}


def _train(argv: list[str]) -> dict:
    # a module fixture cannot use capsys
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(argv)
    assert code == 0
    return last_json(buf.getvalue())


def test_every_train_config_field_is_a_flag():
    _, subparsers = build_parser(only=["train"])
    by_dest = {a.dest: a for a in subparsers["train"]._actions}
    for f in config_fields():
        action = by_dest[f.name]
        assert action.option_strings[0] == "--" + f.name.replace("_", "-")
        assert action.default == f.default and action.help
        if "choices" in f.metadata:
            assert list(action.choices) == list(f.metadata["choices"])
    assert isinstance(by_dest["compile"], argparse.BooleanOptionalAction)
    assert "--no-compile" in by_dest["compile"].option_strings
    args = subparsers["train"].parse_args(["--batch-size", "16", "--no-compile", "--lr", "1e-3"])
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in config_fields()})
    assert (cfg.batch_size, cfg.compile, cfg.lr, cfg.bf16) == (16, False, 1e-3, True)


def test_generator_export_has_a_full_card(trained):
    summary = trained["generator"]
    assert summary["model"] == "tiny-gen@1" and summary["steps"] == 30 and summary["train_images"] == 12
    card, tensors = load_tensors(ModelStore(trained["store"]), "tiny-gen")
    assert card.kind == "generator" and card.dtype == "float16" and card.prediction_type == "epsilon"
    assert all(str(t.dtype) == "torch.float16" for t in tensors.values() if t.is_floating_point())
    assert card.architecture["type"] == "unet" and card.architecture["config"]["num_classes"] == 3
    assert card.class_names == list(CLASSES) and (card.image_size, card.channels) == (28, 1)
    assert card.schedule["kind"] == "linear" and card.schedule["num_train_steps"] == 1000
    assert card.defaults == {"sampler": "ddim", "steps": 3, "guidance_scale": 3.0, "guidance": "cfg"}
    assert card.links == {"guidance_classifier": "tiny-clf@1"}  # pinned to the version
    t = card.training
    assert t["data"] == str(trained["data"]) and t["preset"] == "tiny" and t["schedule"] == "linear"
    assert (t["steps"], t["batch_size"], t["train_images"]) == (30, 16, 12)
    assert t["lr"] == 2e-4 and t["p_uncond"] == 0.1 and t["ema_decay"] == 0.9999
    assert t["device"] == "cpu" and t["torch"] and t["seconds"] > 0
    assert t["commit"] == "unknown" or len(t["commit"]) == 40
    assert isinstance(t["final_loss"], float) and t["final_loss"] == pytest.approx(summary["final_loss"])
    assert "not yet chosen from measured quality" in card.notes


def test_classifier_export_has_a_classifier_card(trained):
    summary = trained["guidance-classifier"]
    assert summary["model"] == "tiny-clf@1" and 0 <= summary["final_accuracy"] <= 1
    card = ModelStore(trained["store"]).resolve("tiny-clf")
    assert card.kind == "guidance-classifier" and card.dtype == "float16"
    assert card.architecture["type"] == "noise-classifier" and card.prediction_type is None
    assert card.defaults == {} and card.links == {}
    assert card.training["final_accuracy"] == pytest.approx(summary["final_accuracy"])
    # trained on an image folder: there is no Fashion-MNIST test split to measure it on
    assert card.quality == {} and "quality" not in summary


def test_generate_from_the_exported_models(trained, capsys, tmp_path):
    for guidance in ("cfg", "classifier"):
        out = tmp_path / guidance
        code = main(["generate", "--store", str(trained["store"]), "--model", "tiny-gen", "--class-label", "Boot",
                     "--guidance", guidance, "--num-images", "2", "--seed", "9", "--device", "cpu", "--out", str(out)])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        summary = last_json(captured.out)
        assert summary["model"] == "tiny-gen@1"
        assert summary["settings"]["class_label"] == 1 and summary["settings"]["steps"] == 3  # card default
        assert [pixels(p).shape for p in summary["images"]] == [(28, 28), (28, 28)]


def test_train_without_export(tmp_path, capsys):
    data = write_image_folder(tmp_path / "data", ("a", "b"), per_class=2)
    code = main(["train", "--task", "guidance-classifier", "--preset", "tiny", "--steps", "2", "--batch-size", "4",
                 "--data", str(data), "--device", "cpu", "--run-dir", str(tmp_path / "run"),
                 "--store", str(tmp_path / "store")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out.strip().splitlines()[-1])["model"] is None
    assert not (tmp_path / "store").exists()
    assert (tmp_path / "run" / "checkpoint.pt").is_file()


@pytest.mark.parametrize("flags,needle", [
    (["--steps", "0"], "--steps must be >= 1 (got 0)"),
    (["--task", "regressor"], "--task"),
    (["--preset", "fmnist-small", "--task", "guidance-classifier"], "--preset must be one of"),
    (["--image-size", "27", "--preset", "tiny"], "--image-size 27"),
    (["--export-name", "Bad Name"], "--export-name"),
    (["--defaults-json", "{\"steps\": 0}", "--export-name", "g"], "--defaults-json: steps must be between 1 and 1000"),
    (["--defaults-json", "[1]", "--export-name", "g"], "--defaults-json must be a JSON object"),
    (["--defaults-json", "{", "--export-name", "g"], "--defaults-json is not valid JSON"),
    (["--guidance-classifier", "nope", "--export-name", "g"], "--guidance-classifier: unknown model 'nope'"),
    (["--guidance-classifier", "nope"], "--guidance-classifier goes into the exported card: add --export-name"),
    (["--task", "guidance-classifier", "--defaults-json", "{}", "--export-name", "c"],
     "--defaults-json is only for --task generator"),
    (["--device", "tpu"], "--device must be one of"),
    (["--init-from", "nope"], "--init-from: unknown model 'nope'"),
    (["--compile", "maybe"], "unrecognized arguments: maybe"),
])
def test_bad_train_input_is_one_line(tmp_path, capsys, flags, needle):
    code = main(["train", "--data", str(tmp_path / "missing"), "--store", str(tmp_path / "store"),
                 "--run-dir", str(tmp_path / "run"), *flags])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.count("\n") == 1 and captured.err.startswith("imagegen train: error: ")
    assert needle in captured.err
    assert not (tmp_path / "run").exists()  # refused before training set anything up


def test_missing_data_folder_is_one_line(tmp_path, capsys):
    code = main(["train", "--data", str(tmp_path / "missing"), "--device", "cpu", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--data" in err and "does not exist" in err


def test_linked_classifier_must_match_the_data(trained, tmp_path, capsys):
    data = write_image_folder(tmp_path / "data", ("x", "y"), per_class=1)
    code = main(["train", "--preset", "tiny", "--steps", "1", "--data", str(data), "--device", "cpu",
                 "--run-dir", str(tmp_path / "run"), "--store", str(trained["store"]), "--export-name", "other",
                 "--guidance-classifier", "tiny-clf"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--guidance-classifier tiny-clf@1 was trained on classes" in err
    assert not Path(trained["store"], "other").exists()


def test_warm_start_continues_from_a_stored_model(trained, tmp_path, capsys):
    # a learning rate too small to move the weights: the exported EMA must then be the stored weights
    with one_torch_thread():
        code = main(["train", "--preset", "tiny", "--steps", "1", "--batch-size", "4", "--lr", "1e-12",
                     "--data", str(trained["data"]), "--device", "cpu", "--sample-every", "0",
                     "--run-dir", str(tmp_path / "run"), "--store", str(trained["store"]),
                     "--init-from", "tiny-gen", "--export-name", "tiny-gen-more"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    store = ModelStore(trained["store"])
    card, after = load_tensors(store, "tiny-gen-more")
    before_card, before = load_tensors(store, "tiny-gen@1")
    assert after.keys() == before.keys()
    for k in before:
        assert (after[k].float() - before[k].float()).abs().max() < 1e-2, k
    t = card.training
    assert t["init_from"] == "tiny-gen@1" and t["init_training"] == before_card.training
    assert (t["steps"], t["total_steps"]) == (1, 31)


@pytest.mark.parametrize("flags,needle", [
    (["--init-from", "tiny-clf"], "--init-from tiny-clf@1 is a guidance-classifier, not a generator"),
    (["--init-from", "tiny-gen", "--preset", "fmnist-small"], "--init-from tiny-gen@1 is preset 'tiny'"),
    (["--init-from", "tiny-gen", "--schedule", "cosine"], "trained with the linear schedule"),
])
def test_a_warm_start_that_cannot_fit_is_one_line(trained, tmp_path, capsys, flags, needle):
    code = main(["train", "--preset", "tiny", "--steps", "1", "--data", str(trained["data"]), "--device", "cpu",
                 "--run-dir", str(tmp_path / "run"), "--store", str(trained["store"]), *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "run").exists()
