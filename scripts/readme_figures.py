"""The README's figures from the shipped generator at its card's defaults:

- docs/images/sample-grid.png: ten images per class, one row per class (as `python -m evaluation model-card`);
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
from diffusion.images import make_grid, png_bytes
from evaluation.inpainting_demo import half_inpainting
from evaluation.model_card import sample_grid
from model_store import ModelStore
from model_store.loading import load_generator, load_module

IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
SCALE = 3


def inpainting_figure(store: ModelStore, path: Path) -> dict:
    gen = load_generator(store, "fashion-mnist", with_classifier=False)
    _, clf = load_module(store, "fmnist-eval-classifier")
    case = half_inpainting(gen, load_fashion_mnist("test"))
    inits = torch.stack(case.inits)
    grid = make_grid(torch.cat([inits, case.blanked, case.regenerated]), nrow=len(case.inits))
    img = Image.open(io.BytesIO(png_bytes(grid)))
    img.resize((img.width * SCALE, img.height * SCALE), Image.Resampling.NEAREST).save(path)
    wanted = torch.arange(len(case.inits))
    with torch.no_grad():
        _, regenerated = classify(clf, case.regenerated)
        _, left_blank = classify(clf, case.blanked)
    return {"model": gen.card.ref, "defaults": gen.card.defaults,
            "regenerated_correct": int((regenerated == wanted).sum()),
            "blanked_correct": int((left_blank == wanted).sum()), "of": len(case.inits)}


def main() -> None:
    store = ModelStore()
    card = store.resolve("fashion-mnist")
    sample_grid(store, card, IMAGES / "sample-grid.png", "cpu")
    print(json.dumps({"grid": str(IMAGES / "sample-grid.png"),
                      "inpainting": inpainting_figure(store, IMAGES / "inpainting.png")}))


if __name__ == "__main__":
    main()
