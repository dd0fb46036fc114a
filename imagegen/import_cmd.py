"""`imagegen import-model`: a local diffusers folder (UNet2DModel, DDPM/DDIM pipeline, DiTPipeline) into the store.

Reads JSON configs and safetensors only: pickle weights are refused, never loaded; nothing is fetched
from a hub (download the folder first, e.g. `huggingface-cli download facebook/DiT-XL-2-256 --local-dir
DIR`). Needs the `diffusers` extra, which builds and checks the network before anything is written.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from contract.errors import UsageError
from model_store import ModelStore


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `imagegen import-model`."""
    p.add_argument("folder", metavar="DIR", help="the diffusers folder (a UNet2DModel, or a pipeline with "
                                                 "model_index.json)")
    p.add_argument("--name", required=True, help="model name in the store (a-z, 0-9, '.', '_', '-')")
    p.add_argument("--version", type=int, default=None, metavar="V",
                   help="the version to write; must be the next free one (default: the next free one)")
    p.add_argument("--class-names", metavar="FILE", default=None,
                   help="class names: a JSON list, or a text file of one name per line (default: a DiT's "
                        "id2label, else the indices)")
    p.add_argument("--null-class", type=int, metavar="K", default=None,
                   help="the class embedding index of the unconditional class (classifier-free guidance): "
                        "the last one; without it a UNet2DModel has no null class and is served at CFG scale 1")
    p.add_argument("--store", metavar="DIR", default=None,
                   help="model store root (default: $MODEL_STORE, else the package's models/ directory)")


def read_class_names(path: str | None) -> list[str] | None:
    """The names in --class-names FILE (a JSON list of strings, or one name per line)."""
    if path is None:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"--class-names {path}: cannot read the file ({e.strerror or type(e).__name__})") from None
    if text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except ValueError as e:
            raise UsageError(f"--class-names {path}: not a JSON list ({e})") from None
        if not all(isinstance(n, str) for n in names):
            raise UsageError(f"--class-names {path}: the JSON list must hold strings only")
        return names
    return [line.strip() for line in text.splitlines() if line.strip()]


def run(args: argparse.Namespace) -> int:
    """Import the folder and print the stored card's summary as JSON."""
    from model_store.diffusers_import import ImportRefused, import_folder

    store = ModelStore(args.store)
    try:
        card = import_folder(store, args.folder, args.name, version=args.version,
                             class_names=read_class_names(args.class_names), null_class=args.null_class)
    except (ImportRefused, ValueError) as e:
        raise UsageError(str(e)) from None
    print(json.dumps({"model": card.ref, "backbone": card.backbone, "space": card.space,
                      "image_size": card.image_size, "channels": card.channels, "num_classes": card.num_classes,
                      "null_class": card.null_class, "prediction_type": card.prediction_type,
                      "schedule": card.schedule, "sha256": card.sha256}))
    return 0
