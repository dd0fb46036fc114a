"""Inpainting with the SHIPPED generator, scored by the shipped evaluation classifier (CPU, a few
images): with half of a real test image regenerated at the card's default settings, the kept half is
unchanged and the image is classified as the requested class, and the regenerated half is what
makes it so (the same images with that half blanked are classified worse)."""

from __future__ import annotations

import pytest
import torch

from diffusion.data import load_fashion_mnist
from diffusion.evaluation import classify
from diffusion.images import from_png, png_bytes
from diffusion.sampling import SampleSpec, sample
from model_store import ModelStore
from model_store.loading import load_generator, load_module

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SIZE = 28


@pytest.fixture(scope="module")
def shipped():
    from stores import fashion_mnist_or_skip, one_torch_thread

    fashion_mnist_or_skip("test")
    store = ModelStore()  # the package's store: what `imagegen up` serves
    with one_torch_thread():
        gen = load_generator(store, "fashion-mnist", with_classifier=False)
        _, clf = load_module(store, "fmnist-eval-classifier")
        yield gen, clf, load_fashion_mnist("test")


def test_half_regenerated_images_keep_their_half_and_show_the_requested_class(shipped):
    from stores import one_torch_thread

    gen, clf, test = shipped
    defaults = gen.card.defaults
    classes = list(range(gen.num_classes))
    # the first test image of each class, as a client would send it (a PNG), the left half regenerated
    inits = [from_png(png_bytes(test.images[int((test.labels == c).nonzero()[0][0])].float() / 127.5 - 1), 1)
             for c in classes]
    mask = torch.zeros(1, SIZE, SIZE)
    mask[:, :, : SIZE // 2] = 1
    specs = [SampleSpec(c, float(defaults["guidance_scale"]), "cfg", defaults["sampler"], int(defaults["steps"]),
                        seed=100 + c) for c in classes]
    with one_torch_thread():
        out = sample(gen.model, gen.schedule, specs, gen.image_shape, gen.num_classes, clip_x0=gen.clip_x0,
                     init_images=inits, masks=[mask] * len(classes))
    # the kept half is the input, pixel for pixel once written as a PNG
    for image, init in zip(out, inits):
        assert torch.equal(from_png(png_bytes(image), 1)[:, :, SIZE // 2:], init[:, :, SIZE // 2:])
    wanted = torch.tensor(classes)
    with torch.no_grad():
        _, predicted = classify(clf, out)
        blanked = torch.stack(inits).clone()
        blanked[:, :, :, : SIZE // 2] = -1  # the background
        _, predicted_blanked = classify(clf, blanked)
    correct = int((predicted == wanted).sum())
    assert correct >= len(classes) - 1, f"classified {predicted.tolist()}, wanted {wanted.tolist()}"
    assert correct > int((predicted_blanked == wanted).sum()), (predicted.tolist(), predicted_blanked.tolist())
