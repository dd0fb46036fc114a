"""The README's figures from the shipped generator at its card's defaults:

- docs/images/sample-grid.png: ten images per class, one row per class (as `imagegen model-card`);
- docs/images/inpainting.png: the first test image of each class (top), its left half blanked
  (middle), and that half regenerated for the image's own class (bottom), three times enlarged.

Prints what the evaluation classifier makes of the regenerated and the blanked images (the figures
the README quotes; tests/model_store/test_shipped_inpainting.py checks the same on every run).

    .venv/bin/python scripts/readme_figures.py
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch
from PIL import Image

from diffusion.data import load_fashion_mnist
from diffusion.evaluation import classify
from diffusion.images import from_png, make_grid, png_bytes
from diffusion.sampling import SampleSpec, sample
from imagegen.model_card_doc import sample_grid
from model_store import ModelStore
from model_store.loading import load_generator, load_module

IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
SCALE = 3


def inpainting_figure(store: ModelStore, path: Path) -> dict:
    gen = load_generator(store, "fashion-mnist", with_classifier=False)
    _, clf = load_module(store, "fmnist-eval-classifier")
    test = load_fashion_mnist("test")
    side = gen.image_shape[-1]
    classes = list(range(gen.num_classes))
    d = gen.card.defaults
    # the same inputs and seeds as tests/model_store/test_shipped_inpainting.py
    inits = [from_png(png_bytes(test.images[int((test.labels == c).nonzero()[0][0])].float() / 127.5 - 1), 1)
             for c in classes]
    mask = torch.zeros(1, side, side)
    mask[:, :, : side // 2] = 1
    specs = [SampleSpec(c, float(d["guidance_scale"]), "cfg", d["sampler"], int(d["steps"]), seed=100 + c)
             for c in classes]
    out = sample(gen.model, gen.schedule, specs, gen.image_shape, gen.num_classes, clip_x0=gen.clip_x0,
                 init_images=inits, masks=[mask] * len(classes))
    blanked = torch.stack(inits).clone()
    blanked[:, :, :, : side // 2] = -1
    grid = make_grid(torch.cat([torch.stack(inits), blanked, out]), nrow=len(classes))
    img = Image.open(io.BytesIO(png_bytes(grid)))
    img.resize((img.width * SCALE, img.height * SCALE), Image.Resampling.NEAREST).save(path)
    wanted = torch.tensor(classes)
    with torch.no_grad():
        _, regenerated = classify(clf, out)
        _, left_blank = classify(clf, blanked)
    return {"model": gen.card.ref, "defaults": d, "regenerated_correct": int((regenerated == wanted).sum()),
            "blanked_correct": int((left_blank == wanted).sum()), "of": len(classes)}


def main() -> None:
    store = ModelStore()
    card = store.resolve("fashion-mnist")
    sample_grid(store, card, IMAGES / "sample-grid.png", "cpu")
    print(json.dumps({"grid": str(IMAGES / "sample-grid.png"),
                      "inpainting": inpainting_figure(store, IMAGES / "inpainting.png")}))


if __name__ == "__main__":
    main()
