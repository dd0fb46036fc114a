"""Discovery: the models in the store and the samplers, and which generator a request gets."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from diffusion.names import SAMPLERS
from imagegen.model_choice import DEFAULT_MODEL
from imagegen.settings import FALLBACK_DEFAULTS
from model_store import ModelCard, ModelStore
from model_store.errors import InvalidModelNameError, UnknownModelError
from service.auth import authenticate
from service.deps import BackendDep
from service.problems import Problem, invalid, problem_type, responses
from service.schemas import ModelInfo, SamplerInfo
from service.settings import Settings

router = APIRouter(tags=["models"], dependencies=[Depends(authenticate)], responses=responses(401, 403, 429))

DEFAULT_NUM_IMAGES = 4


def generators(store: ModelStore) -> list[ModelCard]:
    """Every version of every generator in the store, sorted by name then version."""
    return [card for card in store.list() if card.kind == "generator"]


def default_model(settings: Settings, cards: list[ModelCard]) -> str | None:
    """The model a request without `model` gets: DEFAULT_MODEL from the settings, else
    `fashion-mnist` when the store has it, else the store's only generator; None if ambiguous."""
    if settings.default_model:
        return settings.default_model
    names = sorted({card.name for card in cards})
    if DEFAULT_MODEL in names:
        return DEFAULT_MODEL
    return names[0] if len(names) == 1 else None


def _listing(cards: list[ModelCard]) -> str:
    return ", ".join(card.ref for card in cards) or "none"


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
                                                         f"no default: {_listing(cards)}"}])
    try:
        card = store.resolve(ref)
    except (UnknownModelError, InvalidModelNameError):
        if by_default:
            # the deployment is misconfigured, not the request
            raise Problem(503, f"the default model {ref!r} (DEFAULT_MODEL) is not in the model store; name one of: "
                               f"{_listing(cards)}", type=problem_type("no-model"), headers={"Retry-After": "60"}) from None
        # the store's own message names its directory: not for clients
        raise invalid([{"field": "model", "message": f"unknown model {ref!r}; available: {_listing(cards)}"}]) from None
    if card.kind != "generator":
        raise invalid([{"field": "model", "message": f"{card.ref} is a {card.kind}, not a generator; "
                                                     f"available: {_listing(cards)}"}])
    return card


def sampling_defaults(card: ModelCard) -> dict[str, Any]:
    """What a request to `card` gets for the fields it leaves out (the request normalizer's rules)."""
    d = card.defaults
    sampler = d.get("sampler", FALLBACK_DEFAULTS["sampler"])
    return {
        "sampler": sampler,
        "steps": d.get("steps", FALLBACK_DEFAULTS["steps"]),
        "guidance": "cfg",
        "guidance_scale": float(d.get("guidance_scale", FALLBACK_DEFAULTS["guidance_scale"])),
        "eta": float(d.get("eta", 0.0)) if sampler == "ddim" else 0.0,
        "num_images": DEFAULT_NUM_IMAGES,
    }


def model_info(card: ModelCard, latest: bool, default: bool) -> dict[str, Any]:
    return {
        "ref": card.ref, "name": card.name, "version": card.version, "kind": card.kind, "latest": latest,
        "default": default, "image_size": card.image_size, "channels": card.channels,
        "class_names": card.class_names,
        "defaults": sampling_defaults(card) if card.kind == "generator" else None,
        "quality": card.quality, "links": card.links, "created_at": card.created_at, "notes": card.notes,
    }


def _catalog(store: ModelStore, settings: Settings) -> list[dict[str, Any]]:
    cards = store.list()
    newest = {card.name: card.version for card in cards}  # sorted by version: the last one wins
    default_name = default_model(settings, [c for c in cards if c.kind == "generator"])
    default_ref = None
    if default_name is not None:
        name, _, version = default_name.partition("@")
        default_ref = f"{name}@{version or newest.get(name)}"
    return [model_info(card, card.version == newest[card.name], card.ref == default_ref) for card in cards]


@router.get("/models", response_model=list[ModelInfo], summary="Every model in the store",
            description="Every version of every model: generators, and the classifiers they link to. "
                        "`latest` marks the version a bare name resolves to, `default` the model a request "
                        "without `model` gets.")
async def list_models(backend: BackendDep) -> list[dict[str, Any]]:
    return await run_in_threadpool(_catalog, backend.store, backend.settings)


@router.get("/models/{ref}", response_model=ModelInfo, summary="One model",
            description="`name` (its latest version) or `name@version`.", responses=responses(404))
async def get_model(ref: str, backend: BackendDep) -> dict[str, Any]:
    def one() -> dict[str, Any]:
        for info in _catalog(backend.store, backend.settings):
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
