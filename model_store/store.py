"""A directory of versioned models: `<root>/<name>/<version>/{weights.safetensors,card.json}`.

This module never imports torch: the service lists and resolves models without it. Reading and
writing the tensors themselves is `model_store.weights`, the store's torch side.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model_store.cards import ModelCard
from model_store.errors import InvalidModelNameError, ModelIntegrityError, UnknownModelError

log = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.safetensors"
"""Name of the weights file inside a version directory."""

CARD_FILE = "card.json"
"""Name of the card file inside a version directory."""

STORE_ENV = "MODEL_STORE"
"""Environment variable that overrides the store root."""

# Lowercase only, so that two names never map to one directory on a case-insensitive filesystem;
# no "/" and no leading "." so that a name can only ever be one plain directory under the root.
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_VERSION = re.compile(r"[1-9][0-9]*")

# Fields the store owns: a caller cannot pick the version or vouch for the hash.
_STORE_FIELDS = ("name", "version", "sha256")

UPDATABLE_FIELDS = ("defaults", "quality", "notes", "training")
"""Card fields `update_card` may rewrite: what is learned about a model after it is saved (its
measured quality, the sampling defaults chosen from it, notes for people, and recipe facts the
export could not know, such as the commit of a checkout without git). Everything else describes
the weights themselves and changes only with a new version."""


def default_store_root() -> Path:
    """The store root: $MODEL_STORE if set, else the `models/` directory of this package."""
    env = os.environ.get(STORE_ENV)
    return Path(env).expanduser() if env else Path(__file__).parent / "models"


def check_name(name: str) -> str:
    """Return `name` if it is a valid model name, else raise InvalidModelNameError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise InvalidModelNameError(
            f"invalid model name {name!r}: use 1-64 characters of a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit, without '..'"
        )
    return name


def _check_version(version: Any) -> int:
    if isinstance(version, int) and not isinstance(version, bool) and version >= 1:
        return version
    if isinstance(version, str) and _VERSION.fullmatch(version):
        return int(version)
    raise InvalidModelNameError(f"invalid model version {version!r}: versions are positive integers (1, 2, ...)")


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ModelStore:
    """Versioned models under one root directory."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_store_root()

    def __repr__(self) -> str:
        return f"ModelStore({str(self.root)!r})"

    # --- reading -------------------------------------------------------------------------------

    def _version_dirs(self, name: str) -> list[int]:
        """Every version directory of `name`, readable card or not (for numbering new versions)."""
        model_dir = self.root / name
        if not model_dir.is_dir():
            return []
        return sorted(int(p.name) for p in model_dir.iterdir() if _VERSION.fullmatch(p.name) and p.is_dir())

    def _read_card(self, name: str, version: int) -> ModelCard:
        path = self.root / name / str(version) / CARD_FILE
        card = ModelCard.from_dict(json.loads(path.read_text(encoding="utf-8")))
        # a directory copied or renamed by hand would otherwise serve under a ref its card denies
        if (card.name, card.version) != (name, version):
            raise ModelIntegrityError(f"{path} describes {card.ref}, but sits at {name}@{version}")
        return card

    def _cards_of(self, name: str) -> list[ModelCard]:
        cards = []
        for version in self._version_dirs(name):
            try:
                cards.append(self._read_card(name, version))
            except (OSError, ValueError, TypeError, ModelIntegrityError) as e:
                # one broken directory must not hide the rest of the store
                log.warning("skipping %s: unreadable card (%s)", self.root / name / str(version), e)
        return cards

    def list(self) -> list[ModelCard]:
        """Every version of every model with a readable card, sorted by name then version."""
        if not self.root.is_dir():
            return []
        names = sorted(p.name for p in self.root.iterdir()
                       if p.is_dir() and _NAME.fullmatch(p.name) and ".." not in p.name)
        return [card for name in names for card in self._cards_of(name)]

    def names(self) -> list[str]:
        """Names of the models that have at least one readable version, sorted."""
        return sorted({card.name for card in self.list()})

    def resolve(self, ref: str) -> ModelCard:
        """The card of "name" (its newest version) or of "name@version"."""
        name, sep, version_text = ref.partition("@") if isinstance(ref, str) else (ref, "", "")
        check_name(name)
        version = _check_version(version_text) if sep else None
        cards = self._cards_of(name)
        if not cards:
            raise UnknownModelError(f"unknown model {name!r}; {self._inventory()}")
        if version is None:
            return cards[-1]
        for card in cards:
            if card.version == version:
                return card
        listed = ", ".join(card.ref for card in cards)
        raise UnknownModelError(f"unknown version {version} of model {name!r}; the store at {self.root} has: {listed}")

    def _inventory(self) -> str:
        cards = self.list()
        if not cards:
            return f"the store at {self.root} is empty"
        return f"the store at {self.root} has: {', '.join(card.ref for card in cards)}"

    def weights_path(self, card: ModelCard) -> Path:
        """Where the weights of `card` live."""
        return self.root / check_name(card.name) / str(_check_version(card.version)) / WEIGHTS_FILE

    def verified_weights(self, ref_or_card: str | ModelCard) -> tuple[ModelCard, bytes]:
        """The card and the bytes of a model's weights file, after checking them against the card's
        sha256 (the torch side, `model_store.weights`, parses these same bytes)."""
        card = ref_or_card if isinstance(ref_or_card, ModelCard) else self.resolve(ref_or_card)
        path = self.weights_path(card)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ModelIntegrityError(f"weights file {path} of {card.ref} is missing") from None
        # hash and parse the same bytes: a file swapped between the check and the load cannot slip in
        actual = hashlib.sha256(data).hexdigest()
        if actual != card.sha256:
            raise ModelIntegrityError(
                f"weights file {path} of {card.ref} fails its integrity check: "
                f"expected sha256 {card.sha256}, got {actual}; refusing to load it"
            )
        return card, data

    # --- writing -------------------------------------------------------------------------------

    def add_version(self, name: str, write_weights: Callable[[Path], None], card_fields: dict[str, Any]) -> ModelCard:
        """Store the next version of `name`: `write_weights(path)` writes its weights file, and the
        card is built from `card_fields` (which must give the weights' dtype).

        The store sets name, version and sha256; created_at defaults to now. Nothing is left behind
        if the card is invalid or the writing fails.
        """
        check_name(name)
        owned = sorted(set(_STORE_FIELDS) & set(card_fields))
        if owned:
            raise ValueError(f"card fields {owned} are set by the store; leave them out")
        fields = {"created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), **card_fields, "name": name}
        # check the card before writing anything: a bad card must not leave files behind
        ModelCard.from_dict({**fields, "version": 1, "sha256": ""})

        model_dir = self.root / name
        model_dir.mkdir(parents=True, exist_ok=True)
        # the temporary directory sits next to the versions so that the final rename stays on one
        # filesystem (atomic); its leading "." keeps it out of listings
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=model_dir))
        # mkdtemp makes the folder private (0700); a stored model is for every user (a service's own
        # account, a container's non-root user), so give it the usual modes
        tmp.chmod(0o755)
        try:
            weights = tmp / WEIGHTS_FILE
            write_weights(weights)
            weights.chmod(0o644)
            fields["sha256"] = _sha256_file(weights)
            return self._publish(tmp, model_dir, fields)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def update_card(self, ref: str | ModelCard, changes: dict[str, Any]) -> ModelCard:
        """Rewrite some `UPDATABLE_FIELDS` of a stored card in place; returns the new card.

        The weights file is not touched, so the card's sha256 (a digest of the weights alone) stays
        valid. The new card.json is written beside the old one and renamed over it, so a reader sees
        the old card or the new one, never half of one. A process that already loaded the model
        keeps the card it read until it loads it again."""
        refused = sorted(set(changes) - set(UPDATABLE_FIELDS))
        if refused:
            raise ValueError(f"card fields {refused} cannot be updated in place; "
                             f"updatable: {', '.join(UPDATABLE_FIELDS)}")
        for key, value in changes.items():
            if not isinstance(value, str if key == "notes" else dict):
                raise ValueError(f"card field {key!r} must be {'a string' if key == 'notes' else 'a JSON object'}, "
                                 f"got {type(value).__name__}")
        card = ref if isinstance(ref, ModelCard) else self.resolve(ref)
        # read it again from disk: `ref` may be a card loaded before another update
        current = self._read_card(card.name, card.version)
        updated = ModelCard.from_dict({**current.to_dict(), **changes})
        path = self.root / current.name / str(current.version) / CARD_FILE
        tmp = path.with_name(f".{CARD_FILE}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(updated.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
            tmp.chmod(0o644)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return updated

    def _publish(self, tmp: Path, model_dir: Path, fields: dict[str, Any]) -> ModelCard:
        """Write the card and rename `tmp` to the next free version, retrying if another saver won it."""
        version = (self._version_dirs(model_dir.name) or [0])[-1] + 1
        for _ in range(100):
            card = ModelCard.from_dict({**fields, "version": version})
            text = json.dumps(card.to_dict(), indent=2, sort_keys=True) + "\n"
            (tmp / CARD_FILE).write_text(text, encoding="utf-8")
            target = model_dir / str(version)
            try:
                # rename onto an existing version directory fails, so two concurrent saves cannot
                # both become version N
                os.rename(tmp, target)
            except OSError:
                if not target.exists():
                    raise
                version += 1
                continue
            return card
        raise OSError(f"could not find a free version under {model_dir}")
