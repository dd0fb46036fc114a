"""The training smoke test of the diffusion-core issue, end to end through the command line: a few
hundred CPU steps on a slice of the real Fashion-MNIST lower the loss, export to the store, and
`imagegen generate` then writes PNGs from the exported model."""

from __future__ import annotations

import contextlib
import io
import json

from cli_helpers import last_json, pixels
from stores import fashion_mnist_or_skip

from imagegen.cli import main
from model_store import ModelStore


def run(argv: list[str]) -> dict:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == 0
    return last_json(buf.getvalue())


def test_train_on_a_fashion_mnist_slice_export_and_generate(tmp_path):
    fashion_mnist_or_skip("train")
    store, run_dir = tmp_path / "store", tmp_path / "run"
    summary = run(["train", "--preset", "tiny", "--data", "fashion-mnist", "--limit", "640", "--steps", "200",
                   "--batch-size", "32", "--lr", "1e-3", "--warmup-steps", "20", "--ema-decay", "0.99",
                   "--log-every", "20", "--sample-every", "0", "--device", "cpu", "--run-dir", str(run_dir),
                   "--store", str(store), "--export-name", "smoke"])
    losses = [json.loads(line)["loss"] for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert summary["model"] == "smoke@1" and summary["steps"] == 200
    assert losses[-1] < 0.6 * losses[0], losses

    card = ModelStore(store).resolve("smoke")
    assert card.training["data"] == "fashion-mnist" and card.training["train_images"] == 640
    assert card.class_names[7] == "Sneaker"

    out = tmp_path / "out"
    result = run(["generate", "--store", str(store), "--class-label", "sneaker", "--num-images", "4",
                  "--steps", "10", "--seed", "5", "--device", "cpu", "--out", str(out)])
    assert result["model"] == "smoke@1" and result["settings"]["class_label"] == 7
    for i in range(4):
        img = pixels(out / f"{i}.png")
        assert img.shape == (28, 28)
    assert pixels(out / "grid.png").shape[1] > 4 * 28
