"""The settings of one generate request, declared once: each field's meaning, default, range and
how it reaches the sampler, and from those the checks, the card defaults, the job record's `request`,
the API's JSON schema (in `contract.schema`) and the CLI's flags (in `imagegen.request_flags`, above
the contract, since only the command line has flags).

Torch-free: the checks run before any model is loaded, so a typo costs nothing. The CLI and the HTTP
API share them; only the spelling differs: messages name the flag on the command line
(`--steps must be between 1 and 1000 (got 0)`) and the JSON field in the API (`steps must be ...`).

Adding a request field is one declaration in `GenerateSettings` (plus, where the sampler uses it, a
field of `diffusion.sampling.SampleSpec` of the same name and its use in the math).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from contract.errors import InvalidField, UsageError
from contract.models import classifier_problem
from contract.names import GUIDANCE_KINDS, MAX_RESAMPLE_STEPS, MAX_SEED, MAX_STEPS, MIN_STEPS, SAMPLERS
from model_store import ModelCard, ModelStore

MAX_IMAGES = 64
"""Most images one request may ask for; the API's MAX_IMAGES_PER_JOB default."""

RANDOM = "random"
"""The default of `seed`: a request that gives none gets a random one (echoed in the job)."""

REQUIRED = "required"
"""The default of `class_label`: every request must give it (null for unconditional)."""


@dataclass(frozen=True)
class Setting:
    """How one request field behaves; its name and Python type are the `GenerateSettings` field's."""

    help: str  # what it means, for the API's schema and the CLI's --help
    default: Any = REQUIRED  # what a request that leaves it out gets (RANDOM and REQUIRED: see above)
    from_card: bool = False  # a model card's `defaults` may set it (then `default` is the fallback)
    lo: float | None = None  # the smallest allowed value
    hi: float | None = None  # the largest allowed value
    hi_text: str | None = None  # how messages and the schema write `hi` ("2**63-1")
    limit: str | None = None  # the `Limits` attribute that lowers `hi` in this deployment
    choices: Mapping[str, str] | None = None  # allowed values, each with its description
    finite: bool = False  # refuse NaN and infinities
    metavar: str = "V"  # the flag's value in --help
    sampled: bool = True  # a per-image field of the sampler's spec (diffusion.sampling.SampleSpec)
    local: bool = True  # `imagegen generate` takes it too (previews exist only in the service)


def _setting(**kwargs: Any) -> Any:
    return field(metadata={"setting": Setting(**kwargs)})


@dataclass(frozen=True)
class GenerateSettings:
    """A normalized request: defaults filled, the class name resolved to its index, the seed chosen.

    Each field is a request field of `POST /generate` and the job record's `request`, in the order
    errors are reported."""

    class_label: int | None = _setting(
        help="class index 0..K-1, a class name from the model card (case-insensitive, e.g. \"sneaker\", \"Ankle "
             "boot\"), or null for unconditional. K, the upper bound, depends on the model: the length of its "
             "`class_names` in GET /models; an index of K or more, like an unknown name, is answered 422", metavar="C")
    num_images: int = _setting(help="images to generate", default=4, lo=1, limit="max_images",
                               metavar="N", sampled=False)
    guidance: str = _setting(help="\"cfg\" (classifier-free) or \"classifier\" (the gradient of the model's linked "
                                  "noise-aware classifier)", default="cfg", choices=GUIDANCE_KINDS, metavar="KIND")
    sampler: str = _setting(help="see GET /samplers", default="ddim", from_card=True, choices=SAMPLERS,
                            metavar="NAME")
    steps: int = _setting(help="sampler steps", default=50, from_card=True, lo=MIN_STEPS, hi=MAX_STEPS,
                          limit="max_steps", metavar="K")
    guidance_scale: float = _setting(
        help="guidance scale; for cfg 0 is unconditional, 1 plain conditional, >1 sharper", default=3.0,
        from_card=True, lo=0, finite=True, metavar="S")
    eta: float = _setting(help="DDIM stochasticity; only with sampler ddim", default=0.0, from_card=True,
                          lo=0, hi=1, metavar="E")
    seed: int = _setting(help="seed; image i uses seed + i", default=RANDOM, lo=0, hi=MAX_SEED, hi_text="2**63-1",
                         metavar="S")
    strength: float = _setting(
        help="img2img: the share of the steps run from the init image noised to where they start (SDEdit); 0 "
             "returns the init image, 1 ignores it (plain generation)", default=1.0, lo=0, hi=1, metavar="S")
    resample_steps: int = _setting(
        help="inpainting: RePaint resampling, times each step is taken so the seam blends; needs mask",
        default=1, lo=1, hi=MAX_RESAMPLE_STEPS, metavar="N")
    previews: bool = _setting(
        help="put a small PNG (base64, as `preview`) of the current clean-image estimate of the job's images "
             "into the progress events every few steps", default=False, sampled=False, local=False)
    class_name: str | None = None  # the class's name on the card (None when unconditional); not a request field

    @property
    def seeds(self) -> list[int]:
        """Image i uses seed + i, so one image reproduces alone whatever else shared its batch."""
        return [self.seed + i for i in range(self.num_images)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_record(self) -> dict[str, Any]:
        """The request fields as the job record's `request` holds them (JSON values)."""
        return {name: getattr(self, name) for name in SETTINGS}

    @classmethod
    def from_record(cls, request: Mapping[str, Any]) -> GenerateSettings:
        """The settings of a record's `request`, as the API wrote them; a field the record lacks takes
        its declared default (ValueError naming a required one)."""
        values = {}
        for name, s in SETTINGS.items():
            if name in request:
                values[name] = request[name]
            elif s.default in (REQUIRED, RANDOM) or s.from_card:
                # the API always writes these: a record without one was not made by it
                raise ValueError(f"the request has no {name!r} field")
            else:
                values[name] = s.default
        return cls(**values)

    def sampled(self) -> dict[str, Any]:
        """The per-image fields of the sampler's spec (`diffusion.sampling.SampleSpec(**this)`), for
        the first image; image i adds i to the seed."""
        return {name: getattr(self, name) for name, s in SETTINGS.items() if s.sampled}


SETTINGS: dict[str, Setting] = {f.name: f.metadata["setting"] for f in fields(GenerateSettings) if f.metadata}
"""Every request setting by field name, in declaration order."""

FIELD_TYPES: dict[str, str] = {f.name: str(f.type) for f in fields(GenerateSettings)}
"""Each field's type as declared ("int", "float", "bool", "str", "int | None")."""

FALLBACK_DEFAULTS: dict[str, Any] = {name: s.default for name, s in SETTINGS.items() if s.from_card}
"""What a request gets for a field the model card gives no default for either."""

DEFAULT_KEYS = ("sampler", "steps", "guidance_scale", "guidance", "eta")
"""Keys a model card's `defaults` may hold (`guidance` is informational: a request always defaults
to cfg, so that a card never makes a request depend on a classifier the caller did not ask for)."""

FLAGS: dict[str, str] = {**{name: "--" + name.replace("_", "-") for name in SETTINGS},
                         **{k: "--" + k.replace("_", "-") for k in ("init_image", "mask", "resize")}}
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


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def number_text(x: float) -> str:
    """A bound as messages write it: 1000, not 1e+03 or 1000.0."""
    return str(int(x)) if float(x).is_integer() else repr(x)


def bounds(name: str, limits: Limits = DEFAULT_LIMITS) -> tuple[float | None, float | None, str]:
    """(lo, hi, how hi is written) of a numeric setting in a deployment with `limits`."""
    s = SETTINGS[name]
    hi = s.hi
    if s.limit is not None:
        cap = getattr(limits, s.limit)
        hi = cap if hi is None else min(hi, cap)
    text = s.hi_text if hi == s.hi and s.hi_text else ("" if hi is None else number_text(hi))
    return s.lo, hi, text


def problem(key: str, value: Any, limits: Limits = DEFAULT_LIMITS) -> str | None:
    """Why `value` is not allowed for the request field `key` ("must be ... (got ...)"), or None."""
    s, kind = SETTINGS[key], FIELD_TYPES[key]
    if s.choices is not None:
        return None if value in s.choices else f"must be one of {', '.join(s.choices)} (got {value!r})"
    if kind == "bool":
        return None if isinstance(value, bool) else f"must be true or false (got {value!r})"
    lo, hi, hi_text = bounds(key, limits)
    if kind == "int":
        if not _is_int(value):
            return f"must be an integer (got {value!r})"
        return None if lo <= value <= hi else f"must be between {number_text(lo)} and {hi_text} (got {value})"
    # a float; `not <=` also refuses NaN, and `finite` refuses inf (it would overflow the guided prediction)
    ok = _is_number(value) and (lo is None or value >= lo) and (hi is None or value <= hi)
    if ok and (not s.finite or math.isfinite(value)):
        return None
    if hi is None:
        return f"must be a {'finite ' if s.finite else ''}number >= {number_text(lo)} (got {value!r})"
    return f"must be between {number_text(lo)} and {hi_text} (got {value!r})"


def check_defaults(defaults: Any, where: str) -> dict[str, Any]:
    """A card's sampling defaults, checked key by key; `where` names their source in messages."""
    if not isinstance(defaults, dict):
        raise UsageError(f"{where} must be a JSON object like {{\"sampler\": \"ddim\", \"steps\": 50}} "
                         f"(got {defaults!r})")
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


def invalid(vocab: Vocabulary, key: str, reason: str) -> InvalidField:
    """The error of field `key`, its message in `vocab`'s spelling."""
    return InvalidField(key, reason, f"{vocab.names[key]} {reason}")


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


def _random_seed(num_images: int | None) -> int:
    # leave room for seed + i of every image below MAX_SEED
    return secrets.randbelow(MAX_SEED - (num_images or 1) + 2)


def resolve_settings(card: ModelCard, *, vocab: Vocabulary = CLI, limits: Limits = DEFAULT_LIMITS,
                     store: ModelStore | None = None, **given: Any) -> GenerateSettings:
    """Fill the defaults (the request, then the card, then the declared fallback) and check
    everything, raising InvalidField naming every field that cannot be used (in `vocab`'s spelling);
    a check that depends on another field is skipped while that field is itself invalid.

    `given` holds the request's settings by field name (None or absent: left out). With `store`, a
    request for classifier guidance also needs the card's linked classifier to be in it."""
    unknown = sorted(set(given) - set(SETTINGS))
    if unknown:
        raise TypeError(f"resolve_settings() got unknown settings {unknown}")
    errors: list[InvalidField] = []
    values: dict[str, Any] = {}
    # a model trained with T noising steps can be sampled in 1..T steps
    limits = replace(limits, max_steps=min(limits.max_steps, card.num_train_steps))
    for name, s in SETTINGS.items():
        value, source = given.get(name), ""
        if name == "class_label":
            try:
                values[name] = resolve_class(card, value, vocab)
            except InvalidField as e:
                errors.append(e)
            continue
        if value is None:
            if name == "eta" and values.get("sampler") != "ddim":
                # a card's eta default belongs to its ddim default: a request that picks another
                # sampler and says nothing about eta must not be refused for the card's eta
                value = 0.0
            elif name == "seed":
                value = _random_seed(values.get("num_images"))
            elif s.from_card and name in card.defaults:
                value, source = card.defaults[name], f" from the defaults of {card.ref}"
            else:
                value = s.default
        why = problem(name, value, limits)
        if why:
            errors.append(invalid(vocab, name, f"{why}{source}"))
        else:
            values[name] = value
    errors += _combinations(card, values, given, vocab, store)
    if errors:
        order = list(SETTINGS)
        raise InvalidField.of(sorted(errors, key=lambda e: order.index(e.field)))
    label = values["class_label"]
    for name in ("guidance_scale", "eta", "strength"):
        values[name] = float(values[name])
    return GenerateSettings(**values, class_name=None if label is None else card.class_names[label])


def _combinations(card: ModelCard, values: dict[str, Any], given: Mapping[str, Any], vocab: Vocabulary,
                  store: ModelStore | None) -> list[InvalidField]:
    """The problems of fields that are each valid but do not go together (only among valid ones)."""
    n, errors = vocab.names, []
    sampler, eta = values.get("sampler"), values.get("eta")
    if eta is not None and eta != 0 and sampler is not None and sampler != "ddim":
        errors.append(invalid(vocab, "eta", f"is only for {n['sampler']} ddim (got {n['eta']} {eta} with "
                                            f"{n['sampler']} {sampler})"))
    seed, count = values.get("seed"), values.get("num_images")
    if given.get("seed") is not None and seed is not None and count is not None and seed + count - 1 > MAX_SEED:
        errors.append(invalid(vocab, "seed", f"must be at most 2**63-1 - {count - 1} with {n['num_images']} "
                                             f"{count}, since image i uses seed + i (got {seed})"))
    if card.null_class is None:
        # without a null class there is no unconditional prediction: neither CFG nor a null label can be served
        if values.get("guidance") == "cfg" and values.get("guidance_scale", 1) != 1:
            source = "" if given.get("guidance_scale") is not None else " (the default)"
            errors.append(invalid(vocab, "guidance_scale", f"must be 1 for model {card.ref}: it has no null class, so "
                                                           f"it cannot be guided classifier-free (got "
                                                           f"{values['guidance_scale']}{source})"))
        if "class_label" in values and values["class_label"] is None:
            errors.append(invalid(vocab, "class_label", f"must be a class for model {card.ref}: it has no null "
                                                        f"class, so it cannot sample unconditionally (got "
                                                        f"{vocab.null_class})"))
    if values.get("guidance") == "classifier":
        if "class_label" in values and values["class_label"] is None:
            errors.append(invalid(vocab, "guidance", f"classifier needs a class: {n['class_label']} "
                                                     f"{vocab.null_class} is unconditional; use {n['guidance']} cfg"))
        if not card.links.get("guidance_classifier"):
            errors.append(invalid(vocab, "guidance", f"classifier: model {card.ref} has no guidance classifier "
                                                     f"(its card has no links.guidance_classifier); use "
                                                     f"{n['guidance']} cfg"))
        elif store is not None and (why := classifier_problem(store, card)) is not True:
            errors.append(invalid(vocab, "guidance", f"classifier: {why}; use {n['guidance']} cfg"))
    return errors


def request_defaults(card: ModelCard) -> dict[str, Any] | None:
    """What a request to `card` gets for the settings it leaves out (GET /models), by resolving an
    empty request with the normalizer's own rules; None if the card's defaults are themselves invalid."""
    try:
        # a model without a null class has no unconditional request: ask for its first class instead
        label = None if card.null_class is not None or not card.num_classes else 0
        s = resolve_settings(card, class_label=label, seed=0, vocab=API)
    except InvalidField:
        return None
    return {name: getattr(s, name) for name in ("sampler", "steps", "guidance", "guidance_scale", "eta", "num_images")}
