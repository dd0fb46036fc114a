"""The model card: everything needed to rebuild, sample from and judge a stored model.

Kept free of torch so that the HTTP service can read cards (classes, defaults) without it.
"""

from __future__ import annotations

import json
import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

KINDS = ("generator", "guidance-classifier", "eval-classifier")
"""What a model is for: sampling, steering a sampler, or scoring samples."""

ARCHITECTURE_TYPES = ("unet", "noise-classifier", "eval-classifier", "diffusers-unet2d", "diffusers-dit")
"""Networks a card may describe; `architecture["type"]` picks the class that loads the weights. The
diffusers ones are imported models (`imagegen import-model`): a pixel `UNet2DModel` (config: its
diffusers config), and a latent DiT (config: {"transformer": DiTTransformer2DModel's config, "vae":
AutoencoderKL's config, "scaling_factor": the VAE's, "latent_shape": [C, H, W]})."""

LATENT_TYPES = ("diffusers-dit",)
"""Architecture types that sample in a VAE's latent space and decode to pixels."""

# Separators people type differently ("Ankle boot", "ankle-boot", "T-shirt/top", "t_shirt top")
_SEPARATORS = re.compile(r"[\s\-/_]+")


def class_key(name: str) -> str:
    """How class names compare: case and separators ignored."""
    return _SEPARATORS.sub("", name).casefold()


_class_key = class_key


@dataclass(kw_only=True)
class ModelCard:
    """The JSON card stored next to `weights.safetensors`."""

    name: str  # model name, a directory of the store (e.g. "fashion-mnist")
    version: int  # 1, 2, ... assigned by the store on save
    kind: str  # one of KINDS
    architecture: dict  # {"type": one of ARCHITECTURE_TYPES, "config": constructor kwargs}
    schedule: dict | None = None  # noise schedule config; generators and guidance classifiers only
    prediction_type: str | None = None  # what the network predicts: "epsilon" for generators
    class_names: list[str]  # label i is class_names[i]; the null label K = len(class_names)
    image_size: int  # side of the square images, in pixels
    channels: int  # 1 for grayscale, 3 for RGB
    dtype: str  # dtype the weights are stored in, e.g. "float16"
    sha256: str  # hex digest of weights.safetensors, checked before every load
    defaults: dict = field(default_factory=dict)  # sampling defaults: sampler, steps, guidance...
    training: dict = field(default_factory=dict)  # recipe: data, steps, batch size, time, device, commit
    quality: dict = field(default_factory=dict)  # measured quality tables (FID, accuracy...)
    links: dict = field(default_factory=dict)  # related models by role, e.g. {"guidance_classifier": name}
    # how predictions are used: {"clip_x0": true}; "null_class": the label of the unconditional class (CFG),
    # K = len(class_names) when absent (the trainer's label dropout), null for a model that has none
    sampling: dict = field(default_factory=dict)
    created_at: str  # ISO 8601 UTC time of saving
    notes: str = ""  # free text for people

    def __post_init__(self) -> None:
        # bool is an int: reject it, JSON `true` must not become version 1
        if type(self.version) is not int or self.version < 1:
            raise ValueError(f"card version must be a positive int, got {self.version!r}")
        if self.kind not in KINDS:
            raise ValueError(f"card kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if not isinstance(self.architecture, dict) or self.architecture.get("type") not in ARCHITECTURE_TYPES:
            raise ValueError(
                f"card architecture must be {{'type': one of {', '.join(ARCHITECTURE_TYPES)}, 'config': {{...}}}}, "
                f"got {self.architecture!r}"
            )
        if not isinstance(self.architecture.get("config"), dict):
            raise ValueError(f"card architecture['config'] must be a dict, got {self.architecture.get('config')!r}")
        # hold what card.json will hold (tuples as lists...), so that a card built in code equals
        # the one read back, and a value JSON cannot store fails here rather than at save time
        for key in ("architecture", "schedule", "defaults", "training", "quality", "links"):
            try:
                setattr(self, key, json.loads(json.dumps(getattr(self, key))))
            except (TypeError, ValueError) as e:
                raise ValueError(f"card field {key!r} is not JSON data: {e}") from None
        self.class_names = list(self.class_names)
        if not all(isinstance(c, str) for c in self.class_names):
            raise ValueError(f"class names must be strings, got {self.class_names!r}")
        keys = [_class_key(c) for c in self.class_names]
        # two names that differ only in case or separators could not be told apart by resolve_class
        clashes = sorted({c for c, k in zip(self.class_names, keys) if keys.count(k) > 1})
        if clashes:
            raise ValueError(f"class names clash once case and separators are ignored: {clashes}")
        if self.sampling.get("null_class", self.num_classes) not in (self.num_classes, None):
            raise ValueError(f"sampling.null_class must be the label after the classes ({self.num_classes}) or "
                             f"null, got {self.sampling['null_class']!r}")

    @property
    def ref(self) -> str:
        """"name@version", the form `ModelStore.resolve` accepts."""
        return f"{self.name}@{self.version}"

    @property
    def num_classes(self) -> int:
        """K, the number of classes; K itself is the null label."""
        return len(self.class_names)

    @property
    def null_class(self) -> int | None:
        """The label of the unconditional class (classifier-free guidance), or None if it has none."""
        return self.sampling.get("null_class", self.num_classes)

    @property
    def backbone(self) -> str:
        """The network's architecture type (one of ARCHITECTURE_TYPES)."""
        return self.architecture["type"]

    @property
    def space(self) -> str:
        """"latent" for a model that samples a VAE's latents, else "pixel"."""
        return "latent" if self.backbone in LATENT_TYPES else "pixel"

    @property
    def num_train_steps(self) -> int:
        """T of the model's noise schedule: its requests may ask for 1..T steps."""
        return int((self.schedule or {}).get("num_train_steps", 1000))

    def to_dict(self) -> dict[str, Any]:
        """The card as plain JSON-ready data."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelCard:
        """Build a card, refusing unknown keys so that a typo is not silently dropped."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model card keys {unknown}; known keys are {sorted(known)}")
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        missing = sorted(required - set(d))
        if missing:
            raise ValueError(f"model card is missing required keys {missing}")
        return cls(**d)

    def resolve_class(self, label: int | str | None) -> int | None:
        """Turn a class index, a string of digits or a class name into an index; None stays None."""
        if label is None:
            return None
        k = self.num_classes
        if isinstance(label, str) and label.strip().isdigit():
            label = int(label.strip())
        if isinstance(label, int) and not isinstance(label, bool):
            if 0 <= label < k:
                return label
        elif isinstance(label, str):
            key = _class_key(label)
            for i, name in enumerate(self.class_names):
                if _class_key(name) == key:
                    return i
            # a name of several synonyms ("tench, Tinca tinca", ImageNet's) answers to each, if only one has it
            hits = [i for i, name in enumerate(self.class_names) if "," in name
                    and key in {_class_key(part) for part in name.split(",")}]
            if len(hits) == 1:
                return hits[0]
        if k == 0:
            raise ValueError(f"model {self.ref} is unconditional; it takes no class label, got {label!r}")
        names = ", ".join(self.class_names) if k <= 20 else "the names of its class_names (GET /models/NAME)"
        raise ValueError(f"unknown class {label!r} for model {self.ref}; give an index 0..{k - 1} or one of: {names}")

