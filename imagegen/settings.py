"""The settings of one generate request, normalized and checked with the HTTP API's fields and ranges.

Torch-free: the checks run before any model is loaded, so a typo costs nothing. The CLI and the HTTP
API share these checks; only the spelling differs: messages name the flag on the command line
(`--steps must be between 1 and 1000 (got 0)`) and the JSON field in the API (`steps must be ...`).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from diffusion.names import GUIDANCE_KINDS, MAX_RESAMPLE_STEPS, MAX_SEED, MAX_STEPS, MIN_STEPS, SAMPLERS
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
         "eta": "--eta", "seed": "--seed", "init_image": "--init-image", "strength": "--strength",
         "mask": "--mask", "resample_steps": "--resample-steps", "resize": "--resize", "previews": "--previews"}
"""The flag of each request field: the API's field name with dashes."""


@dataclass(frozen=True)
class Vocabulary:
    """How messages spell the request's fields and the unconditional class."""

    names: Mapping[str, str]  # request field -> how a message names it ("--steps" or "steps")
    null_class: str  # how the unconditional class is written in messages ("none" or "null")
    null_class_parses: bool  # whether a class_label string equal to null_class means unconditional


CLI = Vocabulary(FLAGS, "none", True)
"""Flags, and `--class-label none` for unconditional."""

API = Vocabulary({key: key for key in FLAGS}, "null", False)
"""JSON field names; JSON null (never a string) is unconditional."""


@dataclass(frozen=True)
class Limits:
    """The deployment's ceilings on one request (the HTTP API reads them from its settings)."""

    max_images: int = MAX_IMAGES
    max_steps: int = MAX_STEPS


DEFAULT_LIMITS = Limits()


class InvalidField(UsageError):
    """A request field that cannot be used: `field` is its API name, `reason` what is wrong with it
    (without the name), the message the whole sentence in the caller's vocabulary. `more`: the other
    fields of the same request that cannot be used, so that one answer names them all."""

    def __init__(self, field: str, reason: str, message: str, more: tuple[InvalidField, ...] = ()) -> None:
        super().__init__("; ".join([message, *(str(m) for m in more)]))
        self.field = field
        self.reason = " ".join(reason.split())
        self.more = more

    @property
    def fields(self) -> list[tuple[str, str]]:
        """(field, reason) of every offending field, this one first."""
        return [(self.field, self.reason), *((m.field, m.reason) for m in self.more)]

    @classmethod
    def of(cls, problems: list[InvalidField]) -> InvalidField:
        """One error naming every problem of `problems` (not empty)."""
        first, *rest = problems
        return cls(first.field, first.reason, first.message, tuple(rest))


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
    strength: float = 1.0  # img2img: share of the steps run from the noised init image (1 = plain generation)
    resample_steps: int = 1  # inpainting: RePaint resampling per step

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


def problem(key: str, value: Any, limits: Limits = DEFAULT_LIMITS) -> str | None:
    """Why `value` is not allowed for the request field `key` ("must be ... (got ...)"), or None."""
    if key == "sampler" and value not in SAMPLERS:
        return f"must be one of {', '.join(SAMPLERS)} (got {value!r})"
    if key == "guidance" and value not in GUIDANCE_KINDS:
        return f"must be one of {', '.join(GUIDANCE_KINDS)} (got {value!r})"
    if key == "strength" and not (_is_number(value) and 0 <= value <= 1):
        return f"must be between 0 and 1 (got {value!r})"
    if key in ("steps", "num_images", "seed", "resample_steps"):
        max_steps = min(limits.max_steps, MAX_STEPS)
        lo, hi, hi_text = {"steps": (MIN_STEPS, max_steps, str(max_steps)),
                           "num_images": (1, limits.max_images, str(limits.max_images)),
                           "seed": (0, MAX_SEED, "2**63-1"),
                           "resample_steps": (1, MAX_RESAMPLE_STEPS, str(MAX_RESAMPLE_STEPS))}[key]
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


def _invalid(vocab: Vocabulary, key: str, reason: str) -> InvalidField:
    return InvalidField(key, reason, f"{vocab.names[key]} {reason}")


def _given_or_default(key: str, given: Any, card: ModelCard, fallback: Any) -> tuple[Any, str]:
    """The value given in the request, else the card's default, else `fallback`; and where it came
    from, as messages say it ("" or " from the defaults of REF")."""
    if given is not None:
        return given, ""
    if key in card.defaults:
        return card.defaults[key], f" from the defaults of {card.ref}"
    return fallback, ""


def resolve_class(card: ModelCard, label: int | str | None, vocab: Vocabulary = CLI) -> int | None:
    """A class index, a class name (any case and separators) or the null class to an index or None."""
    if label is None:
        return None
    if vocab.null_class_parses and isinstance(label, str) and label.strip().casefold() == vocab.null_class:
        return None
    try:
        return card.resolve_class(label)
    except ValueError as e:
        raise InvalidField("class_label", str(e), f"{vocab.names['class_label']}: {e}") from None


def resolve_settings(
    card: ModelCard,
    *,
    class_label: int | str | None,
    num_images: int | None = None,
    guidance: str | None = None,
    guidance_scale: float | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    eta: float | None = None,
    seed: int | None = None,
    strength: float | None = None,
    resample_steps: int | None = None,
    vocab: Vocabulary = CLI,
    limits: Limits = DEFAULT_LIMITS,
) -> GenerateSettings:
    """Fill the defaults (the request, then the card, then FALLBACK_DEFAULTS) and check everything,
    raising InvalidField naming every field that cannot be used (in `vocab`'s spelling); a check that
    depends on another field is skipped while that field is itself invalid."""
    n_ = vocab.names
    errors: list[InvalidField] = []

    def check(key: str, value: Any, source: str = "") -> Any:
        """`value`, or None with its problem noted."""
        why = problem(key, value, limits)
        if why:
            errors.append(_invalid(vocab, key, f"{why}{source}"))
            return None
        return value

    def pick(key: str, given: Any, fallback: Any) -> Any:
        return check(key, *_given_or_default(key, given, card, fallback))

    try:
        label, label_ok = resolve_class(card, class_label, vocab), True
    except InvalidField as e:
        errors.append(e)
        label, label_ok = None, False
    n = pick("num_images", num_images, 4)
    # the API's default guidance is cfg whatever the card says: a card cannot make a request
    # depend on a classifier that the caller did not ask for
    kind = check("guidance", guidance if guidance is not None else "cfg")
    sampler_name = pick("sampler", sampler, FALLBACK_DEFAULTS["sampler"])
    k = pick("steps", steps, FALLBACK_DEFAULTS["steps"])
    scale = pick("guidance_scale", guidance_scale, FALLBACK_DEFAULTS["guidance_scale"])
    # a card's eta default belongs to its ddim default: a request that picks another sampler and
    # says nothing about eta must not be refused for the card's eta
    e = 0.0 if eta is None and sampler_name != "ddim" else pick("eta", eta, 0.0)
    if e is not None and e != 0 and sampler_name is not None and sampler_name != "ddim":
        errors.append(_invalid(vocab, "eta", f"is only for {n_['sampler']} ddim (got {n_['eta']} {e} with "
                                             f"{n_['sampler']} {sampler_name})"))
    if seed is None:
        # leave room for seed + i of every image below MAX_SEED
        s = secrets.randbelow(MAX_SEED - (n or 1) + 2)
    else:
        s = check("seed", seed)
        if s is not None and n is not None and seed + n - 1 > MAX_SEED:
            errors.append(_invalid(vocab, "seed", f"must be at most 2**63-1 - {n - 1} with {n_['num_images']} {n}, "
                                                  f"since image i uses seed + i (got {seed})"))
    st = check("strength", 1.0 if strength is None else strength)
    rs = check("resample_steps", 1 if resample_steps is None else resample_steps)
    if kind == "classifier":
        if label_ok and label is None:
            errors.append(_invalid(vocab, "guidance", f"classifier needs a class: {n_['class_label']} "
                                                      f"{vocab.null_class} is unconditional; use {n_['guidance']} cfg"))
        if not card.links.get("guidance_classifier"):
            errors.append(_invalid(vocab, "guidance", f"classifier: model {card.ref} has no guidance classifier "
                                                      f"(its card has no links.guidance_classifier); use "
                                                      f"{n_['guidance']} cfg"))
    if errors:
        raise InvalidField.of(errors)
    return GenerateSettings(
        class_label=label, class_name=None if label is None else card.class_names[label], num_images=n,
        guidance=kind, guidance_scale=float(scale), sampler=sampler_name, steps=k, eta=float(e), seed=s,
        strength=float(st), resample_steps=rs,
    )
