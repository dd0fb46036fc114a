"""`python -m evaluation evaluate` samples through the worker's engine; on the CPU its images are those of the
plain sampling loop, bit for bit."""

from __future__ import annotations

import pytest
import torch

from diffusion.evaluation import generate_for_evaluation
from diffusion.sampling import SampleSpec, sample
from evaluation.budget import Budget, evaluations, network_rows
from evaluation.sampling import engine_sampler, forward_sizes, requests
from model_store import ModelStore
from model_store.loading import load_generator


@pytest.fixture(scope="module")
def gen(tiny_store_root):
    return load_generator(ModelStore(tiny_store_root), "fashion-mnist")


def specs_of(sampler: str, steps: int, guidance: str, scale: float, per_class: int = 2, classes: int = 3):
    return [SampleSpec(c, scale, guidance=guidance, sampler=sampler, steps=steps, seed=7 + c * per_class + i)
            for c in range(classes) for i in range(per_class)]


@pytest.mark.parametrize("sampler, steps, guidance, scale", [
    ("ddim", 3, "cfg", 2.0), ("heun", 2, "cfg", 1.0), ("ddpm", 3, "cfg", 0.0), ("dpmpp_2m", 3, "classifier", 2.0),
])
def test_engine_images_equal_the_plain_loop_on_the_cpu(gen, sampler, steps, guidance, scale):
    specs = specs_of(sampler, steps, guidance, scale)
    sample_batch, how = engine_sampler(gen, batch_images=4)
    # batches of 4 cut across classes: one engine job per class run inside each batch
    got = generate_for_evaluation(sample_batch, specs, 4)

    def plain(chunk):  # the loop `python -m evaluation evaluate` ran before, batch by batch (a batch of another size
        # may differ in the last bit: CPU kernels pick their blocking by batch size)
        return sample(gen.model, gen.schedule, chunk, gen.image_shape, gen.num_classes, classifier=gen.classifier,
                      clip_x0=gen.clip_x0)

    assert torch.equal(got, generate_for_evaluation(plain, specs, 4))
    assert "cpu" in how and "4 images" in how


def test_requests_group_consecutive_seeds_of_one_setting():
    specs = specs_of("ddim", 5, "cfg", 2.0, per_class=3, classes=2)
    reqs = requests(specs)
    assert [(r["class_label"], r["seed"], n) for r, n in reqs] == [(0, 7, 3), (1, 10, 3)]
    assert reqs[0][0] == {"class_label": 0, "guidance_scale": 2.0, "guidance": "cfg", "sampler": "ddim", "steps": 5,
                          "eta": 0.0, "seed": 7, "num_images": 3}
    # a gap in the seeds or another setting starts a new request
    broken = [SampleSpec(0, seed=1), SampleSpec(0, seed=2), SampleSpec(0, seed=4), SampleSpec(0, 2.0, seed=5)]
    assert [n for _, n in requests(broken)] == [2, 1, 1]
    assert requests([]) == []


def test_network_rows_count_heun_twice_and_cfg_doubles_only_between_0_and_1():
    assert evaluations("heun", 10) == 19 and evaluations("ddpm", 1000) == 1000
    assert network_rows("ddim", 50, "cfg", 3.0, 100) == 100 * 50 * 2
    assert network_rows("ddim", 50, "cfg", 1.0, 100) == network_rows("ddim", 50, "cfg", 0.0, 100) == 5000
    assert network_rows("heun", 10, "classifier", 4.0, 10) == 190


def test_the_budget_refuses_what_its_pace_says_will_not_fit():
    clock = [100.0]
    budget = Budget(60.0, started=100.0)
    budget.left = lambda: budget.seconds - (clock[0] - budget.started)  # a clock the test moves
    ddim = ("ddim", "cfg")
    assert budget.fits(ddim, 10**9) == (True, "")  # nothing timed yet: the first setting always starts
    budget.record(ddim, 1000, 10.0)  # 0.01 s a row
    clock[0] = 130.0  # 30 s left
    assert budget.fits(ddim, 2000)[0] is True  # 20 s
    ok, why = budget.fits(ddim, 4000)  # 40 s
    assert not ok and "about 40 s" in why and "30 s left" in why
    assert budget.fits(("ddim", "classifier"), 4000)[0] is False  # no pace of its own yet: the slowest known
    budget.record(("ddim", "classifier"), 1000, 1.0)
    assert budget.fits(("ddim", "classifier"), 4000)[0] is True
    clock[0] = 161.0
    assert budget.fits(ddim, 1) == (False, "--max-minutes (1) used up")
    assert Budget(None).fits(ddim, 10**12) == (True, "")


def test_the_budget_keeps_a_pace_per_sampler():
    """DDPM's per-image noise makes its rows dearer than DDIM's: a budget paced on DDIM alone would
    start a DDPM setting that cannot end in time."""
    budget = Budget(100.0, started=0.0)
    budget.left = lambda: 50.0
    budget.record(("ddim", "cfg"), 1000, 1.0)  # 1 ms a row
    budget.record(("heun", "cfg"), 1000, 2.0)
    budget.record(("ddim", "classifier"), 1000, 9.0)
    # a sampler not timed yet under CFG: the slowest CFG pace (heun's), not classifier guidance's
    assert budget.estimate(("ddpm", "cfg"), 10_000) == pytest.approx(20.0)
    budget.record(("ddpm", "cfg"), 1000, 4.0)  # 4 ms a row
    assert budget.fits(("ddim", "cfg"), 40_000)[0] is True  # 40 s at DDIM's pace
    ok, why = budget.fits(("ddpm", "cfg"), 40_000)  # 160 s at DDPM's
    assert not ok and "about 160 s" in why
    # a guidance kind never timed: the slowest of all
    assert budget.estimate(("euler", "other"), 1000) == pytest.approx(9.0)


def test_forward_sizes_are_the_full_and_last_batches_once_and_doubled():
    # 10,000 images in batches of 2,048: four full batches and one of 1,808, each once or CFG-doubled
    assert forward_sizes(10_000, 2048) == (1808, 2048, 3616, 4096)
    assert forward_sizes(20, 20) == (20, 40)
    assert forward_sizes(30, 10) == (10, 20)  # no shorter last batch
    assert forward_sizes(5, 2048) == (5, 10)  # one batch, smaller than the batch size
    with pytest.raises(ValueError):
        forward_sizes(0, 8)


@pytest.mark.parametrize("sampler, steps, guidance, scale", [
    ("ddim", 2, "cfg", 2.0), ("heun", 2, "cfg", 1.0), ("ddpm", 2, "cfg", 0.0), ("dpmpp_2m", 2, "classifier", 2.0),
])
def test_every_forward_pass_of_an_evaluation_has_a_captured_size(gen, sampler, steps, guidance, scale, monkeypatch):
    """The CUDA graphs the evaluation captures (forward_sizes) are the only sizes its batches run:
    counted here on the network itself, for each kind of prediction a setting needs."""
    seen: list[int] = []
    model = gen.model
    real_forward = model.forward

    def counting(x, t, y):
        seen.append(x.shape[0])
        return real_forward(x, t, y)

    monkeypatch.setattr(model, "forward", counting)
    per_class, classes, batch = 3, 3, 4  # 9 images: batches of 4, 4 and 1
    specs = specs_of(sampler, steps, guidance, scale, per_class=per_class, classes=classes)
    sample_batch, _ = engine_sampler(gen, batch_images=batch, images_per_setting=per_class * classes)
    generate_for_evaluation(sample_batch, specs, batch)
    assert seen and set(seen) <= set(forward_sizes(per_class * classes, batch)), seen
