"""Discovery: the models in the store and the samplers, and which generator a request gets."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from contract.models import default_generator, generators, listing
from contract.names import SAMPLERS
from contract.queues import queue_model
from contract.request import FALLBACK_DEFAULTS, request_defaults
from contract.settings import Settings
from contract.workers import read_worker_models
from model_store import ModelCard, ModelStore
from model_store.errors import InvalidModelNameError, UnknownModelError
from service.auth import authenticate
from service.deps import Backend, BackendDep
from service.problems import Problem, invalid, problem_type, responses
from service.schemas import ModelInfo, SamplerInfo

router = APIRouter(tags=["models"], dependencies=[Depends(authenticate)], responses=responses(401, 403, 429))

def default_model(settings: Settings, cards: list[ModelCard]) -> str | None:
    """The model a request without `model` gets (DEFAULT_MODEL, else the store's default)."""
    return default_generator(cards, settings.default_model)


def find_generator(store: ModelStore, settings: Settings, ref: str | None) -> ModelCard:
    """The generator a request names (or the default one), else a 422 naming `model` and listing
    what exists (a 503 when the deployment itself has no usable default)."""
    cards = generators(store)
    by_default = ref is None
    if ref is None:
        ref = default_model(settings, cards)
        if ref is None:
            if not cards:
                raise Problem(503, "no generator is installed in the model store",
                              type=problem_type("no-model"), headers={"Retry-After": "60"})
            raise invalid([{"field": "model", "message": f"is required: this deployment has several generators and "
                                                         f"no default: {listing(cards)}"}])
    try:
        card = store.resolve(ref)
    except (UnknownModelError, InvalidModelNameError):
        if by_default:
            # the deployment is misconfigured, not the request
            raise Problem(503, f"the default model {ref!r} (DEFAULT_MODEL) is not in the model store; name one of: "
                               f"{listing(cards)}", type=problem_type("no-model"),
                          headers={"Retry-After": "60"}) from None
        # the store's own message names its directory: not for clients
        raise invalid([{"field": "model", "message": f"unknown model {ref!r}; available: {listing(cards)}"}]) from None
    if card.kind != "generator":
        raise invalid([{"field": "model", "message": f"{card.ref} is a {card.kind}, not a generator; "
                                                     f"available: {listing(cards)}"}])
    return card


def model_info(card: ModelCard, latest: bool, default: bool) -> dict[str, Any]:
    return {
        "ref": card.ref, "name": card.name, "version": card.version, "kind": card.kind, "latest": latest,
        "default": default, "image_size": card.image_size, "channels": card.channels,
        "backbone": card.backbone, "space": card.space,
        "latent_shape": card.architecture["config"].get("latent_shape") if card.space == "latent" else None,
        "num_train_steps": card.num_train_steps if card.schedule else None,
        "null_class": card.null_class if card.kind == "generator" else None,
        "class_names": card.class_names,
        "defaults": request_defaults(card) if card.kind == "generator" else None,
        "quality": card.quality, "links": card.links, "created_at": card.created_at, "notes": card.notes,
    }


def model_holders(backend: Backend) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(the live workers that may serve each model, those that hold it loaded), by ref: which models a
    worker may serve is the queues it listens to (RQ's record of it), which it holds is what it
    advertises (contract.workers)."""
    name = backend.settings.queue_name
    workers = backend.live_workers()
    serving: dict[str, list[str]] = {}
    for worker in workers:
        for queue in worker.queue_names():
            if (ref := queue_model(name, queue)) is not None:
                serving.setdefault(ref, []).append(worker.name)
    holding: dict[str, list[str]] = {}
    for worker, models in read_worker_models(backend.redis, [w.name for w in workers]).items():
        for ref in models.loaded:
            holding.setdefault(ref, []).append(worker)
    return ({ref: sorted(names) for ref, names in serving.items()},
            {ref: sorted(names) for ref, names in holding.items()})


def _catalog(backend: Backend) -> list[dict[str, Any]]:
    store, settings = backend.store, backend.settings
    serving, holding = model_holders(backend)
    cards = store.list()
    newest = {card.name: card.version for card in cards}  # sorted by version: the last one wins
    default_name = default_model(settings, [c for c in cards if c.kind == "generator"])
    default_ref = None
    if default_name is not None:
        name, _, version = default_name.partition("@")
        default_ref = f"{name}@{version or newest.get(name)}"
    return [{**model_info(card, card.version == newest[card.name], card.ref == default_ref),
             "served_by": serving.get(card.ref, []), "loaded_on": holding.get(card.ref, [])} for card in cards]


@router.get("/models", response_model=list[ModelInfo], summary="Every model in the store",
            description="Every version of every model: generators, and the classifiers they link to. "
                        "`latest` marks the version a bare name resolves to, `default` the model a request "
                        "without `model` gets; `served_by` names the live workers that may serve a generator, "
                        "`loaded_on` those that hold it loaded now.")
async def list_models(backend: BackendDep) -> list[dict[str, Any]]:
    return await run_in_threadpool(_catalog, backend)


@router.get("/models/{ref}", response_model=ModelInfo, summary="One model",
            description="`name` (its latest version) or `name@version`.", responses=responses(404))
async def get_model(ref: str, backend: BackendDep) -> dict[str, Any]:
    def one() -> dict[str, Any]:
        for info in _catalog(backend):
            if info["ref"] == ref or (info["name"] == ref and info["latest"]):
                return info
        raise Problem(404, f"unknown model {ref!r}; see GET /models", type=problem_type("model-not-found"),
                      title="Model not found")

    return await run_in_threadpool(one)


@router.get("/samplers", response_model=list[SamplerInfo], summary="The samplers",
            description="Each sampler with a one-line description and its parameter defaults (a model card "
                        "may override steps).")
async def list_samplers() -> list[dict[str, Any]]:
    return [
        {"name": name, "description": description, "default": name == FALLBACK_DEFAULTS["sampler"],
         "defaults": {"steps": FALLBACK_DEFAULTS["steps"], **({"eta": 0.0} if name == "ddim" else {})}}
        for name, description in SAMPLERS.items()
    ]
