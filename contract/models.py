"""Which stored model a request or a command uses: the one it names, or the deployment's default;
and whether a generator's linked guidance classifier can be used. Shared by the API (which answers
422 or 503) and the CLI (one error line)."""

from __future__ import annotations

from contract.errors import UsageError
from model_store import ModelCard, ModelStore
from model_store.errors import InvalidModelNameError, UnknownModelError

DEFAULT_MODEL = "fashion-mnist"
"""The generator used when a request (or `--model`) names none and the store holds one by this name."""


def generators(store: ModelStore) -> list[ModelCard]:
    """The generator cards of the store (every version), sorted by name then version."""
    return [card for card in store.list() if card.kind == "generator"]


def listing(cards: list[ModelCard]) -> str:
    """The refs of `cards` for a message ("none" when there are none)."""
    return ", ".join(card.ref for card in cards) if cards else "none"


def default_generator(cards: list[ModelCard], configured: str | None = None) -> str | None:
    """The model a request without one gets: `configured` (DEFAULT_MODEL of the deployment), else
    `fashion-mnist` when the store has it, else the store's only generator; None if ambiguous."""
    if configured:
        return configured
    names = sorted({card.name for card in cards})
    if DEFAULT_MODEL in names:
        return DEFAULT_MODEL
    return names[0] if len(names) == 1 else None


def pick_generator(store: ModelStore, ref: str | None, flag: str = "--model") -> ModelCard:
    """The card of generator `ref` ("name" or "name@version"); with no ref, the store's default
    (`default_generator`); UsageError naming `flag` otherwise."""
    if ref is None:
        cards = generators(store)
        ref = default_generator(cards)
        if ref is None:
            if not cards:
                raise UsageError(f"no generator in the store at {store.root}; train one with `imagegen train` "
                                 f"(or point {flag} / --store elsewhere)")
            raise UsageError(f"{flag} is needed: the store at {store.root} has several generators and none "
                             f"named {DEFAULT_MODEL!r}: {listing(cards)}")
    try:
        card = store.resolve(ref)
    except (UnknownModelError, InvalidModelNameError) as e:
        raise UsageError(f"{flag}: {e}; generators there: {listing(generators(store))}") from None
    if card.kind != "generator":
        raise UsageError(f"{flag} {ref!r} is a {card.kind}, not a generator; generators in the store at "
                         f"{store.root}: {listing(generators(store))}")
    return card


def resolve_kind(store: ModelStore, ref: str, kind: str, flag: str) -> ModelCard:
    """The card `ref` names, which must be a model of `kind`; a one-line error naming `flag` otherwise."""
    try:
        card = store.resolve(ref)
    except (UnknownModelError, InvalidModelNameError) as e:
        raise UsageError(f"{flag}: {e}") from None
    if card.kind != kind:
        raise UsageError(f"{flag} {card.ref} is a {card.kind}, not a{'n' if kind[0] in 'aeiou' else ''} {kind}")
    return card


def classifier_problem(store: ModelStore, card: ModelCard) -> bool | str:
    """True if the guidance classifier `card` links is in the store; else why not (for a message).
    A card that links none is `resolve_settings`' own check."""
    link = card.links.get("guidance_classifier")
    if not link:
        return True
    try:
        linked = store.resolve(link)
    except (UnknownModelError, InvalidModelNameError):
        return f"the guidance classifier {link!r} of {card.ref} is not installed"
    if linked.kind != "guidance-classifier":
        return f"{card.ref} links {linked.ref}, a {linked.kind}, not a guidance-classifier"
    return True
