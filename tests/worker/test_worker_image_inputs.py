"""img2img, inpainting and previews in the batching engine: a batch that mixes them with plain
generation gives each job what it gets alone, and previews come every few steps."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from contract.request import GenerateSettings
from diffusion.images import from_png
from diffusion.sampling import SampleSpec, sample, specs_for_request
from model_store.loading import Generator
from worker.engine import PREVIEWS_PER_JOB, BatchEngine, decode_inputs


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array.astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


# a 28x28 input with structure (a bright square on a gradient) and a mask regenerating the left half
INIT = png(np.clip(np.add.outer(np.arange(28) * 4, np.arange(28) * 3), 0, 255)
           + np.pad(np.full((10, 10), 60), 9))
LEFT_HALF = png(np.concatenate([np.full((28, 14), 255), np.zeros((28, 14))], axis=1))


def request(**fields) -> dict:
    base = {"model": "fashion-mnist", "class_label": 1, "num_images": 2, "guidance": "cfg",
            "guidance_scale": 2.0, "sampler": "ddim", "steps": 6, "eta": 0.0, "seed": 0,
            "strength": 1.0, "resample_steps": 1, "previews": False}
    return {**base, **fields}


def alone(gen: Generator, req: dict, inputs: dict[str, bytes]) -> torch.Tensor:
    """The request run alone by the core's driver loop, its inputs decoded independently."""
    settings = GenerateSettings.from_record(req)
    spec, n = SampleSpec(**settings.sampled()), settings.num_images
    init = from_png(inputs["init_image"], 1) if "init_image" in inputs else None
    mask = (from_png(inputs["mask"], 1) > 0).float() if "mask" in inputs else None
    return sample(gen.model, gen.schedule, specs_for_request(spec, n), gen.image_shape, gen.num_classes,
                  classifier=gen.classifier, clip_x0=gen.clip_x0, init_images=[init] * n, masks=[mask] * n)


def run(engine: BatchEngine) -> tuple[dict, dict, list]:
    finished, previews, reports = {}, {}, []
    for _ in range(200):
        if not engine.jobs():
            return finished, previews, reports
        report = engine.step()
        assert not report.failed, report.failed
        finished.update(report.finished)
        for job, x0 in report.previews.items():
            previews.setdefault(job, []).append((report.progress[job][0], x0))
        reports.append(report)
    raise AssertionError("the engine did not finish its jobs")


def test_decode_inputs_gives_the_input_in_model_space_and_a_binary_mask():
    init, mask = decode_inputs({"init_image": INIT, "mask": LEFT_HALF}, channels=1)
    assert init.shape == (1, 28, 28) and mask.shape == (1, 28, 28)
    assert init.min() >= -1 and init.max() <= 1
    assert mask[:, :, :14].eq(1).all() and mask[:, :, 14:].eq(0).all()
    assert decode_inputs({}, channels=1) == (None, None)


def test_a_batch_mixing_generation_img2img_and_inpainting_gives_each_job_what_it_gets_alone(generators):
    gen = generators["fashion-mnist"]
    jobs = {
        "plain": (request(seed=10), {}),
        "img2img": (request(seed=20, strength=0.5, class_label=3), {"init_image": INIT}),
        "img2img-ddpm": (request(seed=25, strength=0.7, sampler="ddpm", steps=5), {"init_image": INIT}),
        "inpaint": (request(seed=30, class_label=7, sampler="dpmpp_2m"), {"init_image": INIT, "mask": LEFT_HALF}),
        "repaint": (request(seed=40, resample_steps=3, sampler="heun", steps=3),
                    {"init_image": INIT, "mask": LEFT_HALF}),
        "both": (request(seed=50, strength=0.6, class_label=2), {"init_image": INIT, "mask": LEFT_HALF}),
    }
    engine = BatchEngine(generators, max_batch_images=64)
    for job_id, (req, inputs) in jobs.items():
        engine.add(job_id, "fashion-mnist", req, inputs)
    finished, _, reports = run(engine)
    # they really shared model evaluations: the first step evaluated every image of every job
    assert reports[0].batch_images == [2 * len(jobs)]
    for job_id, (req, inputs) in jobs.items():
        want = alone(gen, req, inputs)
        assert torch.allclose(finished[job_id], want, rtol=1e-4, atol=1e-4), \
            (job_id, (finished[job_id] - want).abs().max())


def test_strength_0_returns_the_input_without_a_model_evaluation(generators):
    engine = BatchEngine(generators, max_batch_images=64)
    engine.add("copy", "fashion-mnist", request(strength=0.0), {"init_image": INIT})
    assert engine.progress("copy") == (0, 0)
    report = engine.step()
    assert report.batch_images == []
    want = from_png(INIT, 1)
    assert torch.equal(report.finished["copy"], torch.stack([want, want]))


def test_an_all_keep_mask_returns_the_input(generators):
    engine = BatchEngine(generators, max_batch_images=64)
    engine.add("keep", "fashion-mnist", request(), {"init_image": INIT, "mask": png(np.zeros((28, 28)))})
    finished, _, _ = run(engine)
    assert torch.equal(finished["keep"], from_png(INIT, 1).expand(2, -1, -1, -1))


def test_previews_come_every_few_steps_to_the_jobs_that_ask_and_show_the_kept_region(generators):
    engine = BatchEngine(generators, max_batch_images=64)
    steps = 20
    engine.add("watched", "fashion-mnist", request(steps=steps, previews=True), {"init_image": INIT, "mask": LEFT_HALF})
    engine.add("quiet", "fashion-mnist", request(steps=steps))
    finished, previews, _ = run(engine)
    assert "quiet" not in previews
    every = steps // PREVIEWS_PER_JOB
    got = previews["watched"]
    # one every `every` steps, never on the last one (the final images come then)
    assert [step for step, _ in got] == list(range(every, steps, every))
    kept = from_png(INIT, 1)[:, :, 14:]
    for _, x0 in got:
        assert x0.shape == (2, 1, 28, 28)
        assert torch.equal(x0[:, :, :, 14:], kept.expand(2, -1, -1, -1))
    # the estimates converge on the final image
    errors = [(x0 - finished["watched"]).abs().mean().item() for _, x0 in got]
    assert errors[-1] < errors[0]
