"""`imagegen train --task eval-classifier` and `python -m evaluation evaluate`, on the real Fashion-MNIST test split."""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import statistics

import pytest
from stores import fashion_mnist_or_skip

from evaluation.__main__ import run as main
from evaluation.record import QualityRecord
from imagegen.cli import main as imagegen_main
from model_store import ModelStore
from model_store.loading import load_module


def last_json(out: str) -> dict:
    """The JSON summary a command prints as its last stdout line (tests/evaluation runs on its own, without
    tests/imagegen's helpers on the path)."""
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_store_root):
    fashion_mnist_or_skip("test")
    root = tmp_path_factory.mktemp("eval") / "store"
    shutil.copytree(tiny_store_root, root)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = imagegen_main(["train", "--task", "eval-classifier", "--preset", "tiny", "--data", "fashion-mnist",
                              "--limit", "4096", "--steps", "150", "--batch-size", "64", "--lr", "2e-3",
                              "--warmup-steps", "5", "--ema-decay", "0.95", "--device", "cpu",
                              "--run-dir", str(root.parent / "run"), "--export-name", "fmnist-eval-classifier",
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
    # the floor at the tables' own sample size: FD's small-n bias lifts it above the 10,000-image one
    same = result["floor"]["same_n"]
    assert same["n"] == 20 and result["floor"]["fd"] < same["fd"] < noise


def test_unconditional_rows_have_no_accuracy(store, tmp_path):
    root, _ = store
    row = evaluate(root, tmp_path, "--per-class", "2", "--steps", "2", "--guidance-scale", "0")["setting"]
    assert row["accuracy"] is None


@pytest.mark.parametrize("flags, message", [
    (["--per-class", "1"], "--per-class"), (["--steps", "0"], "--steps"),
    (["--eta", "0.5", "--sampler", "heun"], "--eta"), (["--eval-classifier", "nope"], "--eval-classifier"),
    (["--tables", "spread", "--repeats", "1"], "--repeats"),
    (["--tables", "spread", "--paired-with", "ddim"], "--paired-with"),
    (["--tables", "spread", "--paired-with", "nope:5"], "--paired-with"),
    (["--paired-with", "ddim:5"], "--tables spread"),
])
def test_bad_flags_are_one_line_errors(store, tmp_path, capsys, flags, message):
    root, _ = store
    code = main(["evaluate", "--store", str(root), "--device", "cpu", "--out", str(tmp_path / "x.json"), *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err


def test_max_minutes_lists_the_settings_it_left_out(store, tmp_path):
    root, _ = store
    # the budget counts from the start: loading the models and the test set alone takes more than 0.06 s
    result = evaluate(root, tmp_path, "--tables", "guidance", "--per-class", "2", "--max-minutes", "0.001")
    assert "guidance_sweep" not in result
    left_out = result["not_measured"]
    assert [m["guidance_scale"] for m in left_out] == [0.0, 1.0, 1.1, 1.3, 1.5, 2.0, 3.0, 4.0, 6.0]
    assert all(m["table"] == "guidance_sweep" and "--max-minutes" in m["why"] for m in left_out)
    assert result["sampling"].startswith("worker engine")


def test_write_card_puts_the_tables_into_the_card_and_keeps_the_sha256(store, tmp_path):
    root, _ = store
    card_root = tmp_path / "store"
    shutil.copytree(root, card_root)
    before = ModelStore(card_root).resolve("fashion-mnist")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["evaluate", "--model", "fashion-mnist", "--store", str(card_root), "--device", "cpu",
                     "--tables", "floor", "--write-card", "--choose-defaults"])
    assert code == 0
    summary = last_json(buf.getvalue())
    after = ModelStore(card_root).resolve("fashion-mnist")
    assert summary["out"] is None and summary["card"].endswith("fashion-mnist/1/card.json")
    # the floor alone decides no defaults: they stay, and the command says so
    assert summary["defaults"] is None and after.defaults == before.defaults
    assert after.sha256 == before.sha256 and after.quality["floor"]["n"] == 10_000
    assert after.quality["device"] == "cpu" and after.quality["eval_classifier"].startswith("fmnist-eval-classifier@")
    load_module(ModelStore(card_root), after.ref)  # still passes its sha256 check


@pytest.mark.parametrize("flags, message", [
    (["--write-card"], "--tables"), (["--tables", "floor", "--choose-defaults", "--out", "x.json"], "--write-card"),
    ([], "--out FILE"), (["--max-minutes", "-1", "--out", "x.json"], "--max-minutes"),
    (["--fill-card", "--tables", "floor"], "--fill-card"),
    (["--guidance-classifier", "fmnist-classifier", "--fill-card"], "--guidance-classifier"),
    (["--tables", "spread", "--write-card", "--choose-defaults"], "decides no default"),
])
def test_card_flags_are_checked_before_anything_loads(store, tmp_path, capsys, flags, message):
    root, _ = store
    code = main(["evaluate", "--store", str(root), "--device", "cpu", *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err


def test_fill_card_measures_what_a_budget_left_out_with_the_cards_own_sample_size(store, tmp_path, capsys):
    root, _ = store
    card_root = tmp_path / "store"
    shutil.copytree(root, card_root)
    # a budget too small for any setting: the card gets the floor and lists the whole sweep as left out
    assert main(["evaluate", "--model", "fashion-mnist", "--store", str(card_root), "--device", "cpu",
                 "--per-class", "2", "--tables", "floor", "guidance", "--max-minutes", "0.001", "--write-card"]) == 0
    cards = ModelStore(card_root)
    written = cards.resolve("fashion-mnist")
    assert "guidance_sweep" not in written.quality and len(written.quality["not_measured"]) == 9
    assert QualityRecord.parse(written.quality).to_dict() == written.quality  # the record reads what was written
    # two of them keep the test short: the card of a run whose budget left out scales 1 and 2
    left_out = [m for m in written.quality["not_measured"] if m["guidance_scale"] in (1.0, 2.0)]
    before = cards.update_card(written, {"quality": {**written.quality, "not_measured": left_out}})
    capsys.readouterr()
    # the fill takes the card's 2 images per class, not the default 1000
    assert main(["evaluate", "--model", "fashion-mnist", "--store", str(card_root), "--device", "cpu", "--fill-card",
                 "--choose-defaults"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    after = cards.resolve("fashion-mnist")
    rows = after.quality["guidance_sweep"]
    assert [r["guidance_scale"] for r in rows] == [1.0, 2.0]
    assert all(r["n"] == 20 and r["commit"] and r["measured_at"] for r in rows)
    assert "not_measured" not in after.quality and "not_measured" not in summary
    assert after.quality["floor"] == before.quality["floor"] and after.sha256 == before.sha256
    assert after.defaults["guidance_scale"] == after.quality["defaults_choice"]["guidance_scale"]
    assert QualityRecord.parse(after.quality).to_dict() == after.quality
    # the same row as one setting measured at that size (seeds fixed)
    again = evaluate(root, tmp_path, "--per-class", "2", "--guidance-scale", "2")["setting"]
    assert again["fd"] == rows[1]["fd"] and again["accuracy"] == rows[1]["accuracy"]
    capsys.readouterr()
    # nothing left to fill: said in one line
    code = main(["evaluate", "--model", "fashion-mnist", "--store", str(card_root), "--device", "cpu", "--fill-card"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "nothing to fill" in err


def test_the_spread_repeats_the_default_setting_with_disjoint_seeds_and_draws_real_images(store, tmp_path):
    root, _ = store
    sp = evaluate(root, tmp_path, "--tables", "spread", "--repeats", "3", "--per-class", "2")["spread"]
    # the card's defaults (tests/stores.py): ddim 4 steps, cfg 2
    assert sp["setting"] == {"sampler": "ddim", "steps": 4, "guidance": "cfg", "guidance_scale": 2.0, "eta": 0.0}
    # 20 images per repeat; the tables' own seeds are 0..19, so the repeats start at 20, 40, 60
    assert sp["n"] == 20 and [r["seed"] for r in sp["repeats"]] == [20, 40, 60]
    fds = [r["fd"] for r in sp["repeats"]]
    assert len(set(fds)) == 3  # other seeds, other images, other FDs
    assert sp["fd"]["sd"] == round(statistics.stdev(fds), 4) and sp["fd"]["sd"] > 0
    assert (sp["fd"]["min"], sp["fd"]["max"]) == (min(fds), max(fds))
    assert sp["accuracy"]["mean"] == round(statistics.fmean(r["accuracy"] for r in sp["repeats"]), 4)
    # each repeat is the one setting measured from its first seed
    assert evaluate(root, tmp_path, "--per-class", "2", "--steps", "4", "--seed", "40")["setting"]["fd"] == fds[1]
    real = sp["floor"]
    assert real["n"] == 20 and real["seeds"] == [1, 2, 3] and len(set(real["fds"])) == 3
    assert real["fd"]["sd"] == round(statistics.stdev(real["fds"]), 4)
    assert sp["commit"] and sp["measured_at"] and sp["device"] == "cpu"


def test_a_spread_written_to_a_card_joins_its_tables_at_their_sample_size(store, tmp_path, capsys):
    root, _ = store
    card_root = tmp_path / "store"
    shutil.copytree(root, card_root)
    flags = ["evaluate", "--model", "fashion-mnist", "--store", str(card_root), "--device", "cpu"]
    # a card without tables: nothing for a spread to describe, said in one line
    assert main([*flags, "--tables", "spread", "--write-card"]) == 2
    assert "measure its tables first" in capsys.readouterr().err
    assert main([*flags, "--tables", "floor", "--per-class", "2", "--write-card"]) == 0
    before = ModelStore(card_root).resolve("fashion-mnist")
    # no --per-class: the card's 2 per class, not the default 1000
    assert main([*flags, "--tables", "spread", "--repeats", "2", "--write-card"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    after = ModelStore(card_root).resolve("fashion-mnist")
    assert after.quality["floor"] == before.quality["floor"] and after.sha256 == before.sha256
    sp = after.quality["spread"]
    assert sp["n"] == 20 and [r["seed"] for r in sp["repeats"]] == [20, 40]
    assert summary["spread"]["fd"] == sp["fd"] and summary["spread"]["floor_fd"] == sp["floor"]["fd"]


def test_a_paired_setting_is_measured_on_the_spreads_seeds_and_a_rerun_reuses_the_cards_repeats(store, tmp_path,
                                                                                                 capsys):
    root, _ = store
    card_root = tmp_path / "store"
    shutil.copytree(root, card_root)
    flags = ["evaluate", "--model", "fashion-mnist", "--store", str(card_root), "--device", "cpu"]
    assert main([*flags, "--tables", "floor", "--per-class", "2", "--write-card"]) == 0
    assert main([*flags, "--tables", "spread", "--repeats", "2", "--write-card"]) == 0
    first = ModelStore(card_root).resolve("fashion-mnist").quality["spread"]
    capsys.readouterr()
    assert main([*flags, "--tables", "spread", "--repeats", "2", "--paired-with", "dpmpp_2m:2", "--write-card"]) == 0
    assert "spread 1/2" not in capsys.readouterr().err  # the card's repeats are reused, not sampled again
    sp = ModelStore(card_root).resolve("fashion-mnist").quality["spread"]
    assert [{k: r[k] for k in ("seed", "fd", "sampling_seconds")} for r in sp["repeats"]] == \
        [{k: r[k] for k in ("seed", "fd", "sampling_seconds")} for r in first["repeats"]]
    assert all(r["commit"] == first["commit"] for r in sp["repeats"])
    paired = sp["paired"]
    assert paired["setting"]["sampler"] == "dpmpp_2m" and paired["setting"]["steps"] == 2
    assert [r["seed"] for r in paired["repeats"]] == [20, 40]
    assert paired["differences"] == [round(p["fd"] - b["fd"], 4) for p, b in zip(paired["repeats"], sp["repeats"])]
    assert paired["difference"]["sd"] == round(statistics.stdev(paired["differences"]), 4)
    card_quality = ModelStore(card_root).resolve("fashion-mnist").quality
    assert QualityRecord.parse(card_quality).to_dict() == card_quality  # the record reads the spread as written
    # each paired repeat is the one setting measured from its first seed
    again = evaluate(root, tmp_path, "--per-class", "2", "--sampler", "dpmpp_2m", "--steps", "2", "--seed", "40")
    assert again["setting"]["fd"] == paired["repeats"][1]["fd"]


def test_a_spread_measured_with_the_tables_that_choose_the_defaults_repeats_the_chosen_setting(store, tmp_path):
    root, _ = store
    card_root = tmp_path / "store"
    shutil.copytree(root, card_root)
    assert main(["evaluate", "--model", "fashion-mnist", "--store", str(card_root), "--device", "cpu",
                 "--per-class", "2", "--tables", "guidance", "spread", "--repeats", "2", "--write-card",
                 "--choose-defaults"]) == 0
    card = ModelStore(card_root).resolve("fashion-mnist")
    # the guidance sweep is DDIM 50 steps: the chosen defaults, not the card's earlier ddim 4 steps
    assert card.defaults["steps"] == 50
    assert card.quality["spread"]["setting"] == {k: card.defaults[k] for k in ("sampler", "steps", "guidance",
                                                                                  "guidance_scale")} | {"eta": 0.0}


def test_a_spread_cut_short_by_the_budget_says_how_many_repeats_it_left_out(store, tmp_path):
    root, _ = store
    sp = evaluate(root, tmp_path, "--tables", "spread", "--per-class", "2", "--max-minutes", "0.001")["spread"]
    assert sp["repeats"] == [] and sp["left_out"]["repeats"] == 5 and "--max-minutes" in sp["left_out"]["why"]
    assert "fd" not in sp and len(sp["floor"]["fds"]) == 5  # the real draws cost no sampling


def test_a_guidance_classifier_is_measured_on_the_noised_test_split_into_its_card(store, tmp_path, capsys):
    root, _ = store
    card_root = tmp_path / "store"
    shutil.copytree(root, card_root)
    out = tmp_path / "clf.json"
    assert main(["evaluate", "--guidance-classifier", "fmnist-classifier", "--store", str(card_root), "--device", "cpu",
                 "--out", str(out), "--write-card"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    card = ModelStore(card_root).resolve("fmnist-classifier")
    by_t = card.quality["test_accuracy_by_t"]
    assert list(by_t) == ["0", "100", "250", "500", "750", "900", "999"]
    assert all(0 <= a <= 1 for a in by_t.values()) and card.quality["test_images"] == 10_000
    assert card.quality["commit"] and card.quality["measured_on"] == "cpu"
    assert summary["test_accuracy_by_t"] == by_t == json.loads(out.read_text())["test_accuracy_by_t"]
    load_module(ModelStore(card_root), card.ref)  # the weights and their sha256 are untouched
    # a generator is not a guidance classifier: said in one line
    code = main(["evaluate", "--guidance-classifier", "fashion-mnist", "--store", str(card_root), "--device", "cpu",
                 "--write-card"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--guidance-classifier" in err
