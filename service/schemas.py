"""The API's response bodies, as pydantic models (they are also the OpenAPI schema). The request
and its normalized echo are the contract's (`contract.schema`), shared with the CLI and the worker."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from contract.jobs import JobStatus
from contract.names import GUIDANCE_KINDS, SAMPLERS
from contract.schema import NormalizedRequest

SamplerName = Literal[tuple(SAMPLERS)]  # type: ignore[valid-type]
GuidanceKind = Literal[tuple(GUIDANCE_KINDS)]  # type: ignore[valid-type]
JobStatusName = Literal[tuple(s.value for s in JobStatus)]  # type: ignore[valid-type]


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
    queue_position: int | None = Field(description="0 = next in its model's queue, while queued; else null")
    waiting_for: str | None = Field(None, description="while queued and no live worker may serve its model: what "
                                                      "the job waits for (it waits; it is not failed); else null")
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
    image_size: int = Field(description="side of the square images it makes, in pixels (decoded, for a latent model)")
    channels: int = Field(description="1 for grayscale, 3 for RGB")
    backbone: str = Field(description="the network: unet (this project's trainer), diffusers-unet2d or diffusers-dit "
                                      "(imported), noise-classifier or eval-classifier")
    space: Literal["pixel", "latent"] = Field(description="where it samples: pixels, or a VAE's latents decoded "
                                                          "to pixels")
    latent_shape: list[int] | None = Field(description="[C, H, W] of a latent model's latents; null for pixels")
    num_train_steps: int | None = Field(description="T of its noise schedule: requests may ask for 1..T steps")
    null_class: int | None = Field(description="label of the unconditional class used by classifier-free guidance; "
                                               "null when it has none (then guidance_scale must be 1)")
    class_names: list[str] = Field(description="label i is class_names[i]; class_label accepts an index or a name")
    defaults: SamplingDefaults | None = Field(description="sampling defaults of a generator; null otherwise")
    quality: dict[str, Any] = Field(description="the measured quality card (FID, accuracy...)")
    links: dict[str, Any] = Field(description="related models by role, e.g. guidance_classifier")
    created_at: str
    notes: str
    served_by: list[str] = Field(default_factory=list, description="live workers that may serve this generator "
                                                                   "(they listen to its queue)")
    loaded_on: list[str] = Field(default_factory=list, description="live workers that hold it loaded now; a worker "
                                                                   "with a memory budget loads it when a job needs it")


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
    workers: int = Field(description="workers with a heartbeat younger than WORKER_HEARTBEAT_TTL (not counted, "
                                     "0, with ?workers=0)")
