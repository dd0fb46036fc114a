"""The request of `POST /generate` and its normalized echo as pydantic models, built from the
declarations of `contract.request` (they are also the OpenAPI schema the API serves).

The request model checks types and unknown fields only. Ranges and everything that depends on the
model card (class names, card defaults, the linked classifier) are checked by `resolve_settings`,
which the CLI shares, so that both say the same thing in the same words; the ranges are still
written into the schema, for /docs and generated clients.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictFloat,
    StrictInt,
    WithJsonSchema,
    create_model,
)

from contract.request import FIELD_TYPES, RANDOM, REQUIRED, SETTINGS, Setting, bounds, number_text

LIMIT_VARIABLES = {"max_images": "MAX_IMAGES_PER_JOB", "max_steps": "MAX_STEPS"}
"""The deployment setting that lowers a field's upper bound, by `Setting.limit`."""


def _class_label(value: Any) -> int | str | None:
    # one clear message instead of pydantic's one error per member of int | str | None; bool is
    # refused because JSON `true` is no class
    if value is None or isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise ValueError(f"must be a class index, a class name or null (got {value!r})")


ClassLabel = Annotated[
    int | str | None,
    PlainValidator(_class_label),
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string"}, {"type": "null"}]}),
]

_STRICT = {"int": StrictInt, "float": StrictFloat, "bool": StrictBool}
_PLAIN = {"int": int, "float": float, "bool": bool}


def _range(name: str, s: Setting) -> str:
    lo, hi, hi_text = bounds(name)
    if lo is None:
        return ""
    if s.limit is not None:
        return f"{number_text(lo)}..{LIMIT_VARIABLES[s.limit]} ({hi_text} by default)"
    return f"{number_text(lo)}..{hi_text}" if hi is not None else f">= {number_text(lo)}"


def _default(s: Setting) -> str:
    if s.default == RANDOM:
        return "random (echoed in the job's request)"
    if s.from_card:
        return f"the model card's, else {s.default}"
    return str(s.default).lower() if isinstance(s.default, bool) else str(s.default)


def _description(name: str, s: Setting) -> str:
    parts = [s.help, _range(name, s)]
    if s.default != REQUIRED:
        parts.append(f"default: {_default(s)}")
    return "; ".join(p for p in parts if p)


def _limits_schema(s: Setting) -> dict[str, Any]:
    # the fixed bounds only: a deployment's MAX_IMAGES_PER_JOB may be larger than the default
    return {k: v for k, v in (("minimum", s.lo), ("maximum", s.hi)) if v is not None}


def _setting_field(name: str, s: Setting) -> tuple[Any, Any]:
    """The (annotation, FieldInfo) of a setting in the request model: optional, default None."""
    if name == "class_label":
        return ClassLabel, Field(..., description=s.help)
    kind = Literal[tuple(s.choices)] if s.choices else _STRICT[FIELD_TYPES[name]]  # type: ignore[valid-type]
    return kind | None, Field(None, description=_description(name, s), json_schema_extra=_limits_schema(s))


class RequestBase(BaseModel):
    """What every generate request is, besides its settings (see `GenerateRequest`)."""

    model_config = ConfigDict(extra="forbid",
                              json_schema_extra={"examples": [{"class_label": "sneaker", "num_images": 4}]})

    def settings(self) -> dict[str, Any]:
        """The settings this request gives (None: left out), for `resolve_settings`."""
        return {name: getattr(self, name) for name in SETTINGS}


GenerateRequest = create_model(
    "GenerateRequest",
    __base__=RequestBase,
    __doc__="`POST /generate`: every field but `class_label` may be left out (or null) for its default.",
    model=(str | None, Field(None, description="`name` or `name@version` as listed by GET /models; "
                                               "default: the deployment's default model")),
    **{name: _setting_field(name, s) for name, s in SETTINGS.items()},
    webhook_url=(AnyHttpUrl | None, Field(None, description="POSTed the final job document once the job ends, "
                                                            "signed with X-Signature: sha256=<hex HMAC>")),
    init_image=(str | None, Field(
        None, description="img2img and inpainting: a base64 PNG (a data:image/png;base64, URL is accepted) of the "
                          "model's size and channels (GET /models); with `resize` true any size and channel count "
                          "is converted, center-cropped and resized, and the job's notes say so")),
    mask=(str | None, Field(
        None, description="inpainting: a base64 PNG of init_image's size, white (gray >= 128) = regenerate, black = "
                          "keep; needs init_image")),
    resize=(StrictBool | None, Field(
        None, description="convert and resize init_image and mask to the model's size and channels instead of "
                          "refusing them (422); default false")),
)


def _echo_field(name: str, s: Setting) -> tuple[Any, Any]:
    if name == "class_label":
        return int | None, Field(..., description="the class index, or null for unconditional")
    kind = Literal[tuple(s.choices)] if s.choices else _PLAIN[FIELD_TYPES[name]]  # type: ignore[valid-type]
    return kind, Field(...) if s.default in (REQUIRED, RANDOM) or s.from_card else Field(s.default)


NormalizedRequest = create_model(
    "NormalizedRequest",
    __doc__="The request as the job runs it: defaults filled, class name resolved to its index, seed chosen.",
    **{name: _echo_field(name, s) for name, s in SETTINGS.items()},
    init_image=(str | None, Field(None, description="the normalized init image, as sha256:<hex of its PNG>")),
    mask=(str | None, Field(None, description="the normalized mask, as sha256:<hex of its PNG>")),
)
