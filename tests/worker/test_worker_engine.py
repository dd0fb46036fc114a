"""BatchEngine in-process: continuous batching gives each job what it gets alone, short jobs overtake
long ones, cancels and failures take out one job only."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from diffusion.sampling import SampleSpec, sample, specs_for_request
from model_store.loading import Generator
from worker.engine import BatchEngine, UnknownModel


def request(**fields) -> dict:
    base = {"model": "fashion-mnist", "class_label": 1, "num_images": 1, "guidance": "cfg",
            "guidance_scale": 1.0, "sampler": "ddim", "steps": 4, "eta": 0.0, "seed": 0}
    return {**base, **fields}


def alone(gen: Generator, req: dict) -> torch.Tensor:
    """The request run alone by the core's own driver loop."""
    spec = SampleSpec(req["class_label"], req["guidance_scale"], req["guidance"], req["sampler"], req["steps"],
                      req["eta"], req["seed"])
    return sample(gen.model, gen.schedule, specs_for_request(spec, req["num_images"]), gen.image_shape,
                  gen.num_classes, classifier=gen.classifier)


def assert_same(got: torch.Tensor, want: torch.Tensor) -> None:
    # the random tiny model's x_0 is in the hundreds; compare relative to that scale
    assert got.shape == want.shape
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-3), (got - want).abs().max()


def run_to_end(engine: BatchEngine, max_steps: int = 100) -> tuple[dict, dict, list]:
    finished, failed, steps = {}, {}, []
    for _ in range(max_steps):
        if not engine.jobs():
            return finished, failed, steps
        report = engine.step()
        finished.update(report.finished)
        failed.update(report.failed)
        steps.append(report)
    raise AssertionError("the engine did not finish its jobs")


def test_mixed_batch_gives_each_job_what_it_gets_alone(generators):
    engine = BatchEngine(generators, max_batch_images=64)
    jobs = {
        "ddim": request(class_label=1, guidance_scale=2.0, steps=6, seed=11, num_images=2),
        "ddpm": request(class_label=None, sampler="ddpm", steps=4, seed=5),
        "dpmpp": request(class_label=7, guidance_scale=3.5, sampler="dpmpp_2m", steps=5, seed=99),
        "heun": request(class_label=2, sampler="heun", steps=3, seed=3),
        "eta": request(class_label=0, guidance_scale=1.5, steps=5, eta=0.5, seed=21),
        "clf": request(class_label=3, guidance="classifier", guidance_scale=1.0, steps=4, seed=13),
        "plain": {**request(class_label=4, guidance_scale=0.0, sampler="euler", steps=3, seed=8), "model": "plain"},
    }
    late = {"late": request(class_label=5, guidance_scale=2.0, sampler="ddpm", steps=3, seed=77)}
    for job_id, req in jobs.items():
        engine.add(job_id, req["model"], req)
    assert engine.capacity() == 64 - 8
    first = engine.step()
    # one evaluation per model: every fashion-mnist image in one, the plain job in another
    assert sorted(first.batch_images) == [1, 7]
    for job_id, req in late.items():  # joins mid-flight, at its own first step
        engine.add(job_id, req["model"], req)
    finished, failed, _ = run_to_end(engine)
    assert not failed
    assert set(finished) == set(jobs) | set(late)
    for job_id, req in {**jobs, **late}.items():
        assert_same(finished[job_id], alone(generators[req["model"]], req))


def test_a_short_job_added_while_a_long_one_runs_finishes_first(generators):
    engine = BatchEngine(generators)
    engine.add("long", "fashion-mnist", request(steps=500, seed=1))
    for _ in range(3):
        engine.step()
    engine.add("short", "fashion-mnist", request(steps=5, seed=2, class_label=6))
    for n in range(1, 6):
        report = engine.step()
        assert report.batch_images == [2]  # both share every forward pass
        assert report.progress["long"] == (3 + n, 500)
        assert ("short" in report.finished) == (n == 5)
    assert engine.jobs() == ["long"]
    assert_same(report.finished["short"], alone(generators["fashion-mnist"], request(steps=5, seed=2, class_label=6)))


def test_cancel_takes_a_job_out_at_the_next_step(generators):
    engine = BatchEngine(generators)
    keep = request(steps=4, seed=3, num_images=2)
    engine.add("gone", "fashion-mnist", request(steps=4, seed=4, num_images=3))
    engine.add("keep", "fashion-mnist", keep)
    assert engine.step().batch_images == [5]
    assert engine.cancel(["gone", "unknown"]) == ["gone"]
    assert engine.jobs() == ["keep"] and engine.capacity() == 62
    report = engine.step()
    assert report.batch_images == [2] and "gone" not in report.progress
    finished, _, _ = run_to_end(engine)
    assert_same(finished["keep"], alone(generators["fashion-mnist"], keep))


class RaisesForClass(nn.Module):
    """The eps-model, except that any batch holding class `bad` raises, as a broken input might."""

    def __init__(self, model: nn.Module, bad: int):
        super().__init__()
        self.model, self.bad = model, bad

    def forward(self, x, t, y):
        if (y == self.bad).any():
            raise RuntimeError(f"cannot denoise class {self.bad}")
        return self.model(x, t, y)


def test_a_failing_job_fails_alone(generators):
    good = generators["fashion-mnist"]
    flaky = replace(good, model=RaisesForClass(good.model, bad=3))
    engine = BatchEngine({"fashion-mnist": flaky})
    jobs = {"ok": request(class_label=1, guidance_scale=2.0, steps=3, seed=1),
            "bad": request(class_label=3, steps=3, seed=2),
            "ddpm": request(class_label=None, sampler="ddpm", steps=3, seed=3, num_images=2)}
    for job_id, req in jobs.items():
        engine.add(job_id, "fashion-mnist", req)
    finished, failed, steps = run_to_end(engine)
    assert set(failed) == {"bad"} and set(finished) == {"ok", "ddpm"}
    assert failed["bad"].code == "model_error"
    assert "step 1 of 3" in failed["bad"].message and "cannot denoise class 3" in failed["bad"].message
    # the failing step was redone job by job; after it the rest ran as one batch again
    assert steps[0].batch_images == [1, 2] and steps[1].batch_images == [3]
    # the retry rewound the DDPM noise: the batch-mates still match their lone runs exactly
    for job_id in ("ok", "ddpm"):
        assert_same(finished[job_id], alone(good, jobs[job_id]))


def test_add_refuses_what_it_cannot_run_and_keeps_running_the_rest(generators):
    engine = BatchEngine(generators)
    engine.warm_up()  # a throwaway step: leaves nothing behind
    assert engine.jobs() == [] and engine.capacity() == 64
    engine.add("fine", "fashion-mnist@1", request())
    with pytest.raises(UnknownModel, match="'nope' is not loaded on this worker; it serves: fashion-mnist@1, plain@1"):
        engine.add("a", "nope", request())
    with pytest.raises(ValueError, match="plain@1 has none"):
        engine.add("b", "plain", request(guidance="classifier"))
    with pytest.raises(ValueError, match="steps must be in 1..1000"):
        engine.add("c", "plain", request(steps=0))
    with pytest.raises(ValueError, match="no 'seed' field"):
        engine.add("d", "plain", {k: v for k, v in request().items() if k != "seed"})
    with pytest.raises(ValueError, match="already running"):
        engine.add("fine", "plain", request())
    assert engine.jobs() == ["fine"]
    finished, failed, _ = run_to_end(engine)
    assert set(finished) == {"fine"} and not failed
