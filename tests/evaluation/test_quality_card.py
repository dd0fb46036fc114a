"""The sampling defaults chosen from quality tables (issue #3's rule, evaluation/quality_card.py), and
the tables written into a generator's card without touching its weights."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys

import pytest
from tables import CLASSIFIER, FLOOR, GUIDANCE, STEPS, quality, record, row, rows, spread

from contract.request import check_defaults
from evaluation.quality_card import (
    NOTES_MARKER,
    ROW_ORDER,
    add_spread,
    card_quality,
    choose_defaults,
    choose_scale,
    choose_steps,
    fill_quality,
    filled_quality,
    notes_with,
    write_quality,
)
from model_store import ModelStore
from model_store.loading import load_generator

# --- the rule, on hand-made tables -----------------------------------------------------------------


def test_the_scale_is_the_lowest_fd_among_those_near_the_best_accuracy():
    chosen, why = choose_scale(rows(GUIDANCE))
    # best accuracy 0.99 (s = 6): 95% of it is 0.9405, which s = 3, 4 and 6 reach; s = 3 has the lowest FD
    assert chosen.guidance_scale == 3.0
    assert "FD 11" in why and "99.0%" in why and "8 at scale 1.3" in why


def test_a_lower_fd_without_the_accuracy_does_not_win():
    sweep = rows([row(scale=1.0, fd=5.0, accuracy=0.50), row(scale=2.0, fd=9.0, accuracy=0.96),
                  row(scale=4.0, fd=12.0, accuracy=1.0)])
    assert choose_scale(sweep)[0].guidance_scale == 2.0


def test_equal_fd_picks_the_smaller_scale_and_unconditional_rows_never_count():
    sweep = rows([row(scale=0.0, fd=1.0, accuracy=None), row(scale=4.0, fd=9.0, accuracy=0.95),
                  row(scale=2.0, fd=9.0, accuracy=0.95), row(scale=3.0, fd=9.0, accuracy=0.95)])
    assert choose_scale(sweep)[0].guidance_scale == 2.0
    assert choose_scale(rows([row(scale=0.0, fd=1.0, accuracy=None)])) is None
    assert choose_scale(rows([])) is None and choose_scale(rows(None)) is None


def test_steps_are_the_fewest_evaluations_within_ten_percent_of_the_best():
    chosen, why = choose_steps(rows(STEPS))
    # best FD 7.5 (DDPM 1000): within 8.25 the cheapest is DPM-Solver++ at 20 steps (Heun 20 costs 39)
    assert (chosen.sampler, chosen.steps) == ("dpmpp_2m", 20)
    assert "20 model evaluations" in why and "7.5" in why


def test_heun_pays_for_its_second_evaluation_and_ties_go_to_the_lower_fd_then_the_sampler_order():
    heun = rows([row("heun", 10, fd=8.0), row("dpmpp_2m", 20, fd=8.0), row("ddim", 100, fd=7.5)])
    assert (choose_steps(heun)[0].sampler, choose_steps(heun)[0].steps) == ("heun", 10)  # 19 < 20 evaluations
    same_cost = rows([row("euler", 20, fd=8.0), row("ddim", 20, fd=8.0), row("dpmpp_2m", 20, fd=7.9),
                      row("ddpm", 1000, fd=7.5)])
    assert choose_steps(same_cost)[0].sampler == "dpmpp_2m"  # the lower FD
    tie = rows([row("euler", 20, fd=8.0), row("ddim", 20, fd=8.0), row("ddpm", 1000, fd=7.5)])
    assert choose_steps(tie)[0].sampler == "ddim"  # then contract.names.SAMPLERS' order
    just_out = rows([row("ddim", 10, fd=8.26), row("ddim", 50, fd=7.5)])
    assert choose_steps(just_out)[0].steps == 50


def test_all_tables_give_defaults_the_card_accepts_and_say_when_the_combination_was_not_measured():
    current = {"sampler": "ddim", "steps": 50, "guidance_scale": 3.0, "guidance": "cfg", "eta": 0.0}
    choice = choose_defaults(record(quality()), current)
    assert choice.defaults == {"sampler": "dpmpp_2m", "steps": 20, "guidance_scale": 3.0, "guidance": "cfg"}
    check_defaults(choice.defaults, "chosen defaults")
    # the steps sweep ran at 1.3 (the best-FD scale), the chosen scale is 3
    assert choice.measured is False and "not itself a measured row" in choice.reason
    d = choice.to_dict()
    assert d["reason"] == choice.reason and "95%" in d["rule"] and "10%" in d["rule"] and d["measured"] is False


def test_a_steps_sweep_at_the_chosen_scale_makes_a_measured_choice():
    steps = [dict(r, guidance_scale=3.0) for r in STEPS]
    choice = choose_defaults(record(quality(steps_sweep=steps)))
    assert choice.measured is True and "not itself" not in choice.reason


def test_a_missing_table_is_said_and_what_it_decides_falls_back():
    no_steps = choose_defaults(record(quality(steps_sweep=None)))
    assert no_steps.defaults == {"sampler": "ddim", "steps": 50, "guidance_scale": 3.0, "guidance": "cfg"}
    assert no_steps.measured is True and "no steps sweep was measured" in no_steps.reason
    no_guidance = choose_defaults(record(quality(guidance_sweep=None)))
    assert no_guidance.defaults["guidance_scale"] == 1.3
    assert (no_guidance.defaults["sampler"], no_guidance.defaults["steps"]) == ("dpmpp_2m", 20)
    assert "no guidance sweep was measured" in no_guidance.reason and no_guidance.measured is True
    assert choose_defaults(record(quality(guidance_sweep=None, steps_sweep=None))) is None
    assert choose_defaults(record({"floor": FLOOR, "classifier_guidance": CLASSIFIER})) is None


def test_the_chooser_imports_no_torch():
    code = ("import sys, evaluation.record, evaluation.quality_card, evaluation.paper_shapes, evaluation.budget; "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


# --- notes -----------------------------------------------------------------------------------------

INTERIM_NOTES = ("Interim model: trained on a CPU. Sampling defaults (ddim, 50 steps, CFG 3) are placeholders, not yet "
                 "chosen from measured quality; the quality table is empty until the model is evaluated. x_0 clipping "
                 "is on. training.commit is the code it was trained with.")


def test_notes_lose_what_the_tables_make_false_and_keep_one_defaults_paragraph():
    once = notes_with(INTERIM_NOTES, f"{NOTES_MARKER} ddim, 20 steps.")
    assert "placeholder" not in once and "quality table is empty" not in once
    assert once.startswith("Interim model: trained on a CPU. x_0 clipping is on. training.commit is the code")
    twice = notes_with(once, f"{NOTES_MARKER} heun, 10 steps.")
    assert twice.count(NOTES_MARKER) == 1 and twice.endswith("heun, 10 steps.")
    assert notes_with(twice, None) == ("Interim model: trained on a CPU. x_0 clipping is on. training.commit is "
                                       "the code it was trained with.")


# --- writing the card ------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path, tiny_store_root) -> ModelStore:
    root = tmp_path / "store"
    shutil.copytree(tiny_store_root, root)
    return ModelStore(root)


def results(**overrides) -> dict:
    """`python -m evaluation evaluate --tables` results: the tables and provenance, plus what the card leaves out."""
    return {**quality(**overrides), "setting": {"ignored": True}, "extra": 1}


def test_write_quality_round_trip_keeps_the_weights_and_their_sha256(store):
    before = store.resolve("fashion-mnist")
    weights = store.weights_path(before).read_bytes()
    written, choice = write_quality(store, "fashion-mnist", results(), choose=True)
    again = ModelStore(store.root).resolve("fashion-mnist")
    assert again == written and again.ref == before.ref
    assert store.weights_path(again).read_bytes() == weights
    assert again.sha256 == before.sha256 == hashlib.sha256(weights).hexdigest()
    load_generator(store, again.ref)  # the sha256 check passes
    assert again.defaults == choice.defaults == {"sampler": "dpmpp_2m", "steps": 20, "guidance_scale": 3.0,
                                                 "guidance": "cfg"}
    q = again.quality
    assert q["guidance_sweep"] == GUIDANCE and q["steps_sweep"] == STEPS and q["classifier_guidance"] == CLASSIFIER
    assert q["floor"] == FLOOR and q["device"] == "NVIDIA H200" and q["commit"] == "abc123" and q["per_class"] == 1000
    assert q["eval_classifier"] == "fmnist-eval-classifier@1" and q["measured_at"]
    assert "setting" not in q and "extra" not in q
    assert q["defaults_choice"]["sampler"] == "dpmpp_2m" and q["defaults_choice"]["reason"] == choice.reason
    assert again.notes.count(NOTES_MARKER) == 1 and choice.reason in again.notes
    # everything that describes the weights is as it was
    for field in ("architecture", "schedule", "class_names", "links", "training", "created_at", "dtype", "sampling"):
        assert getattr(again, field) == getattr(before, field)
    assert not list(store.weights_path(again).parent.glob(".*tmp"))


def test_write_quality_without_choosing_keeps_the_defaults_and_a_rerun_replaces_the_tables(store):
    before = store.resolve("fashion-mnist")
    first, choice = write_quality(store, "fashion-mnist", results(), choose=False)
    assert choice is None and first.defaults == before.defaults and "defaults_choice" not in first.quality
    second, _ = write_quality(store, "fashion-mnist", {"floor": FLOOR, "device": "cpu"})
    assert second.quality == {"floor": FLOOR, "device": "cpu"}


def test_write_quality_refuses_results_without_tables_and_cards_of_classifiers(store):
    with pytest.raises(ValueError, match="none of the tables"):
        write_quality(store, "fashion-mnist", {"setting": {"fd": 1.0}})
    with pytest.raises(ValueError, match="not a generator"):
        write_quality(store, "fmnist-classifier", results())


def test_card_quality_keeps_tables_and_provenance_only():
    q = card_quality(results(not_measured=[{"table": "steps_sweep", "why": "time"}]))
    assert set(q) == {"guidance_sweep", "steps_sweep", "classifier_guidance", "floor", "model", "eval_classifier",
                      "per_class", "reference", "seed", "device", "torch", "commit", "measured_at", "sampling",
                      "not_measured"}


def test_a_spread_is_added_beside_the_tables_and_must_be_of_their_sample_size(store):
    written, _ = write_quality(store, "fashion-mnist", results(), choose=True)
    measured = {"per_class": 1000, "eval_classifier": "fmnist-eval-classifier@1", "spread": spread(0.5)}
    added, choice = add_spread(store, "fashion-mnist", measured)
    assert choice is None and added.quality == {**written.quality, "spread": spread(0.5)}
    assert added.defaults == written.defaults and added.notes == written.notes and added.sha256 == written.sha256
    again, _ = add_spread(store, "fashion-mnist", {**measured, "spread": spread(0.25)})  # a rerun replaces it
    assert again.quality["spread"]["fd"]["sd"] == 0.25
    with pytest.raises(ValueError, match="per_class 30"):
        add_spread(store, "fashion-mnist", {**measured, "per_class": 30})
    with pytest.raises(ValueError, match="hold no spread"):
        add_spread(store, "fashion-mnist", {k: v for k, v in measured.items() if k != "spread"})
    fresh = ModelStore(store.root)
    fresh.update_card(fresh.resolve("fashion-mnist"), {"quality": {}})
    with pytest.raises(ValueError, match="no quality tables"):
        add_spread(fresh, "fashion-mnist", measured)


# --- filling a card's left-out rows (python -m evaluation evaluate --fill-card) -----------------------------


def _left_out(rows: list[dict], table: str) -> list[dict]:
    return [{"table": table, **{k: r[k] for k in ("sampler", "steps", "guidance", "guidance_scale", "eta")},
             "why": "would pass --max-minutes"} for r in rows]


def _stamped(rows: list[dict]) -> list[dict]:
    return [{**r, "commit": "def456", "measured_at": "2026-11-29T00:00:00Z"} for r in rows]


def test_filled_rows_join_their_tables_in_order_and_leave_only_what_the_fill_left_out():
    # a card measured in a budget: the 20-step rows and the classifier table were left out
    short = [r for r in STEPS if r["steps"] != 20]
    card_q = quality(steps_sweep=short, classifier_guidance=None,
                     not_measured=_left_out([r for r in STEPS if r["steps"] == 20], "steps_sweep")
                     + _left_out(CLASSIFIER, "classifier_guidance"))
    added = _stamped([r for r in STEPS if r["steps"] == 20])
    still = _left_out(CLASSIFIER, "classifier_guidance")
    merged = filled_quality(card_q, {"steps_sweep": list(reversed(added)), "not_measured": still,
                                     "commit": "def456", "device": "other"})
    assert [(r["sampler"], r["steps"]) for r in merged["steps_sweep"]] == [(r["sampler"], r["steps"]) for r in STEPS]
    assert merged["not_measured"] == still and "classifier_guidance" not in merged
    # the provenance of the tables is the card's; the added rows carry their own
    assert merged["commit"] == card_q["commit"] and merged["device"] == card_q["device"]
    assert record(merged).later_commits() == ["def456"] and record(card_q).later_commits() == []
    assert card_q["steps_sweep"] == short  # the card's own quality is not changed in place
    done = filled_quality(merged, {"classifier_guidance": _stamped(CLASSIFIER[::-1])})
    assert "not_measured" not in done and [r["guidance_scale"] for r in done["classifier_guidance"]] == [0, 1, 2, 4, 8]


def test_later_commits_are_listed_oldest_first_whatever_the_tables_order():
    # the first fill added steps-sweep rows, a later one classifier-guidance rows (which come first in
    # ROW_ORDER, the order the tables are read in): the notes and the doc name the commits in the order
    # they were measured in
    card_q = quality(steps_sweep=[r for r in STEPS if r["steps"] != 20], classifier_guidance=None)
    first = filled_quality(card_q, {"steps_sweep": _stamped([r for r in STEPS if r["steps"] == 20])})
    later = [{**r, "commit": "789abc", "measured_at": "2026-11-30T00:00:00Z"} for r in CLASSIFIER]
    both = filled_quality(first, {"classifier_guidance": later})
    assert list(ROW_ORDER).index("classifier_guidance") < list(ROW_ORDER).index("steps_sweep")
    assert record(both).later_commits() == ["def456", "789abc"]


def test_fill_quality_chooses_again_from_the_fuller_tables_and_says_both_commits(store):
    # without the 20-step rows, the fewest evaluations within 10% of the best is a 50-step row
    write_quality(store, "fashion-mnist", results(steps_sweep=[r for r in STEPS if r["steps"] != 20]), choose=True)
    before = store.resolve("fashion-mnist")
    assert before.defaults["steps"] == 50 and "at commit abc123)" in before.notes
    added = {"steps_sweep": _stamped([r for r in STEPS if r["steps"] == 20])}
    after, choice = fill_quality(store, "fashion-mnist", added, choose=True)
    assert after.defaults == choice.defaults
    assert (choice.defaults["sampler"], choice.defaults["steps"]) == ("dpmpp_2m", 20)
    assert after.sha256 == before.sha256 and after.notes.count(NOTES_MARKER) == 1
    assert "at commits abc123 and def456" in after.notes
    # without choosing, a fill keeps the defaults and their paragraph
    kept, none = fill_quality(store, "fashion-mnist", {"classifier_guidance": _stamped(CLASSIFIER)})
    assert none is None and kept.defaults == after.defaults and kept.notes == after.notes
