"""`imagegen import-model` then `imagegen generate --model NAME`: RGB PNGs of an imported diffusers model;
a refused folder is one error line and nothing in the store."""

from __future__ import annotations

import json

import pytest
from cli_helpers import last_json, pixels, run_console

pytest.importorskip("diffusers")

from diffusers_folders import class_names_file, save_dit_folder, save_unet_folder  # noqa: E402

from imagegen.cli import main  # noqa: E402
from model_store import ModelStore  # noqa: E402


def test_import_then_generate_writes_rgb_pngs(tmp_path, capsys):
    folder = save_unet_folder(tmp_path / "unet", "v_prediction")
    store = tmp_path / "store"
    argv = ["import-model", str(folder), "--name", "tiny-rgb", "--class-names", str(class_names_file(tmp_path)),
            "--null-class", "3", "--store", str(store)]
    assert main(argv) == 0
    imported = last_json(capsys.readouterr().out)
    assert imported["model"] == "tiny-rgb@1" and imported["null_class"] == 3 and imported["space"] == "pixel"
    assert main(["generate", "--model", "tiny-rgb", "--class-label", "golden retriever", "--num-images", "2",
                 "--steps", "3", "--seed", "5", "--device", "cpu", "--store", str(store),
                 "--out", str(tmp_path / "out")]) == 0
    summary = last_json(capsys.readouterr().out)
    assert summary["model"] == "tiny-rgb@1" and summary["settings"]["class_label"] == 1
    for path in summary["images"]:
        assert pixels(path).shape == (32, 32, 3)


def test_a_dit_generates_decoded_images(tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["import-model", str(save_dit_folder(tmp_path / "dit")), "--name", "dit", "--version", "1",
                 "--store", str(store)]) == 0
    capsys.readouterr()
    assert main(["generate", "--model", "dit", "--class-label", "207", "--num-images", "1", "--steps", "3",
                 "--guidance-scale", "4", "--device", "cpu", "--store", str(store), "--out", str(tmp_path / "o")]) == 0
    assert pixels(last_json(capsys.readouterr().out)["images"][0]).shape == (16, 16, 3)


def test_a_refused_import_is_one_line_and_writes_nothing(tmp_path):
    folder = save_unet_folder(tmp_path / "pickled")
    (folder / "diffusion_pytorch_model.safetensors").rename(folder / "diffusion_pytorch_model.bin")
    store = tmp_path / "store"
    done = run_console(["import-model", str(folder), "--name", "bad", "--store", str(store)])
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("imagegen")]
    assert len(lines) == 1 and lines[0].startswith("imagegen import-model: error: ")
    assert "diffusion_pytorch_model.bin holds pickle weights" in lines[0]
    assert ModelStore(store).list() == []


def test_cfg_on_a_model_without_a_null_class_is_refused_naming_the_flag(tmp_path, capsys):
    store = tmp_path / "store"
    folder = save_unet_folder(tmp_path / "u")
    assert main(["import-model", str(folder), "--name", "no-null", "--store", str(store)]) == 0
    assert json.loads(capsys.readouterr().out)["null_class"] is None
    assert main(["generate", "--model", "no-null", "--class-label", "0", "--guidance-scale", "2", "--store",
                 str(store), "--out", str(tmp_path / "o")]) == 2
    assert "--guidance-scale must be 1 for model no-null@1: it has no null class" in capsys.readouterr().err
