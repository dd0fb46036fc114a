"""Which stored generator a command uses: the one named by `--model`, or a sensible default."""

from __future__ import annotations

from imagegen.errors import UsageError
from model_store import ModelCard, ModelStore
from model_store.errors import InvalidModelNameError, UnknownModelError

DEFAULT_MODEL = "fashion-mnist"
"""The generator used when `--model` is left out and the store holds one by this name."""


def generators(store: ModelStore) -> list[ModelCard]:
    """The generator cards of the store (every version), sorted by name then version."""
    return [card for card in store.list() if card.kind == "generator"]


def _listing(cards: list[ModelCard]) -> str:
    return ", ".join(card.ref for card in cards) if cards else "none"


def pick_generator(store: ModelStore, ref: str | None, flag: str = "--model") -> ModelCard:
    """The card of generator `ref` ("name" or "name@version"); with no ref, the store's
    `fashion-mnist` if it has one, else its only generator; UsageError otherwise."""
    if ref is None:
        cards = generators(store)
        names = sorted({card.name for card in cards})
        if not names:
            raise UsageError(f"no generator in the store at {store.root}; train one with `imagegen train` "
                             f"(or point {flag} / --store elsewhere)")
        if DEFAULT_MODEL in names:
            ref = DEFAULT_MODEL
        elif len(names) == 1:
            ref = names[0]
        else:
            raise UsageError(f"{flag} is needed: the store at {store.root} has several generators and none "
                             f"named {DEFAULT_MODEL!r}: {_listing(cards)}")
    try:
        card = store.resolve(ref)
    except (UnknownModelError, InvalidModelNameError) as e:
        raise UsageError(f"{flag}: {e}; generators there: {_listing(generators(store))}") from None
    if card.kind != "generator":
        raise UsageError(f"{flag} {ref!r} is a {card.kind}, not a generator; generators in the store at "
                         f"{store.root}: {_listing(generators(store))}")
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
