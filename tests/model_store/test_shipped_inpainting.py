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
from evaluation.inpainting_demo import half_inpainting
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
    with one_torch_thread():
        case = half_inpainting(gen, test)  # the README's figure: the first test image of each class
    out, inits = case.regenerated, case.inits
    assert bool((case.mask[:, :, : SIZE // 2] == 1).all()) and not case.mask[:, :, SIZE // 2:].any()
    # the kept half is the input, pixel for pixel once written as a PNG
    for image, init in zip(out, inits):
        assert torch.equal(from_png(png_bytes(image), 1)[:, :, SIZE // 2:], init[:, :, SIZE // 2:])
    wanted = torch.arange(gen.num_classes)
    with torch.no_grad():
        _, predicted = classify(clf, out)
        _, predicted_blanked = classify(clf, case.blanked)  # the left half set to the background
    correct = int((predicted == wanted).sum())
    assert correct >= len(wanted) - 1, f"classified {predicted.tolist()}, wanted {wanted.tolist()}"
    assert correct > int((predicted_blanked == wanted).sum()), (predicted.tolist(), predicted_blanked.tolist())
