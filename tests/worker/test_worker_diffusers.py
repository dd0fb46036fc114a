"""Imported diffusers models in the batching engine: per-image seeds, a mixed batch equal to each request
alone, a DiT's images and previews decoded by its VAE, img2img through the VAE's encoding."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")

from diffusers_folders import CLASS_NAMES, NUM_CLASSES, save_dit_folder, save_unet_folder  # noqa: E402

from diffusion.images import png_bytes  # noqa: E402
from diffusion.sampling import SampleSpec, sample, specs_for_request  # noqa: E402
from model_store import ModelStore  # noqa: E402
from model_store.diffusers_import import import_folder  # noqa: E402
from model_store.loading import Generator, load_generator  # noqa: E402
from worker.engine import BatchEngine  # noqa: E402


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> dict[str, Generator]:
    root = tmp_path_factory.mktemp("imported")
    store = ModelStore(root / "store")
    import_folder(store, save_unet_folder(root / "v", "v_prediction"), "pixel-v", class_names=CLASS_NAMES,
                  null_class=NUM_CLASSES)
    import_folder(store, save_dit_folder(root / "dit"), "dit")
    return {ref: load_generator(store, ref) for ref in ("pixel-v", "dit")}


def request(**fields) -> dict:
    base = {"class_label": 1, "num_images": 1, "guidance": "cfg", "guidance_scale": 1.0, "sampler": "ddim",
            "steps": 4, "eta": 0.0, "seed": 0}
    return {**base, **fields}


def alone(gen: Generator, req: dict) -> torch.Tensor:
    spec = SampleSpec(req["class_label"], req["guidance_scale"], req["guidance"], req["sampler"], req["steps"],
                      req["eta"], req["seed"])
    x = sample(gen.model, gen.schedule, specs_for_request(spec, req["num_images"]), gen.sample_shape, gen.num_classes)
    return gen.decode(x)


def run(engine: BatchEngine, jobs: dict[str, tuple[str, dict]]) -> tuple[dict, list]:
    for job, (model, req) in jobs.items():
        engine.add(job, model, req)
    finished, reports = {}, []
    while engine.jobs():
        report = engine.step()
        finished.update(report.finished)
        reports.append(report)
    return finished, reports


@pytest.mark.parametrize("model", ["pixel-v", "dit"])
def test_image_i_of_a_batch_is_the_lone_run_of_seed_s_plus_i(imported, model):
    finished, _ = run(BatchEngine(imported), {"batch": (model, request(num_images=3, seed=40, guidance_scale=2.0))})
    for i in range(3):
        lone, _ = run(BatchEngine(imported), {"one": (model, request(seed=40 + i, guidance_scale=2.0))})
        torch.testing.assert_close(finished["batch"][i], lone["one"][0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(finished["batch"][0], finished["batch"][1])


def test_a_mixed_batch_of_imported_requests_equals_each_run_alone(imported):
    jobs = {
        "ddim-cfg": ("pixel-v", request(class_label=0, guidance_scale=3.0, steps=5, seed=1, num_images=2)),
        "dpmpp": ("pixel-v", request(class_label=2, sampler="dpmpp_2m", steps=6, seed=2)),
        "heun": ("pixel-v", request(class_label=None, sampler="heun", steps=3, seed=3)),
        "ddpm": ("pixel-v", request(class_label=1, sampler="ddpm", guidance_scale=1.5, steps=4, seed=4)),
        "dit-euler": ("dit", request(class_label=207, sampler="euler", guidance_scale=4.0, steps=4, seed=5)),
        "dit-ddim": ("dit", request(class_label=3, guidance_scale=1.0, steps=6, eta=0.5, seed=6)),
    }
    engine = BatchEngine(imported)
    finished, reports = run(engine, jobs)
    assert max(max(r.batch_images, default=0) for r in reports) >= 5  # they did share batches
    for job, (model, req) in jobs.items():
        want = alone(imported[model], req)
        assert finished[job].shape == want.shape, job
        torch.testing.assert_close(finished[job], want, rtol=1e-4, atol=1e-4, msg=job)
    assert finished["ddim-cfg"].shape == (2, 3, 32, 32) and finished["dit-euler"].shape == (1, 3, 16, 16)


def test_dit_previews_are_decoded_images_and_img2img_starts_from_the_vae_encoding(imported):
    engine = BatchEngine(imported)
    engine.add("p", "dit", {**request(steps=20, guidance_scale=4.0), "previews": True})
    previews = []
    while engine.jobs():
        previews += list(engine.step().previews.values())
    assert 1 <= len(previews) <= 10 and all(p.shape == (1, 3, 16, 16) for p in previews)

    gen = imported["dit"]
    init = torch.linspace(-1, 1, 16 * 16 * 3).view(3, 16, 16)
    # strength 0 runs no step: the image is the VAE's decoding of the input's encoding (of its PNG's pixels)
    engine = BatchEngine(imported)
    engine.add("i", "dit", request(strength=0.0, steps=4), inputs={"init_image": png_bytes(init)})
    out = engine.step().finished["i"]
    pixels = ((init + 1) * 127.5).round() / 127.5 - 1
    torch.testing.assert_close(out, gen.decode(gen.encode(pixels.unsqueeze(0))), rtol=1e-4, atol=1e-4)
