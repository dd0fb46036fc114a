"""Bad input to `imagegen`: exit code 2 and exactly one line on stderr naming the flag, before any
model loads (the output folder is never created)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from cli_helpers import REPO, classifier_fields, fp16, generator_fields, randomized_classifier, run_console

from imagegen.cli import main
from model_store import ModelStore
from model_store.weights import save_model


def fails(capsys, argv: list[str]) -> str:
    """Run `argv`, check it is refused the contract's way, and return the one stderr line."""
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert code == 2, captured
    assert len(lines) == 1 and lines[0].strip(), captured.err
    assert captured.out == ""
    return lines[0]


def bad_generate(capsys, store_root, tmp_path, *flags: str) -> str:
    out = tmp_path / "out"
    line = fails(capsys, ["generate", "--store", str(store_root), "--out", str(out), *flags])
    assert line.startswith("imagegen generate: error: "), line
    assert not out.exists()
    return line


CASES = [
    # (flags, what the line must contain)
    (["--class-label", "hoodie"], ["--class-label", "'hoodie'", "Ankle boot", "Sneaker"]),
    (["--class-label", "10"], ["--class-label", "0..9"]),
    (["--class-label", "1", "--steps", "0"], ["--steps must be between 1 and 1000 (got 0)"]),
    (["--class-label", "1", "--steps", "1001"], ["--steps must be between 1 and 1000 (got 1001)"]),
    (["--class-label", "1", "--steps", "abc"], ["--steps", "'abc'"]),
    (["--class-label", "1", "--eta", "1.5"], ["--eta must be between 0 and 1"]),
    (["--class-label", "1", "--eta", "-0.1"], ["--eta must be between 0 and 1"]),
    (["--class-label", "1", "--eta", "0.5", "--sampler", "euler"], ["--eta is only for --sampler ddim"]),
    (["--class-label", "1", "--guidance-scale", "-1"], ["--guidance-scale must be a finite number >= 0"]),
    (["--class-label", "1", "--guidance-scale", "nan"], ["--guidance-scale"]),
    (["--class-label", "1", "--num-images", "0"], ["--num-images must be between 1 and 64 (got 0)"]),
    (["--class-label", "1", "--num-images", "65"], ["--num-images must be between 1 and 64 (got 65)"]),
    (["--class-label", "1", "--seed", "-1"], ["--seed must be between 0 and 2**63-1 (got -1)"]),
    (["--class-label", "1", "--seed", str(2**63)], ["--seed must be between 0 and 2**63-1"]),
    (["--class-label", "1", "--seed", str(2**63 - 1), "--num-images", "2"], ["--seed must be at most"]),
    (["--class-label", "1", "--sampler", "plms"], ["--sampler", "invalid choice", "ddim"]),
    (["--class-label", "1", "--guidance", "clip"], ["--guidance", "invalid choice", "classifier"]),
    (["--class-label", "1", "--device", "tpu"], ["--device", "invalid choice"]),
    (["--class-label", "1", "--model", "nope"], ["--model", "'nope'", "fashion-mnist@1", "plain@1"]),
    (["--class-label", "1", "--model", "Bad/Name"], ["--model", "invalid model name"]),
    (["--class-label", "1", "--model", "fashion-mnist@7"], ["--model", "unknown version 7"]),
    (["--class-label", "1", "--model", "fmnist-classifier"], ["--model", "guidance-classifier, not a generator"]),
    (["--class-label", "1", "--model", "plain", "--guidance", "classifier"],
     ["--guidance classifier", "plain@1", "links.guidance_classifier"]),
    (["--class-label", "none", "--guidance", "classifier"], ["--guidance classifier needs a class"]),
    (["--class-label", "1", "--bogus"], ["unrecognized arguments: --bogus"]),
    # every bad value at once, in one line
    (["--class-label", "hoodie", "--steps", "0", "--num-images", "65"],
     ["--class-label: unknown class 'hoodie'", "; --num-images must be between 1 and 64 (got 65); --steps must be"]),
    ([], ["--class-label"]),  # required
]


@pytest.mark.parametrize("flags,needles", CASES, ids=[" ".join(c[0]) or "missing" for c in CASES])
def test_bad_generate_input_is_one_line_naming_the_flag(capsys, store_root, tmp_path, flags, needles):
    line = bad_generate(capsys, store_root, tmp_path, *flags)
    for needle in needles:
        assert needle in line, line


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda(capsys, store_root, tmp_path):
    line = bad_generate(capsys, store_root, tmp_path, "--class-label", "1", "--device", "cuda")
    assert "--device cuda" in line and "not available" in line


def test_missing_out_is_one_line(capsys, store_root):
    line = fails(capsys, ["generate", "--store", str(store_root), "--class-label", "1"])
    assert line.startswith("imagegen generate: error: ") and "--out" in line


def test_no_generator_in_the_store(capsys, tmp_path):
    store = ModelStore(tmp_path / "store")
    save_model(store, "clf", fp16(randomized_classifier()), classifier_fields())  # not a generator
    line = bad_generate(capsys, store.root, tmp_path, "--class-label", "1")
    assert f"no generator in the store at {store.root}" in line and "imagegen train" in line


def test_several_generators_and_no_default(capsys, tmp_path, tiny_unet):
    store = ModelStore(tmp_path / "store")
    weights = fp16(tiny_unet)
    save_model(store, "one", weights, generator_fields())
    save_model(store, "two", weights, generator_fields())
    line = bad_generate(capsys, store.root, tmp_path, "--class-label", "1")
    assert "--model" in line and "one@1" in line and "two@1" in line


def test_only_generator_is_the_default(capsys, tmp_path, tiny_unet):
    store = ModelStore(tmp_path / "store")
    save_model(store, "solo", fp16(tiny_unet), generator_fields())
    assert main(["generate", "--store", str(store.root), "--out", str(tmp_path / "out"), "--class-label", "2",
                 "--num-images", "1", "--steps", "1", "--device", "cpu"]) == 0
    assert '"model": "solo@1"' in capsys.readouterr().out


def test_linked_classifier_missing_from_the_store(capsys, tmp_path, tiny_unet):
    store = ModelStore(tmp_path / "store")
    save_model(store, "fashion-mnist", fp16(tiny_unet), generator_fields(links={"guidance_classifier": "gone"}))
    line = bad_generate(capsys, store.root, tmp_path, "--class-label", "1", "--guidance", "classifier")
    assert "--guidance classifier" in line and "'gone'" in line


def test_bad_card_default_is_blamed_on_the_card(capsys, tmp_path, tiny_unet):
    store = ModelStore(tmp_path / "store")
    save_model(store, "fashion-mnist", fp16(tiny_unet), generator_fields(defaults={"steps": 5000}))
    line = bad_generate(capsys, store.root, tmp_path, "--class-label", "1")
    assert "--steps must be between 1 and 1000 (got 5000) from the defaults of fashion-mnist@1" in line


def test_out_that_is_a_file(capsys, store_root, tmp_path):
    out = tmp_path / "file"
    out.write_text("x")
    line = fails(capsys, ["generate", "--store", str(store_root), "--out", str(out), "--class-label", "1"])
    assert "--out" in line and "not a directory" in line


def test_unknown_command_and_bare_call(capsys):
    line = fails(capsys, ["paint"])
    assert line.startswith("imagegen: error: ") and "'paint'" in line and "generate" in line
    line = fails(capsys, [])
    assert line.startswith("imagegen: error: ") and "COMMAND" in line


def test_help_exits_zero(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "generate" in out and "train" in out and "models" in out


def test_every_flag_has_help():
    from imagegen.cli import build_parser

    _, subparsers = build_parser()
    for name, parser in subparsers.items():
        for action in parser._actions:
            assert action.help, f"imagegen {name} {action.option_strings} has no help"


def test_console_script_error_is_one_line(store_root, tmp_path):
    done = run_console(["generate", "--store", str(store_root), "--out", str(tmp_path / "o"),
                        "--class-label", "1", "--steps", "0"], timeout=60)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["imagegen generate: error: --steps must be between 1 and 1000 (got 0)"]
    assert done.stdout == ""


def test_help_and_input_errors_do_not_import_torch(store_root):
    # `imagegen --help` and a typo should answer at once; torch takes seconds to import
    code = (
        "import sys; from imagegen.cli import main; "
        "assert main(['--help']) == 0; assert main(['models', '--store', sys.argv[1]]) == 0; "
        "assert main(['generate', '--store', sys.argv[1], '--out', 'x', '--class-label', 'hoodie']) == 2; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    done = subprocess.run([sys.executable, "-c", code, str(store_root)], capture_output=True, text=True, timeout=60,
                          cwd=REPO)
    assert done.returncode == 0, done.stderr
