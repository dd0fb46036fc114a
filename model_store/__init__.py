"""Versioned models on disk: safetensors weights plus a JSON card, checked by sha256 before loading.

Importing this package does not import torch, so that the HTTP service can use it.
"""

from model_store.cards import ARCHITECTURE_TYPES, KINDS, ModelCard
from model_store.errors import InvalidModelNameError, ModelIntegrityError, ModelStoreError, UnknownModelError
from model_store.store import ModelStore, check_name, default_store_root

__all__ = [
    "ARCHITECTURE_TYPES",
    "KINDS",
    "InvalidModelNameError",
    "ModelCard",
    "ModelIntegrityError",
    "ModelStore",
    "ModelStoreError",
    "UnknownModelError",
    "check_name",
    "default_store_root",
]
