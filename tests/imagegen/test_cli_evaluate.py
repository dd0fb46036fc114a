"""`imagegen train --task eval-classifier` and `imagegen evaluate`, on the real Fashion-MNIST test split."""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil

import pytest
from cli_helpers import last_json
from stores import fashion_mnist_or_skip

from imagegen.cli import main
from model_store import ModelStore
from model_store.loading import load_module


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_store_root):
    fashion_mnist_or_skip("test")
    root = tmp_path_factory.mktemp("eval") / "store"
    shutil.copytree(tiny_store_root, root)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["train", "--task", "eval-classifier", "--preset", "tiny", "--data", "fashion-mnist",
                     "--limit", "4096", "--steps", "150", "--batch-size", "64", "--lr", "2e-3", "--warmup-steps", "5", "--ema-decay", "0.95",
                     "--device", "cpu", "--run-dir", str(root.parent / "run"), "--export-name", "fmnist-eval-classifier",
                     "--store", str(root)])
    assert code == 0
    return root, last_json(buf.getvalue())


def test_the_eval_classifier_is_exported_with_its_held_out_accuracy(store):
    root, summary = store
    card = ModelStore(root).resolve("fmnist-eval-classifier")
    assert card.kind == "eval-classifier" and card.architecture["type"] == "eval-classifier"
    assert card.schedule is None and card.dtype == "float16"
    quality = card.quality
    assert quality["test_images"] == 10_000
    # 150 steps of the tiny preset: well above chance (0.1), far from the real one's 93%
    assert 0.4 < quality["test_accuracy"] <= 1.0
    assert summary["quality"] == quality
    _, module = load_module(ModelStore(root), card.ref)
    assert module.features.__self__ is module


def evaluate(root, tmp_path, *flags) -> dict:
    out = tmp_path / "result.json"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["evaluate", "--model", "fashion-mnist", "--store", str(root), "--device", "cpu",
                     "--out", str(out), *flags])
    assert code == 0
    assert last_json(buf.getvalue())["out"] == str(out)
    return json.loads(out.read_text())


def test_one_setting_gives_fd_and_accuracy_and_is_repeatable(store, tmp_path):
    root, _ = store
    flags = ("--per-class", "3", "--steps", "4", "--sampler", "dpmpp_2m", "--guidance-scale", "2")
    a = evaluate(root, tmp_path, *flags)
    row = a["setting"]
    assert row["n"] == 30 and row["sampler"] == "dpmpp_2m" and row["steps"] == 4 and row["guidance_scale"] == 2
    assert math.isfinite(row["fd"]) and row["fd"] > 0 and 0 <= row["accuracy"] <= 1
    assert a["device"] == "cpu" and a["commit"] and a["per_class"] == 3
    assert evaluate(root, tmp_path, *flags)["setting"]["fd"] == row["fd"]  # seeds fixed


def test_the_floor_is_far_below_random_images(store, tmp_path):
    root, _ = store
    result = evaluate(root, tmp_path, "--tables", "floor", "--per-class", "2")
    # the random tiny generator's images are far from the data; real training images are close
    noise = evaluate(root, tmp_path, "--per-class", "20", "--steps", "2")["setting"]["fd"]
    assert result["floor"]["n"] == 10_000
    assert 0 <= result["floor"]["fd"] < noise / 10


def test_unconditional_rows_have_no_accuracy(store, tmp_path):
    root, _ = store
    row = evaluate(root, tmp_path, "--per-class", "2", "--steps", "2", "--guidance-scale", "0")["setting"]
    assert row["accuracy"] is None


@pytest.mark.parametrize("flags, message", [
    (["--per-class", "1"], "--per-class"), (["--steps", "0"], "--steps"),
    (["--eta", "0.5", "--sampler", "heun"], "--eta"), (["--eval-classifier", "nope"], "--eval-classifier"),
])
def test_bad_flags_are_one_line_errors(store, tmp_path, capsys, flags, message):
    root, _ = store
    code = main(["evaluate", "--store", str(root), "--device", "cpu", "--out", str(tmp_path / "x.json"), *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err
