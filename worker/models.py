"""Which generators a worker serves, and loading them once onto its device."""

from __future__ import annotations

import logging
import threading

import torch

from model_store import ModelStore
from model_store.loading import Generator, build_module, load_generator

log = logging.getLogger(__name__)


def resolve_device(name: str) -> str:
    """"cpu" or "cuda" for WORKER_DEVICE / --device; "auto" is cuda when torch sees a GPU."""
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device cuda asked for, but CUDA is not available here (torch {torch.__version__}, "
                         f"CUDA build {torch.version.cuda or 'none'}); use cpu or auto")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def generator_refs(store: ModelStore, wanted: list[str]) -> list[str]:
    """The refs ("name@version") to load: `wanted` resolved in the store, or every generator in it."""
    if not wanted:
        refs = [card.ref for card in store.list() if card.kind == "generator"]
        if not refs:
            raise ValueError(f"the model store at {store.root} holds no generator; train one, or point "
                             "MODEL_STORE at a store that has one")
        return refs
    refs = []
    for ref in wanted:
        card = store.resolve(ref)
        if card.kind != "generator":
            raise ValueError(f"{card.ref} is a {card.kind}, not a generator; a worker serves generators only")
        refs.append(card.ref)
    return list(dict.fromkeys(refs))


def load_generators(store: ModelStore, refs: list[str], device: str) -> dict[str, Generator]:
    """Each generator (and its guidance classifier) in float32 on `device`, keyed by ref."""
    # float32 everywhere: the models are small, and the classifier gradient wants full precision
    return {ref: load_generator(store, ref, device=device, dtype=torch.float32) for ref in refs}


def module_bytes(module: torch.nn.Module | None, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of a network's parameters and buffers, its floating-point tensors counted in `dtype` (the
    worker loads every model in float32)."""
    if module is None:
        return 0
    tensors = [*module.parameters(), *module.buffers()]
    width = torch.empty((), dtype=dtype).element_size()
    return sum(t.numel() * (width if t.is_floating_point() else t.element_size()) for t in tensors)


def generator_bytes(gen: Generator) -> int:
    """Bytes a loaded generator takes on its device: its network (with a latent model's VAE, which is
    part of it) and its guidance classifier."""
    return module_bytes(gen.model, torch.float32) + module_bytes(gen.classifier, torch.float32)


def estimated_bytes(store: ModelStore, ref: str) -> int:
    """`generator_bytes` of `ref` before loading it: its networks built from their cards on the meta
    device (no memory, no weights read), so that room can be made before the load."""
    card = store.resolve(ref)
    cards = [card]
    link = card.links.get("guidance_classifier")
    if link:
        cards.append(store.resolve(link))
    total = 0
    for c in cards:
        with torch.device("meta"):
            total += module_bytes(build_module(c), torch.float32)
    return total


_cache: dict[tuple[str, str, str], Generator] = {}
_cache_lock = threading.Lock()


def cached_generator(store: ModelStore, ref: str, device: str) -> Generator:
    """A generator loaded once per process (for `worker.tasks.generate` under a plain `rq worker`)."""
    card = store.resolve(ref)
    key = (str(store.root), card.ref, device)
    with _cache_lock:
        if key not in _cache:
            log.info("loading %s onto %s", card.ref, device)
            _cache[key] = load_generator(store, card.ref, device=device, dtype=torch.float32)
        return _cache[key]
