"""The RQ queue of each model: one queue per generator version, named from QUEUE_NAME and its ref.

A job goes onto the queue of the model its record names (`imagegen:fashion-mnist@2` under the
default QUEUE_NAME), and a worker listens to the queues of the models it may serve. So a job for a
model that no live worker serves waits in its own queue and blocks no other model's jobs, and no
worker ever takes a job it cannot run.

Why name@version and not the bare name: the API resolves a request's model at submit (a bare name
means the newest version then), and the job record holds that ref. Versions never change once
published, so the queue of a ref names exactly the weights its jobs need; a worker pinned to
`fashion-mnist@1` (WORKER_MODELS) would otherwise take `@2`'s jobs off a shared `fashion-mnist`
queue and have to put them back. The price is one queue (and one KEDA trigger) per version served.

The API, the worker, the recovery of dead workers' jobs, the queue-depth checks and metrics, and the
Kubernetes deployment's tests all name queues through this module.
"""

from __future__ import annotations

from contract.models import generators
from model_store import ModelStore

SEPARATOR = ":"
"""Between QUEUE_NAME and the model's ref; a model name never holds it (the store allows
lower-case letters, digits, '.', '_' and '-')."""


def is_ref(ref: str) -> bool:
    """Whether `ref` is a full model ref, name@version."""
    name, at, version = ref.partition("@")
    return bool(name) and bool(at) and version.isdigit() and SEPARATOR not in name


def model_queue(queue_name: str, ref: str) -> str:
    """The RQ queue of the jobs of generator `ref` (name@version) under QUEUE_NAME `queue_name`."""
    if not is_ref(ref):
        raise ValueError(f"a model queue is named from a model ref name@version, got {ref!r}")
    return f"{queue_name}{SEPARATOR}{ref}"


def queue_model(queue_name: str, queue: str) -> str | None:
    """The ref whose queue `queue` is, or None when it is not a model queue under `queue_name` (the bare
    QUEUE_NAME queue of releases before the per-model queues, or another deployment's queue)."""
    prefix = f"{queue_name}{SEPARATOR}"
    if not queue.startswith(prefix):
        return None
    ref = queue[len(prefix):]
    return ref if is_ref(ref) else None


def store_queues(queue_name: str, store: ModelStore) -> dict[str, str]:
    """The queue of every generator version in `store`, by ref (sorted by name, then version)."""
    return {card.ref: model_queue(queue_name, card.ref) for card in generators(store)}
