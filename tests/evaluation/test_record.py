"""The typed quality record (evaluation.record): parsed once from a card's `quality`, tolerant of
missing and malformed entries, and written back as the same JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from tables import CLASSIFIER, FLOOR, GUIDANCE, STEPS, quality, row, spread

from evaluation import paper_shapes
from evaluation.quality_card import write_quality
from evaluation.record import ClassifierQuality, Margin, QualityRecord, Setting
from evaluation.spread_section import spread_section
from model_store import ModelStore

SHIPPED = sorted((Path(__file__).resolve().parents[2] / "model_store" / "models").glob("*/*/card.json"))


def round_trip(q: dict) -> dict:
    return QualityRecord.parse(q).to_dict()


# --- the JSON stays as it is ---------------------------------------------------------------------


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.parent.name}@{p.parent.name}")
def test_shipped_cards_round_trip_byte_for_byte(path):
    text = path.read_text()
    card = json.loads(text)
    card["quality"] = round_trip(card["quality"])
    # the store writes cards so (model_store.store.update_card)
    assert json.dumps(card, indent=2, sort_keys=True) + "\n" == text


def test_the_shipped_generator_is_read_whole():
    card = json.loads(next(p for p in SHIPPED if p.parent.parent.name == "fashion-mnist" and p.parent.name == "2")
                      .read_text())
    record = QualityRecord.parse(card["quality"])
    assert len(record.guidance_sweep) == 9 and len(record.steps_sweep) == 21 and len(record.classifier_guidance) == 5
    assert record.floor_fd == 0.6441 and record.floor.fd == 0.0236 and record.floor.same_n == 200
    assert [r.seed for r in record.spread.repeats] == [200, 400, 600, 800, 1000]
    assert record.spread.paired.setting == Setting("ddpm", 50, "cfg", 2.0, 0.0) and record.spread.paired.one_sign
    assert record.table_margin == Margin(pytest.approx(2 * 0.634), True)
    assert record.defaults_choice.setting == Setting("dpmpp_2m", 50, "cfg", 2.0) and record.defaults_choice.measured
    assert record.provenance.per_class == 20 and record.provenance.device == "cpu" and not record.extra
    assert len(record.later_commits()) == 3 and record.best_guidance.guidance_scale == 2.0


def test_hand_made_tables_with_every_part_round_trip():
    q = quality(spread=spread(0.5), not_measured=[
        {"table": "steps_sweep", "sampler": "heun", "steps": 100, "guidance": "cfg", "guidance_scale": 1.3,
         "eta": 0.0, "why": "would pass --max-minutes (4)"}],
        steps_sweep=[{**r, "commit": "def456", "measured_at": "2026-11-29T00:00:00Z"} for r in STEPS])
    q["floor"] = {**FLOOR, "same_n": {"fd": 4.0, "n": 300}}
    q["spread"]["paired"] = {"setting": {**q["spread"]["setting"], "sampler": "ddpm"}, "differences": [0.4, 0.6],
                             "repeats": [{"seed": 10_000, "fd": 8.4, "accuracy": 0.9, "sampling_seconds": 9.0},
                                         {"seed": 20_000, "fd": 9.1, "accuracy": None, "sampling_seconds": 9.5}],
                             "difference": {"mean": 0.5, "sd": 0.14, "min": 0.4, "max": 0.6}}
    q["spread"]["left_out"] = {"why": "would pass --max-minutes (4)", "paired": 1}
    q["defaults_choice"] = {"sampler": "dpmpp_2m", "steps": 20, "guidance_scale": 3.0, "guidance": "cfg",
                            "measured": False, "rule": "a rule", "reason": "a reason"}
    q["an_unknown_key"] = {"kept": [1, 2]}
    assert round_trip(q) == q
    assert QualityRecord.parse(q).extra == {"an_unknown_key": {"kept": [1, 2]}}


def test_a_spread_cut_short_round_trips_as_the_measurement_writes_it():
    one = spread(0.5, fds=(8.0,))
    one["fd"] = one["accuracy"] = None  # stats of one repeat: null, as the measurement writes them
    one["left_out"] = {"why": "would pass --max-minutes (1)", "repeats": 2}
    assert round_trip({"spread": one}) == {"spread": one}
    none = {**spread(0.5), "repeats": [], "left_out": {"why": "--max-minutes (1) used up", "repeats": 3}}
    del none["fd"], none["accuracy"]  # no repeat: no stats at all
    assert round_trip({"spread": none}) == {"spread": none}


def test_a_card_written_from_results_round_trips(store):
    written, _ = write_quality(store, "fashion-mnist", quality(spread=spread(0.5)), choose=True)
    assert round_trip(written.quality) == written.quality


@pytest.fixture
def store(tmp_path, tiny_store_root) -> ModelStore:
    import shutil

    root = tmp_path / "store"
    shutil.copytree(tiny_store_root, root)
    return ModelStore(root)


# --- malformed entries are left out, once, here --------------------------------------------------


@pytest.mark.parametrize("q", [None, [], "tables", 3, {}])
def test_a_quality_that_is_not_a_dict_reads_as_empty(q):
    record = QualityRecord.parse(q)
    assert record == QualityRecord() and record.to_dict() == {}
    assert record.floor_fd is None and record.table_margin is None and record.later_commits() == []
    assert "Nothing to compare yet" in paper_shapes.comparisons(record)[0] and spread_section(record, {}) == []


def test_malformed_rows_are_left_out_and_the_rest_kept():
    bad = [None, "row", {"fd": 1.0}, row(fd=math.nan), row(fd=math.inf), {**row(), "fd": "8"}, {**row(), "fd": True},
           {**row(), "guidance_scale": None}, {**row(), "steps": 2.5}, {**row(), "sampler": 7}]
    record = QualityRecord.parse({"guidance_sweep": [*bad, *GUIDANCE], "steps_sweep": "not a list",
                                  "classifier_guidance": {"0": CLASSIFIER[0]}})
    assert [r.guidance_scale for r in record.guidance_sweep] == [r["guidance_scale"] for r in GUIDANCE]
    assert record.steps_sweep == () and record.classifier_guidance == ()
    # a missing guidance reads as CFG, a missing eta as 0, a wrong-typed accuracy or time as not measured
    lax = QualityRecord.parse({"steps_sweep": [{"sampler": "ddim", "steps": 10, "guidance_scale": 2, "fd": 3.0,
                                                "accuracy": "high", "sampling_seconds": "slow"}]}).steps_sweep[0]
    assert (lax.guidance, lax.eta, lax.accuracy, lax.seconds, lax.n) == ("cfg", 0.0, None, None, None)


def test_malformed_parts_read_as_absent():
    record = QualityRecord.parse({
        "floor": "low", "spread": [1, 2], "defaults_choice": {"sampler": "ddim"}, "per_class": "20", "seed": True,
        "device": 3, "not_measured": [None, {"why": "no table"}, {"table": "steps_sweep", "steps": "many"}],
        "guidance_sweep": GUIDANCE})
    assert record.floor is None and record.spread is None and record.defaults_choice is None
    p = record.provenance
    assert p.per_class is None and p.seed is None and p.device is None
    # an entry that names its table is kept for the doc; without a whole setting it is not refilled
    assert [(m.table, m.steps, m.setting) for m in p.not_measured] == [("steps_sweep", None, None)]
    broken_spread = QualityRecord.parse({"spread": {"repeats": [{"seed": 1}, {"seed": 2, "fd": 3.0}, "x"],
                                                    "fd": {"mean": 1.0, "sd": "wide"}, "floor": [0.6],
                                                    "paired": {"repeats": None, "differences": [0.1, "x"]}}}).spread
    assert [r.seed for r in broken_spread.repeats] == [2] and broken_spread.fd is None
    assert broken_spread.floor is None and broken_spread.paired.differences == (0.1,)
    # the renderers take what is left without failing
    text = "\n".join(paper_shapes.comparisons(record) + spread_section(QualityRecord(spread=broken_spread), {}))
    assert "**Agrees**" in text and "| 2 | 3.00 |" in text


def test_a_floor_without_its_full_size_fd_still_gives_the_same_n_floor():
    record = QualityRecord.parse({"floor": {"same_n": {"fd": 0.6, "n": 200}}})
    assert record.floor_fd == 0.6 and record.floor.fd is None
    assert QualityRecord.parse({"floor": {"what": "nothing measured"}}).floor is None


# --- the derived figures -------------------------------------------------------------------------


def test_the_margin_is_the_paired_one_where_measured_else_the_repeat_bound():
    q = quality(spread=spread(0.5))
    assert QualityRecord.parse(q).spread_margin == pytest.approx(2 * math.sqrt(2) * 0.5)
    assert QualityRecord.parse(q).table_margin == Margin(pytest.approx(2 * math.sqrt(2) * 0.5), False)
    q["spread"]["paired"] = {"setting": q["spread"]["setting"], "repeats": [], "differences": [],
                             "difference": {"mean": 0.7, "sd": 0.2, "min": 0.4, "max": 1.1}}
    margin = QualityRecord.parse(q).table_margin
    assert margin == Margin(pytest.approx(0.4), True) and margin.kind == "paired"
    assert margin.within(-0.4) and not margin.within(0.41)


def test_later_commits_and_the_best_guidance_row():
    q = quality(guidance_sweep=[{**r, "commit": "bbb", "measured_at": "2026-11-30T00:00:00Z"} for r in GUIDANCE[:3]]
                + GUIDANCE[3:], steps_sweep=[{**STEPS[0], "commit": "aaa", "measured_at": "2026-11-29T00:00:00Z"}])
    record = QualityRecord.parse(q)
    assert record.later_commits() == ["aaa", "bbb"] and len(record.rows_of_commit("bbb")) == 3
    assert record.best_guidance.guidance_scale == 1.3  # lowest FD above scale 0
    assert [r.guidance_scale for r in record.conditional_guidance] == [1.0, 1.1, 1.3, 1.5, 2.0, 3.0, 4.0, 6.0]


def test_a_classifier_cards_quality_is_read_tolerantly():
    q = ClassifierQuality.parse({"test_accuracy_by_t": {"0": 0.9, "500": "n/a", "999": 0.1}, "test_images": 10_000,
                                 "measured_on": "cpu", "commit": 7})
    assert q.accuracy_by_t == (("0", 0.9), ("999", 0.1)) and q.test_images == 10_000 and q.commit is None
    assert ClassifierQuality.parse(None) == ClassifierQuality() and ClassifierQuality.parse(
        {"test_accuracy": 0.933}).test_accuracy == 0.933
