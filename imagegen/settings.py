"""The settings of one generate request, normalized and checked with the HTTP API's fields and ranges.

Torch-free: the checks run before any model is loaded, so a typo costs nothing. Messages name the
flag and what is allowed, e.g. `--steps must be between 1 and 1000 (got 0)`.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import asdict, dataclass
from typing import Any

from diffusion.names import GUIDANCE_KINDS, MAX_SEED, MAX_STEPS, MIN_STEPS, SAMPLERS
from imagegen.errors import UsageError
from model_store.cards import ModelCard

MAX_IMAGES = 64
"""Most images one request may ask for; the API's MAX_IMAGES_PER_JOB default."""

FALLBACK_DEFAULTS: dict[str, Any] = {"guidance_scale": 3.0, "sampler": "ddim", "steps": 50}
"""Sampling defaults for a model whose card gives none."""

DEFAULT_KEYS = ("sampler", "steps", "guidance_scale", "guidance", "eta")
"""Keys a model card's `defaults` may hold."""

FLAGS = {"class_label": "--class-label", "num_images": "--num-images", "guidance": "--guidance",
         "guidance_scale": "--guidance-scale", "sampler": "--sampler", "steps": "--steps",
         "eta": "--eta", "seed": "--seed"}
"""The flag of each request field: the API's field name with dashes."""


@dataclass(frozen=True)
class GenerateSettings:
    """A normalized request: defaults filled, the class name resolved to its index, the seed chosen."""

    class_label: int | None
    class_name: str | None
    num_images: int
    guidance: str
    guidance_scale: float
    sampler: str
    steps: int
    eta: float
    seed: int

    @property
    def seeds(self) -> list[int]:
        """Image i uses seed + i, so one image reproduces alone whatever else shared its batch."""
        return [self.seed + i for i in range(self.num_images)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def problem(key: str, value: Any) -> str | None:
    """Why `value` is not allowed for the request field `key` ("must be ... (got ...)"), or None."""
    if key == "sampler" and value not in SAMPLERS:
        return f"must be one of {', '.join(SAMPLERS)} (got {value!r})"
    if key == "guidance" and value not in GUIDANCE_KINDS:
        return f"must be one of {', '.join(GUIDANCE_KINDS)} (got {value!r})"
    if key in ("steps", "num_images", "seed"):
        lo, hi, hi_text = {"steps": (MIN_STEPS, MAX_STEPS, str(MAX_STEPS)), "num_images": (1, MAX_IMAGES, str(MAX_IMAGES)),
                           "seed": (0, MAX_SEED, "2**63-1")}[key]
        if not _is_int(value):
            return f"must be an integer (got {value!r})"
        if not lo <= value <= hi:
            return f"must be between {lo} and {hi_text} (got {value})"
    if key == "eta" and not (_is_number(value) and 0 <= value <= 1):
        return f"must be between 0 and 1 (got {value!r})"
    # `not >=` also refuses NaN; inf would overflow the guided prediction
    if key == "guidance_scale" and not (_is_number(value) and math.isfinite(value) and value >= 0):
        return f"must be a finite number >= 0 (got {value!r})"
    return None


def check_defaults(defaults: Any, where: str) -> dict[str, Any]:
    """A card's sampling defaults, checked key by key; `where` names their source in messages."""
    if not isinstance(defaults, dict):
        raise UsageError(f"{where} must be a JSON object like {{\"sampler\": \"ddim\", \"steps\": 50}} (got {defaults!r})")
    unknown = sorted(set(defaults) - set(DEFAULT_KEYS))
    if unknown:
        raise UsageError(f"{where}: unknown keys {unknown}; allowed: {', '.join(DEFAULT_KEYS)}")
    for key, value in defaults.items():
        why = problem(key, value)
        if why:
            raise UsageError(f"{where}: {key} {why}")
    if defaults.get("eta", 0) != 0 and defaults.get("sampler", "ddim") != "ddim":
        raise UsageError(f"{where}: eta is only for sampler ddim (got sampler {defaults['sampler']!r})")
    return dict(defaults)


def _pick(key: str, given: Any, card: ModelCard, fallback: Any) -> Any:
    """The value given on the command line, else the card's default, else `fallback`, checked."""
    if given is not None:
        value, source = given, ""
    elif key in card.defaults:
        value, source = card.defaults[key], f" from the defaults of {card.ref}"
    else:
        value, source = fallback, ""
    why = problem(key, value)
    if why:
        raise UsageError(f"{FLAGS[key]} {why}{source}")
    return value


def resolve_class(card: ModelCard, label: str) -> int | None:
    """A class index, a class name (any case and separators) or `none` to an index or None."""
    if label.strip().casefold() == "none":
        return None
    try:
        return card.resolve_class(label)
    except ValueError as e:
        raise UsageError(f"--class-label: {e}") from None


def resolve_settings(
    card: ModelCard,
    *,
    class_label: str,
    num_images: int | None = None,
    guidance: str | None = None,
    guidance_scale: float | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    eta: float | None = None,
    seed: int | None = None,
) -> GenerateSettings:
    """Fill the defaults (command line, then the card, then FALLBACK_DEFAULTS) and check everything,
    raising UsageError naming the flag at the first problem."""
    label = resolve_class(card, class_label)
    n = _pick("num_images", num_images, card, 4)
    # the API's default guidance is cfg whatever the card says: a card cannot make a request
    # depend on a classifier that the caller did not ask for
    kind = guidance if guidance is not None else "cfg"
    if kind not in GUIDANCE_KINDS:
        raise UsageError(f"--guidance {problem('guidance', kind)}")
    sampler_name = _pick("sampler", sampler, card, FALLBACK_DEFAULTS["sampler"])
    k = _pick("steps", steps, card, FALLBACK_DEFAULTS["steps"])
    scale = float(_pick("guidance_scale", guidance_scale, card, FALLBACK_DEFAULTS["guidance_scale"]))
    e = float(_pick("eta", eta, card, 0.0))
    if e != 0 and sampler_name != "ddim":
        raise UsageError(f"--eta is only for --sampler ddim (got --eta {e} with --sampler {sampler_name})")
    if seed is None:
        # leave room for seed + i of every image below MAX_SEED
        s = secrets.randbelow(MAX_SEED - n + 2)
    else:
        why = problem("seed", seed)
        if why:
            raise UsageError(f"--seed {why}")
        if seed + n - 1 > MAX_SEED:
            raise UsageError(f"--seed must be at most 2**63-1 - {n - 1} with --num-images {n}, since image i "
                             f"uses seed + i (got {seed})")
        s = seed
    if kind == "classifier":
        if label is None:
            raise UsageError("--guidance classifier needs a class: --class-label none is unconditional; "
                             "use --guidance cfg")
        if not card.links.get("guidance_classifier"):
            raise UsageError(f"--guidance classifier: model {card.ref} has no guidance classifier "
                             "(its card has no links.guidance_classifier); use --guidance cfg")
    return GenerateSettings(
        class_label=label, class_name=None if label is None else card.class_names[label], num_images=n,
        guidance=kind, guidance_scale=scale, sampler=sampler_name, steps=k, eta=e, seed=s,
    )
