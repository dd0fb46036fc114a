"""`imagegen generate` and `imagegen models` against a real store holding tiny random models."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helpers import CARD_DEFAULTS, last_json, pixels, run_console

from imagegen.cli import main


def generate(capsys, store_root, out, *flags: str) -> dict:
    code = main(["generate", "--store", str(store_root), "--out", str(out), "--device", "cpu", *flags])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return last_json(captured.out)


def test_writes_pngs_grid_and_a_normalized_summary(capsys, store_root, tmp_path):
    out = tmp_path / "out"
    summary = generate(capsys, store_root, out, "--class-label", "3", "--num-images", "3", "--seed", "11")
    assert summary["model"] == "fashion-mnist@1"  # the default model
    assert summary["settings"] == {
        "class_label": 3, "class_name": "Dress", "num_images": 3, "guidance": "cfg",
        "guidance_scale": CARD_DEFAULTS["guidance_scale"], "sampler": CARD_DEFAULTS["sampler"],
        "steps": CARD_DEFAULTS["steps"], "eta": 0.0, "seed": 11,
        # plain generation: no image inputs (tests/imagegen/test_cli_img2img.py has them)
        "strength": 1.0, "resample_steps": 1, "init_image": None, "mask": None,
    }
    assert summary["notes"] == []
    assert summary["seeds"] == [11, 12, 13]
    assert summary["images"] == [str(out / f"{i}.png") for i in range(3)]
    assert summary["grid"] == str(out / "grid.png")
    assert summary["device"] == "cpu" and summary["seconds"] > 0
    for path in summary["images"]:
        img = pixels(path)
        assert img.shape == (28, 28) and img.dtype == np.uint8  # one grayscale channel
    # 3 tiles of 28 in one row, 2 pixels of padding around each
    assert pixels(summary["grid"]).shape == (2 + 30, 2 + 3 * 30)


def test_class_name_resolves_and_same_seed_gives_same_bytes(capsys, store_root, tmp_path):
    runs = [generate(capsys, store_root, tmp_path / name, "--class-label", "sneaker", "--num-images", "2",
                     "--seed", "5", "--sampler", "euler", "--steps", "3") for name in ("a", "b")]
    assert runs[0]["settings"]["class_label"] == 7
    assert runs[0]["settings"]["class_name"] == "Sneaker"
    for a, b in zip(runs[0]["images"] + [runs[0]["grid"]], runs[1]["images"] + [runs[1]["grid"]]):
        with open(a, "rb") as fa, open(b, "rb") as fb:
            assert fa.read() == fb.read()


def test_image_i_of_a_batch_equals_a_single_run_with_seed_plus_i(capsys, store_root, tmp_path):
    flags = ("--class-label", "ankle boot", "--sampler", "ddim", "--eta", "0.5", "--steps", "3")
    batch = generate(capsys, store_root, tmp_path / "batch", *flags, "--num-images", "3", "--seed", "100")
    for i in (1, 2):
        single = generate(capsys, store_root, tmp_path / f"single{i}", *flags, "--num-images", "1",
                          "--seed", str(100 + i))
        a = pixels(batch["images"][i]).astype(int)
        b = pixels(single["images"][0]).astype(int)
        # batched and single convolutions may round differently: allow one grey level
        assert np.abs(a - b).max() <= 1
    assert not np.array_equal(pixels(batch["images"][0]), pixels(batch["images"][1]))


def test_classifier_guidance_runs(capsys, store_root, tmp_path):
    summary = generate(capsys, store_root, tmp_path / "out", "--class-label", "0", "--guidance", "classifier",
                       "--guidance-scale", "1.5", "--sampler", "dpmpp_2m", "--steps", "3", "--num-images", "2")
    assert summary["settings"]["guidance"] == "classifier"
    assert len(summary["images"]) == 2
    assert all(pixels(p).shape == (28, 28) for p in summary["images"])


def test_unconditional_and_fallback_defaults(capsys, store_root, tmp_path):
    # `plain` has no defaults in its card: guidance_scale 3.0 and ddim are the fallbacks
    summary = generate(capsys, store_root, tmp_path / "out", "--model", "plain", "--class-label", "none",
                       "--steps", "2", "--num-images", "1", "--sampler", "heun")
    s = summary["settings"]
    assert summary["model"] == "plain@1"
    assert s["class_label"] is None and s["class_name"] is None
    assert s["guidance_scale"] == 3.0 and s["sampler"] == "heun" and s["steps"] == 2
    assert 0 <= s["seed"] <= 2**63 - 1  # chosen at random and reported
    assert pixels(summary["images"][0]).shape == (28, 28)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp_2m", "euler", "heun"])
def test_every_sampler(capsys, store_root, tmp_path, sampler):
    summary = generate(capsys, store_root, tmp_path, "--class-label", "1", "--sampler", sampler, "--steps", "2",
                       "--num-images", "1", "--seed", "0")
    assert summary["settings"]["sampler"] == sampler


def test_progress_bar_on_a_terminal(capsys, store_root, tmp_path, monkeypatch):
    import sys

    # capsys swaps sys.stderr for a capture; make that capture claim to be a terminal
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["generate", "--store", str(store_root), "--out", str(tmp_path), "--device", "cpu",
                 "--class-label", "1", "--sampler", "heun", "--steps", "3", "--num-images", "1"]) == 0
    err = capsys.readouterr().err
    # heun evaluates the model twice per step, but the bar counts steps
    assert "sampling" in err and "3/3" in err and "4/3" not in err


def test_models_lists_the_store(capsys, store_root):
    assert main(["models", "--store", str(store_root)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["MODEL", "KIND", "CLASSES", "IMAGE"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert set(rows) == {"fashion-mnist@1", "fmnist-classifier@1", "plain@1"}
    assert rows["fashion-mnist@1"][1:4] == ["generator", "10", "28x28x1"]
    assert "steps=4" in " ".join(rows["fashion-mnist@1"])

    assert main(["models", "--store", str(store_root), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    by_ref = {m["ref"]: m for m in listing}
    assert by_ref["fmnist-classifier@1"]["kind"] == "guidance-classifier"
    assert by_ref["fashion-mnist@1"]["links"] == {"guidance_classifier": "fmnist-classifier@1"}
    assert by_ref["fashion-mnist@1"]["class_names"][7] == "Sneaker"


def test_models_on_an_empty_store(capsys, tmp_path):
    assert main(["models", "--store", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_installed_console_script_generates(store_root, tmp_path):
    out = tmp_path / "out"
    done = run_console(["generate", "--store", str(store_root), "--class-label", "Trouser", "--num-images", "2",
                        "--steps", "2", "--seed", "3", "--device", "cpu", "--out", str(out)])
    assert done.returncode == 0, done.stderr
    summary = last_json(done.stdout)
    assert summary["settings"]["class_label"] == 1 and summary["seeds"] == [3, 4]
    assert sorted(p.name for p in out.iterdir()) == ["0.png", "1.png", "grid.png"]
    # stderr is not a TTY here: no progress bar in it
    assert "sampling" not in done.stderr
