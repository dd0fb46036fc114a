"""The API's request and response bodies, as pydantic models (they are also the OpenAPI schema).

The request model checks types and unknown fields only. Ranges and everything that depends on the
model card (class names, card defaults, the linked classifier) are checked by the normalizer that
the CLI shares (`imagegen.settings`), so that both say the same thing in the same words; the ranges
are still written into the schema here, for /docs.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (AnyHttpUrl, BaseModel, ConfigDict, Field, PlainValidator, StrictBool, StrictFloat, StrictInt,
                      WithJsonSchema)

from diffusion.names import GUIDANCE_KINDS, MAX_SEED, SAMPLERS
from imagegen.settings import FALLBACK_DEFAULTS

SamplerName = Literal[tuple(SAMPLERS)]  # type: ignore[valid-type]
GuidanceKind = Literal[tuple(GUIDANCE_KINDS)]  # type: ignore[valid-type]
JobStatusName = Literal["queued", "running", "succeeded", "failed", "canceled"]


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


class GenerateRequest(BaseModel):
    """`POST /generate`: every field but `class_label` may be left out (or null) for its default."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"class_label": "sneaker", "num_images": 4}]})

    model: str | None = Field(None, description="`name` or `name@version` as listed by GET /models; "
                                                "default: the deployment's default model")
    class_label: ClassLabel = Field(..., description="class index 0..K-1, a class name from the model card "
                                                     "(case-insensitive, e.g. \"sneaker\", \"Ankle boot\"), or null "
                                                     "for unconditional. K, the upper bound, depends on the model: "
                                                     "the length of its `class_names` in GET /models; an index of K "
                                                     "or more, like an unknown name, is answered 422")
    num_images: StrictInt | None = Field(None, description="images to generate, 1..MAX_IMAGES_PER_JOB; default 4",
                                         json_schema_extra={"minimum": 1})
    guidance: GuidanceKind | None = Field(None, description="\"cfg\" (classifier-free) or \"classifier\" (the "
                                                            "gradient of the model's linked noise-aware classifier); "
                                                            "default cfg")
    guidance_scale: StrictFloat | None = Field(
        None, description=f"guidance scale >= 0; for cfg 0 is unconditional, 1 plain conditional, >1 sharper; "
                          f"default: the model card's, else {FALLBACK_DEFAULTS['guidance_scale']}",
        json_schema_extra={"minimum": 0})
    sampler: SamplerName | None = Field(None, description=f"see GET /samplers; default: the model card's, else "
                                                          f"{FALLBACK_DEFAULTS['sampler']}")
    steps: StrictInt | None = Field(None, description=f"sampler steps, 1..1000 (or the deployment's MAX_STEPS); "
                                                      f"default: the model card's, else {FALLBACK_DEFAULTS['steps']}",
                                    json_schema_extra={"minimum": 1, "maximum": 1000})
    eta: StrictFloat | None = Field(None, description="DDIM stochasticity 0..1; only with sampler ddim; default 0",
                                    json_schema_extra={"minimum": 0, "maximum": 1})
    seed: StrictInt | None = Field(None, description="0..2**63-1; image i uses seed + i; default: random "
                                                     "(echoed in the job's request)",
                                   json_schema_extra={"minimum": 0, "maximum": MAX_SEED})
    webhook_url: AnyHttpUrl | None = Field(None, description="POSTed the final job document once the job ends, "
                                                             "signed with X-Signature: sha256=<hex HMAC>")
    init_image: str | None = Field(
        None, description="img2img and inpainting: a base64 PNG (a data:image/png;base64, URL is accepted) of the "
                          "model's size and channels (GET /models); with `resize` true any size and channel count "
                          "is converted, center-cropped and resized, and the job's notes say so")
    strength: StrictFloat | None = Field(
        None, description="img2img, 0..1: the share of the steps run from the init image noised to where they "
                          "start (SDEdit); 0 returns the init image, 1 ignores it (plain generation); default 1",
        json_schema_extra={"minimum": 0, "maximum": 1})
    mask: str | None = Field(
        None, description="inpainting: a base64 PNG of init_image's size, white (gray >= 128) = regenerate, black = "
                          "keep; needs init_image")
    resample_steps: StrictInt | None = Field(
        None, description="inpainting: RePaint resampling, times each step is taken so the seam blends, 1..10; "
                          "needs mask; default 1", json_schema_extra={"minimum": 1, "maximum": 10})
    resize: StrictBool | None = Field(
        None, description="convert and resize init_image and mask to the model's size and channels instead of "
                          "refusing them (422); default false")
    previews: StrictBool | None = Field(
        None, description="put a small PNG (base64, as `preview`) of the current clean-image estimate of the job's "
                          "images into the progress events every few steps; default false")


class NormalizedRequest(BaseModel):
    """The request as the job runs it: defaults filled, class name resolved to its index, seed chosen."""

    class_label: int | None
    num_images: int
    guidance: GuidanceKind
    guidance_scale: float
    sampler: SamplerName
    steps: int
    eta: float
    seed: int
    strength: float = 1.0
    resample_steps: int = 1
    previews: bool = False
    init_image: str | None = Field(None, description="the normalized init image, as sha256:<hex of its PNG>")
    mask: str | None = Field(None, description="the normalized mask, as sha256:<hex of its PNG>")


class Progress(BaseModel):
    step: int
    total: int


class ImageRef(BaseModel):
    index: int
    seed: int
    url: str = Field(description="GET it for the PNG")


class JobError(BaseModel):
    code: str
    message: str


class JobDocument(BaseModel):
    """A job as `GET /jobs/{id}` shows it."""

    id: str
    status: JobStatusName
    model: str = Field(description="the model the job runs, as name@version")
    request: NormalizedRequest
    queue_position: int | None = Field(description="0 = next, while queued; else null")
    progress: Progress | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    images: list[ImageRef] = Field(description="filled once the job succeeded")
    grid_url: str | None = Field(description="all images in one PNG, once the job succeeded")
    error: JobError | None = Field(description="set once the job failed")
    notes: list[str] = Field(default_factory=list, description="what the service did to the request, e.g. "
                                                                "resized init_image")


class FieldError(BaseModel):
    field: str
    message: str


class ProblemDocument(BaseModel):
    """RFC 9457 problem details, the body of every 4xx and 5xx (media type application/problem+json)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="a URI naming the kind of problem; about:blank for a plain HTTP status")
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = Field(None, description="validation errors: one per offending field")


class SamplingDefaults(BaseModel):
    """What a request to this model gets for the fields it leaves out."""

    sampler: SamplerName
    steps: int
    guidance: GuidanceKind
    guidance_scale: float
    eta: float
    num_images: int


class ModelInfo(BaseModel):
    ref: str = Field(description="name@version, the form `model` accepts")
    name: str
    version: int
    kind: str = Field(description="generator, guidance-classifier or eval-classifier; only generators generate")
    latest: bool = Field(description="the newest version of its name, used when a request gives the name alone")
    default: bool = Field(description="the model a request without `model` gets")
    image_size: int
    channels: int
    class_names: list[str]
    defaults: SamplingDefaults | None = Field(description="sampling defaults of a generator; null otherwise")
    quality: dict[str, Any] = Field(description="the measured quality card (FID, accuracy...)")
    links: dict[str, Any] = Field(description="related models by role, e.g. guidance_classifier")
    created_at: str
    notes: str


class SamplerInfo(BaseModel):
    name: SamplerName
    description: str
    default: bool = Field(description="the sampler a request gets when neither it nor the model card names one")
    defaults: dict[str, Any] = Field(description="parameter defaults when the model card gives none")


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready"]
    redis: Literal["ok"]
    workers: int = Field(description="workers with a heartbeat younger than WORKER_HEARTBEAT_TTL")
