"""docs/model-card.md rendered from a card: tables with the floor, plots, the comparison with the
papers from measured numbers only, and a card with no tables saying they are owed."""

from __future__ import annotations

import math
import shutil

import pytest
from PIL import Image
from tables import CLASSIFIER, STEPS, quality, record, row, spread

from evaluation import model_card as model_card_doc
from evaluation import paper_shapes
from evaluation import plots as model_card_plots
from evaluation import readme as model_card_readme
from evaluation.__main__ import run as evaluation_main
from evaluation.quality_card import add_spread, fill_quality, write_quality
from model_store import ModelStore

VERDICTS = ("**Agrees", "**Differs")


@pytest.fixture
def store(tmp_path, tiny_store_root) -> ModelStore:
    root = tmp_path / "store"
    shutil.copytree(tiny_store_root, root)
    return ModelStore(root)


def render(store: ModelStore, tmp_path, *flags) -> str:
    out = tmp_path / "docs" / "model-card.md"
    assert evaluation_main(["model-card", "--store", str(store.root), "--out", str(out), *flags]) == 0
    return out.read_text()


def test_a_card_without_tables_says_they_are_owed_and_claims_no_shape(store, tmp_path):
    doc = render(store, tmp_path)
    assert "# Model card: `fashion-mnist@1`" in doc
    assert "Not measured yet" in doc and "owed to a GPU run" in doc and "gpu-runbook.md" in doc
    assert "Nothing to compare yet" in doc and not any(v in doc for v in VERDICTS)
    assert "not chosen from measured tables" in doc
    assert not list((tmp_path / "docs" / "images").glob("*.png"))  # no plot of numbers that do not exist


def test_full_tables_render_with_the_floor_plots_defaults_and_verdicts(store, tmp_path):
    write_quality(store, "fashion-mnist", quality(not_measured=[
        {"table": "steps_sweep", "sampler": "heun", "steps": 100, "guidance": "cfg", "guidance_scale": 1.3,
         "why": "would pass --max-minutes (4)"}]), choose=True)
    doc = render(store, tmp_path)
    images = tmp_path / "docs" / "images"
    for name in (model_card_doc.TRADEOFF_PNG, model_card_doc.STEPS_PNG):
        with Image.open(images / name) as im:
            assert im.format == "PNG" and im.width > 300
        assert f"](images/{name})" in doc
    assert "**Floor**" in doc and "**2.00**" in doc and "4.0x" in doc  # FD 8 at s = 1.3 is 4 times the floor of 2
    assert "| **3** (default) | 11.00 | 5.5x | 97.0% |" in doc
    assert "| ddpm | 40.00 (88.0%) | 25.00 (88.0%) | 14.00 (88.0%) | 10.00 (88.0%) | 7.50 (88.0%) |" in doc
    assert "| heun | 8.40 (88.0%) | 7.90 (88.0%) | 7.80 (88.0%) | 7.70 (88.0%) | – |" in doc
    assert ("sampler `dpmpp_2m`, steps `20`, guidance `cfg`, guidance_scale `3.0` (this exact combination was not "
            "measured)") in doc
    assert "heun 100 steps, cfg scale 1.3: would pass --max-minutes (4)" in doc
    assert "Measured on NVIDIA H200" in doc and "`abc123`" in doc
    # the designed shapes: each paper's claim agrees
    assert "FD lowest at a small scale above 1: **Agrees**.\n  FD 8.00 at s = 1.3, against 12.00 at s = 1 and " \
           "20.00 at s = 6" in doc
    assert "rising with the scale: **Agrees**.\n  80.0% at s = 1 to 99.0% at s = 6, never falling." in doc
    assert "DDPM at 10 to 50 steps: **Agrees**.\n  FD of DDIM against DDPM by steps: 12.00 against 40.00 at 10, " \
           "9.00 against 25.00 at 20, 8.00 against 14.00 at 50, 7.80 against 10.00 at 100." in doc
    assert "of the best FD: **Agrees**.\n  dpmpp_2m 20 steps: FD 8.10, 8.0% above the best (ddpm 1000 steps, " \
           "7.50)" in doc
    assert "is 3.8 times the FD of real training images (2.00)" in doc
    assert not any(v in doc for v in ("**Differs",))


def test_a_grid_sampled_from_the_card_is_captioned_with_its_own_settings(store, tmp_path):
    doc = render(store, tmp_path, "--sample-grid", "--grid-per-class", "2", "--device", "cpu")
    grid = tmp_path / "docs" / "images" / model_card_doc.GRID_PNG
    with Image.open(grid) as im:
        # 10 rows of 2 images of 28 pixels with 2-pixel padding, shown twice the size
        assert im.size == (2 * (2 * 30 + 2), 2 * (10 * 30 + 2))
    assert model_card_doc.grid_settings(grid) == {"model": "fashion-mnist@1", "per_class": 2, "sampler": "ddim",
                                                  "steps": 4, "guidance": "cfg", "guidance_scale": 2.0}
    assert "2 seeds each, sampled from fashion-mnist@1 with ddim, 4 steps, cfg scale 2.0" in doc


def test_shapes_that_differ_are_said_with_the_numbers():
    q = quality(guidance_sweep=[row(scale=1.0, fd=8.0, accuracy=0.9), row(scale=2.0, fd=9.0, accuracy=0.8),
                                row(scale=4.0, fd=12.0, accuracy=0.7)],
                steps_sweep=[row("ddim", 10, fd=20.0), row("ddpm", 10, fd=15.0), row("ddim", 20, fd=9.0),
                             row("ddpm", 20, fd=12.0), row("dpmpp_2m", 20, fd=11.0)])
    text = "\n".join(paper_shapes.comparisons(record(q)))
    assert "above 1: **Differs**.\n  FD 8.00 at s = 1, against 12.00 at s = 4: guidance does not lower it." in text
    assert "rising with the scale: **Differs**.\n  90.0% at s = 1 to 70.0% at s = 4: no rise." in text
    assert "DDPM at 10 to 50 steps: **Agrees in part**." in text and "DDIM lower at 20 steps, not at 10." in text
    assert "of the best FD: **Differs**.\n  dpmpp_2m 20 steps: FD 11.00, 22.2% above the best (ddim 20 steps, 9.00)" \
        in text


def test_rising_past_the_largest_scale_and_dips_are_not_called_agreement_outright():
    q = {"guidance_sweep": [row(scale=1.0, fd=12.0, accuracy=0.8), row(scale=2.0, fd=10.0, accuracy=0.9),
                            row(scale=3.0, fd=9.0, accuracy=0.85), row(scale=4.0, fd=8.0, accuracy=0.95)]}
    text = "\n".join(paper_shapes.cfg_shape(record(q)))
    assert "FD lowest at a small scale above 1: **Differs**." in text and "its minimum was not reached" in text
    assert "rising with the scale: **Agrees in part**." in text and "s = 2 to 3: 90.0% to 85.0%" in text


def test_the_repeat_spread_says_which_differences_the_seeds_alone_could_make():
    # sd 0.5: differences up to 2 x sqrt(2) x 0.5 = 1.41 are within the spread
    text = "\n".join(paper_shapes.comparisons(record(quality(spread=spread(0.5)))))
    # lowest FD 8.00 at s = 1.3; 8.50 (s = 1.5) and 9.00 (s = 2) are within 1.41 of it, 10.00 (s = 1.1) is not
    assert "Within the repeat margin (1.41) of the lowest: s = 1.5 (8.50) and s = 2 (9.00)." in text
    # DDIM against DDPM: 28, 16 and 6 apart at 10, 20 and 50 steps
    assert "The differences are beyond the repeat margin (1.41) at 10, 20 and 50 steps." in text
    # dpmpp_2m 20 (8.10) against the best (ddpm 1000, 7.50): 0.6 apart
    assert "8.0% above the best (ddpm 1000 steps, 7.50); difference 0.6, within the repeat margin (1.41)." in text
    assert "DDPM at 1000 steps: 7.50, DDIM's best 7.80 (100 steps); difference 0.3, within the repeat margin " \
           "(1.41)." in text
    # best classifier guidance 10.50 against best CFG 8.00
    assert "against CFG's 8.00 (s = 1.3, 88.0%); difference 2.50, beyond the repeat margin (1.41)." in text
    # a larger spread swallows the 50-step gap (6) too: 2 x sqrt(2) x 3 = 8.49
    wide = "\n".join(paper_shapes.ddim_shape(record(quality(spread=spread(3.0)))))
    assert "The differences are beyond the repeat margin (8.49) at 10 and 20 steps, within it at 50." in wide
    # without a spread nothing is said about it
    assert "margin" not in "\n".join(paper_shapes.comparisons(record(quality())))


def test_a_measured_paired_spread_becomes_the_margin_of_the_tables_own_differences(store, tmp_path):
    q = quality(spread=spread(0.5))
    q["spread"]["paired"] = {"setting": {**q["spread"]["setting"], "sampler": "ddpm"}, "differences": [0.4, 0.6, 1.1],
                             "repeats": [row("ddpm", 20, fd=fd) for fd in (8.4, 9.1, 8.6)],
                             "difference": {"mean": 0.7, "sd": 0.2, "min": 0.4, "max": 1.1}}
    # 2 sd of the paired difference, 0.4, not the independent bound 1.41
    assert record(q).table_margin == (pytest.approx(0.4), True)
    text = "\n".join(paper_shapes.comparisons(record(q)))
    assert "Within the paired margin (0.4) of the lowest: no other scale." in text
    assert "difference 0.3, within the paired margin (0.4)" in text  # ddpm 1000 vs ddim 100
    assert "difference 0.6, beyond the paired margin (0.4)" in text  # dpmpp_2m 20 vs the best
    write_quality(store, "fashion-mnist", q, choose=True)
    doc = render(store, tmp_path)
    # the paired repeats beside the spread's own, on the same seed ranges
    assert "beside it, ddpm 20 steps on the same seed ranges (commit `def456`, 2026-11-29):" in doc
    assert "| seeds from | FD | accuracy | seconds | ddpm 20 steps FD (accuracy) | difference |" in doc
    assert "| 10000 | 8.00 | 90.0% | 10 | 8.40 (90.0%) | +0.40 |" in doc
    assert "| 20000 | 8.50 | 90.0% | 10 | 9.10 (90.0%) | +0.60 |" in doc
    assert "| 30000 | 7.50 | 90.0% | 10 | 8.60 (90.0%) | +1.10 |" in doc
    assert "| mean ± sd | 8.00 ± 0.5 | 90.0% ± 1.0 points |  |  | +0.70 ± 0.2 |" in doc
    assert "| min to max | 7.50 to 8.50 | 89.0% to 91.0% |  |  | +0.40 to +1.10 |" in doc
    assert "on the same 3 seed ranges, ddpm 20 steps differs from the default by +0.70 ± 0.2 (all 3 of one sign;" in doc
    # against sqrt(2) x 0.5 = 0.707 for independent seeds: 1 - (0.2 / 0.707)^2 = 92% of the variance cancelled
    assert "sharing them cancelled about 92% of the variance for this pair, a rough figure from 3 repeats)" in doc
    assert "take 2 sd of it, 0.4, as the paired margin within which the seeds alone could make a difference" in doc
    summary = model_card_readme.readme_quality(store.resolve("fashion-mnist"))
    assert "on the same seed ranges, ddpm 20 steps differs from the default with a standard deviation of 0.2, so " \
           "differences between rows up to 0.4 could be the seeds alone." in summary


def test_the_spread_section_shows_each_repeat_and_the_margin_it_implies(store, tmp_path):
    write_quality(store, "fashion-mnist", quality(), choose=True)
    doc = render(store, tmp_path)
    assert "How far FD moves between repeats" not in doc
    add_spread(store, "fashion-mnist", {"per_class": 1000, "eval_classifier": "fmnist-eval-classifier@1",
                                        "spread": spread(0.5)})
    doc = render(store, tmp_path)
    section = doc.split("### How far FD moves between repeats")[1].split("###")[0]
    assert ("The default setting (dpmpp_2m 20 steps, cfg scale 3) measured again with 3 other seed ranges of "
            "10,000") in section
    assert "commit `def456`, 2026-11-29" in section
    assert "| 20000 | 8.50 | 90.0% | 10 |" in section
    assert "| mean ± sd | 8.00 ± 0.5 | 90.0% ± 1.0 points |  |" in section
    assert "| min to max | 7.50 to 8.50 | 89.0% to 91.0% |  |" in section
    assert "Real training images, 3 random draws of 10,000: FD 2.00 ± 0.1 (1.90 to 2.10)." in section
    assert "differ by at most 1.41" in section and "share their seeds, so their differences are paired" in section
    # the tables are still the card's own
    assert "| **3** (default) | 11.00 | 5.5x | 97.0% |" in doc
    summary = model_card_readme.readme_quality(store.resolve("fashion-mnist"))
    assert "the default setting's FD moves with a standard deviation of 0.5 (mean 8.00): FDs measured with " \
           "independent seeds that differ by at most 1.41 cannot be told apart" in summary
    assert "moves with" not in model_card_readme.readme_quality(write_quality(store, "fashion-mnist", quality())[0])
    add_spread(store, "fashion-mnist", {"per_class": 1000, "eval_classifier": "fmnist-eval-classifier@1",
                                        "spread": spread(0.5)})
    # a spread of another setting than the card's defaults is not called the default's
    other = spread(0.5)
    other["setting"] = {**other["setting"], "sampler": "ddim", "steps": 50}
    add_spread(store, "fashion-mnist", {"per_class": 1000, "eval_classifier": "fmnist-eval-classifier@1",
                                        "spread": other})
    assert "The setting (ddim 50 steps, cfg scale 3) measured again" in render(store, tmp_path)


def test_the_plots_show_the_repeat_spread(tmp_path):
    q = record(quality(spread=spread(0.5)))
    steps = q.steps_sweep
    low, high = model_card_plots.spread_band(q, steps)
    assert low == 7.5 and high == pytest.approx(7.5 + 2 * math.sqrt(2) * 0.5)  # best: ddpm 1000 steps
    assert model_card_plots.spread_band(record(quality()), steps) is None
    # drawn: error bars on the guidance sweep, the band on the steps plot; without a spread, neither
    for name, plot in (("steps", lambda qq, path: model_card_plots.plot_steps(qq, path)),
                       ("tradeoff", lambda qq, path: model_card_plots.plot_tradeoff(qq, 3.0, path))):
        assert plot(q, tmp_path / f"{name}-spread.png") and plot(record(quality()), tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}-spread.png").read_bytes() != (tmp_path / f"{name}.png").read_bytes()


def test_missing_tables_are_not_compared():
    only_guidance = record(quality(steps_sweep=None, classifier_guidance=None, floor=None))
    text = "\n".join(paper_shapes.comparisons(only_guidance))
    assert "**Not compared**: the steps sweep has no DDIM and DDPM rows" in text
    assert "**Not compared**: the steps sweep has no dpmpp_2m row at 20 steps" in text
    assert "**Not compared**: the card has fewer than two classifier-guidance rows" in text
    assert "floor" not in text.lower()
    no_ddpm = record(quality(steps_sweep=[r for r in STEPS if r["sampler"] != "ddpm"]))
    assert "**Not compared**: the steps sweep has no DDIM and DDPM rows" in "\n".join(paper_shapes.ddim_shape(no_ddpm))
    too_few = {"guidance_sweep": [row(scale=0.0, fd=3.0, accuracy=None), row(scale=1.0, fd=2.0),
                                  row(scale=2.0, fd=1.0)]}
    assert "Not compared" in "\n".join(paper_shapes.cfg_shape(record(too_few)))


def test_partial_tables_render_what_exists_and_say_what_does_not(store, tmp_path):
    write_quality(store, "fashion-mnist", quality(steps_sweep=None, classifier_guidance=None), choose=True)
    doc = render(store, tmp_path)
    assert (tmp_path / "docs" / "images" / model_card_doc.TRADEOFF_PNG).exists()
    assert not (tmp_path / "docs" / "images" / model_card_doc.STEPS_PNG).exists()
    steps_section = doc.split("### Steps sweep")[1].split("###")[0]
    assert "Not measured." in steps_section and "|" not in steps_section
    assert "no steps sweep was measured" in doc
    assert "FD of DDIM against DDPM" not in doc and "**Not compared**: the steps sweep" in doc


def test_small_n_tables_are_divided_by_the_floor_at_their_own_n(store, tmp_path):
    floor = {"fd": 2.0, "n": 10_000, "what": "training images against the test set", "same_n": {"fd": 4.0, "n": 300}}
    write_quality(store, "fashion-mnist", quality(floor=floor, per_class=30), choose=True)
    doc = render(store, tmp_path)
    assert "**4.00** with 300 training images, the tables' sample size, and 2.00 with 10,000" in doc
    assert "| **3** (default) | 11.00 | 2.8x | 97.0% |" in doc  # 11 / 4, not 11 / 2
    # the best FD (ddpm 1000, 7.50) against the floor at the same n too
    assert "is 1.9 times the FD of as many real training images (4.00 with 300; 2.00 with 10,000)." in doc


def test_a_warm_started_model_says_what_it_continued(store, tmp_path):
    before = {"steps": 2500, "batch_size": 64, "lr": 0.0005, "seconds": 4880.0, "device": "cpu"}
    store.update_card("fashion-mnist", {"training": {**store.resolve("fashion-mnist").training, "steps": 4000,
                                                     "init_from": "fashion-mnist@1", "init_training": before,
                                                     "total_steps": 6500}})
    doc = render(store, tmp_path)
    assert "| warm-started from | `fashion-mnist@1` (2500 steps at batch 64, lr 0.0005, 81.3 min on cpu) |" in doc
    assert "| optimizer steps in all | 6500 |" in doc and "| optimizer steps | 4000 |" in doc


def test_the_readme_summary_is_rewritten_between_its_markers(store, tmp_path):
    readme = tmp_path / "README.md"
    begin, end = model_card_readme.README_BEGIN, model_card_readme.README_END
    readme.write_text(f"# x\n\nbefore\n{begin}\nold text\n{end}\nafter\n")
    assert evaluation_main(["model-card", "--store", str(store.root), "--out", str(tmp_path / "doc.md"),
                                "--readme", str(readme)]) == 0
    assert "has no measured quality table yet" in readme.read_text() and "old text" not in readme.read_text()
    write_quality(store, "fashion-mnist", quality(), choose=True)
    model_card_readme.write_readme_quality(readme, store.resolve("fashion-mnist"))
    text = readme.read_text()
    assert text.startswith("# x\n\nbefore\n") and text.endswith(f"{model_card_readme.README_END}\nafter\n")
    assert "on NVIDIA H200 (commit `abc123`), 10,000 images per setting (1000 per class)" in text
    assert "| **3** (default) | 11.00 | 5.5x | 97.0% |" in text and "| heun | 8.40 (88.0%) |" in text
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="no <!-- quality:begin"):
        model_card_readme.write_readme_quality(readme, store.resolve("fashion-mnist"))


def test_rows_added_by_a_fill_say_their_own_commit_in_the_doc_and_the_readme(store, tmp_path):
    write_quality(store, "fashion-mnist", quality(classifier_guidance=None), choose=True)
    fill_quality(store, "fashion-mnist", {"classifier_guidance": [
        {**r, "commit": "def4567890", "measured_at": "2026-11-29T00:10:00Z"} for r in CLASSIFIER]})
    doc = render(store, tmp_path)
    assert "Rows added later by `python -m evaluation evaluate --fill-card`" in doc
    assert "5 at commit `def4567` (2026-11-29)" in doc
    assert "### Classifier guidance beside CFG" in doc and "| 2 | 10.50 |" in doc
    readme = tmp_path / "README.md"
    readme.write_text(f"{model_card_readme.README_BEGIN}\n{model_card_readme.README_END}\n")
    model_card_readme.write_readme_quality(readme, store.resolve("fashion-mnist"))
    assert "(commit `abc123`; rows added later at `def4567`)" in readme.read_text()
    # a card measured in one go says no such thing
    write_quality(store, "fashion-mnist", quality(), choose=True)
    assert "added later" not in render(store, tmp_path)


def test_the_classifier_guidance_table_names_its_classifier_and_its_measured_accuracy(store, tmp_path):
    write_quality(store, "fashion-mnist", quality(), choose=True)
    section = lambda doc: doc.split("### Classifier guidance beside CFG")[1].split("###")[0]  # noqa: E731
    assert "Guided by `fmnist-classifier@1`, whose card has no measured held-out accuracy." in \
        section(render(store, tmp_path))
    store.update_card("fmnist-classifier", {"quality": {"test_accuracy_by_t": {"0": 0.91, "500": 0.6, "999": 0.1},
                                                        "test_images": 10_000, "measured_on": "cpu",
                                                        "commit": "fedcba98"}})
    assert ("Guided by `fmnist-classifier@1`; its accuracy on the 10,000 test images noised to each level (measured on "
            "cpu, commit `fedcba9`): t = 0: 91.0%, t = 500: 60.0%, t = 999: 10.0%.") in section(render(store, tmp_path))
