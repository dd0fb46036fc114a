"""Errors raised by the model store; the service maps each to an HTTP status."""


class ModelStoreError(Exception):
    """Base of every error the store raises on purpose."""


class UnknownModelError(ModelStoreError):
    """No model (or no such version of a model) in the store; the message lists what exists."""


class ModelIntegrityError(ModelStoreError):
    """A stored file does not match its card (sha256 mismatch, missing file, card in the wrong place)."""


class InvalidModelNameError(ModelStoreError, ValueError):
    """A model name or version that could not name a directory inside the store."""
