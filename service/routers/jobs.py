"""Jobs: submit, poll, fetch PNGs, stream progress, cancel, delete."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from rq.exceptions import InvalidJobOperation
from rq.job import Job
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from contract.errors import InvalidField
from contract.image_inputs import ImageInputs, decode_base64_png, resolve_image_inputs
from contract.jobs import PREFIX, JobStatus, JobStore, job_id_time, job_url, new_job_id
from contract.request import API, Limits, resolve_settings
from contract.results import result_names
from contract.schema import GenerateRequest
from model_store import ModelCard
from service.auth import Caller, CallerDep, authenticate
from service.deps import Backend, BackendDep
from service.documents import TERMINAL_STATUSES, close, document, held, job_events, load, not_found, subscribe
from service.problems import Problem, invalid, problem_type, responses
from service.routers.models import find_generator
from service.schemas import JobDocument

# every job route needs a key where keys are configured; the routes also take the caller (cached per
# request) to scope jobs to their owner
router = APIRouter(tags=["jobs"], dependencies=[Depends(authenticate)], responses=responses(401, 403, 429))

TASK = "worker.tasks.generate"
"""Dotted path of the worker's task: the API never imports the worker (nor torch)."""

IDEMPOTENCY_TTL_S = 86_400
"""How long an Idempotency-Key maps to its job."""

MAX_WAIT_S = 60

QUEUE_FULL_RETRY_AFTER_S = 10
"""Retry-After of a 429 for a full queue: about how long a busy worker takes to drain a few batches."""

PNG_CACHE = "public, max-age=86400, immutable"  # a job's PNGs never change once written

PRIVATE_PNG_CACHE = "private, max-age=86400, immutable"
"""A key's PNGs: "public" would let a shared cache serve them to requests without the key."""


def _root(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/")


# --- submit --------------------------------------------------------------------------------------

def normalize(backend: Backend, body: GenerateRequest) -> tuple[ModelCard, dict[str, Any], ImageInputs]:
    """The generator, the request as the worker runs it (the record's `request`) and its normalized
    image inputs, or a 422."""
    card = find_generator(backend.store, backend.settings, body.model)
    limits = Limits(max_images=backend.settings.max_images_per_job, max_steps=backend.settings.max_steps)
    try:
        s = resolve_settings(card, vocab=API, limits=limits, store=backend.store, **body.settings())
        init_image = None if body.init_image is None else decode_base64_png(body.init_image, "init_image")
        mask = None if body.mask is None else decode_base64_png(body.mask, "mask")
        inputs = resolve_image_inputs(card, init_image, mask, strength=s.strength, resample_steps=s.resample_steps,
                                      resize=bool(body.resize))
    except InvalidField as e:
        raise invalid([{"field": field, "message": reason} for field, reason in e.fields]) from None
    return card, {"model": card.ref, **s.to_record(), **inputs.refs()}, inputs


def _fingerprint(body: GenerateRequest) -> str:
    # what the client asked for (a left-out field equals an explicit null), not the normalized
    # request: that holds a random seed, so a retry would never match it
    data = body.model_dump(mode="json", exclude_none=True)
    data["class_label"] = body.class_label
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _idem_key(owner: str | None, key: str) -> str:
    # per owner: the same Idempotency-Key from two API keys names two jobs, and one never finds the other's
    return f"{PREFIX}idem:{owner or 'open'}:{key}"


def _claim(backend: Backend, key: str, fingerprint: str, job_id: str) -> str | None:
    """None if `key` is now ours for `job_id`, else the job id it already names (same body)."""
    value = json.dumps({"job": job_id, "fingerprint": fingerprint})
    for _ in range(3):  # the key may expire between SET NX and GET
        if backend.redis.set(key, value, nx=True, ex=IDEMPOTENCY_TTL_S):
            return None
        raw = backend.redis.get(key)
        if raw is not None:
            held = json.loads(raw)
            if held["fingerprint"] != fingerprint:
                raise invalid([{"field": "Idempotency-Key", "message": "was already used with a different request "
                                                                       "body; use a new key for a new request"}])
            return held["job"]
    raise Problem(409, "Idempotency-Key is being reused concurrently; retry", headers={"Retry-After": "1"})


def _replay(backend: Backend, job_id: str) -> dict[str, Any]:
    record = backend.jobs.get(job_id)
    if record is not None:
        return record
    made = job_id_time(job_id)
    if made is not None and time.time() - made < 60:
        # the first request holds the key but has not written its record yet
        raise Problem(409, "a request with this Idempotency-Key is still being processed; retry",
                      type=problem_type("idempotency-in-progress"), headers={"Retry-After": "1"})
    raise not_found(job_id, backend.settings.result_ttl)


def create_and_enqueue(backend: Backend, job_id: str, card: ModelCard, request: dict[str, Any],
                       webhook_url: str | None, owner: str | None = None,
                       inputs: ImageInputs | None = None, idempotency: str | None = None) -> dict[str, Any]:
    """Write the record and the RQ job in one MULTI/EXEC: both exist or neither does, so no crash
    can leave a queued record that no worker will ever see (or an RQ job with no record).
    `idempotency` is the Redis key of the job's Idempotency-Key entry, which DELETE removes too."""
    settings = backend.settings
    inputs = inputs or ImageInputs()
    pipe = backend.redis.pipeline(transaction=True)
    pipe.multi()
    record = JobStore(pipe, result_ttl=settings.result_ttl).create(
        job_id, model=card.ref, request=request, webhook_url=webhook_url, owner=owner, inputs=inputs.encoded(),
        notes=inputs.notes, idempotency=idempotency)
    backend.queue_for(card.ref).enqueue_call(func=TASK, kwargs={"job": job_id}, job_id=job_id,
                                             timeout=settings.job_timeout, result_ttl=settings.result_ttl,
                                             failure_ttl=settings.result_ttl, pipeline=pipe)
    pipe.execute()
    return record


def check_queue_depth(backend: Backend, card: ModelCard) -> None:
    """429 while the model's queue holds MAX_QUEUE_DEPTH jobs or more: a full queue answers at once
    rather than taking work it would finish only long after the client gave up. Per model, so that a
    backlog of one model (say, one no worker serves yet) refuses no other model's jobs."""
    limit = backend.settings.max_queue_depth
    if limit > 0 and (depth := backend.queue_for(card.ref).count) >= limit:
        raise Problem(429, f"the queue of {card.ref} is full ({depth} jobs waiting, MAX_QUEUE_DEPTH {limit}); "
                           "retry later",
                      type=problem_type("queue-full"), title="Too Many Requests",
                      headers={"Retry-After": str(QUEUE_FULL_RETRY_AFTER_S)})


def submit(backend: Backend, body: GenerateRequest, idempotency_key: str | None,
           owner: str | None = None) -> dict[str, Any]:
    """Validate, then create and enqueue the job (or find the one this Idempotency-Key made)."""
    card, request, inputs = normalize(backend, body)
    job_id = new_job_id()
    idem = None if idempotency_key is None else _idem_key(owner, idempotency_key)
    if idem is not None:
        existing = _claim(backend, idem, _fingerprint(body), job_id)
        if existing is not None:
            return _replay(backend, existing)
    try:
        check_queue_depth(backend, card)
        webhook_url = None if body.webhook_url is None else str(body.webhook_url)
        return create_and_enqueue(backend, job_id, card, request, webhook_url, owner, inputs, idem)
    except BaseException:
        if idem is not None:
            # the job was not made: a retry with this key must make it, not find nothing
            try:
                backend.redis.delete(idem)
            except Exception:  # noqa: BLE001 - the original error is the one to raise
                pass
        raise


@router.post(
    "/generate", status_code=202, response_model=JobDocument, summary="Submit a generation job",
    response_description="Accepted: the job document (status queued), and Location: /jobs/{id}",
    description="Validates the request against the model card and queues a job. Answers 202 with the job "
                "document and `Location: /jobs/{id}`. With `?wait=N` the response is held until the job ends "
                "or N seconds pass: 200 with the final document if it ended, else 202. With an "
                "`Idempotency-Key` header, a retry within 24 h returns the job the first request made; the same "
                "key with a different body is refused with 422.",
    responses={200: {"model": JobDocument, "description": "The job ended within `wait` seconds (or an "
                                                          "Idempotency-Key replay of an ended job)"},
               **responses(409, 413, 422)},
)
async def generate(
    body: GenerateRequest, request: Request, response: Response, backend: BackendDep, caller: CallerDep,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S, description="seconds to hold the response for the job "
                                                                   "to end, 0..60")] = 0,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$",
                                                  description="makes a retry return the same job (24 h)")] = None,
) -> dict[str, Any]:
    record = await run_in_threadpool(submit, backend, body, idempotency_key, caller.owner)
    record = await held(backend, record, wait) or record  # deleted while held: answered as it was made
    doc = await run_in_threadpool(document, backend, record, _root(request))
    response.status_code = 200 if doc["status"] in TERMINAL_STATUSES else 202
    response.headers["Location"] = job_url(_root(request), doc["id"])
    return doc


# --- poll and fetch ------------------------------------------------------------------------------

@router.get("/jobs/{job_id}", response_model=JobDocument, summary="A job's status, progress and results",
            description="The job document. With `?wait=N` (a long poll) the response is held until the job ends "
                        "or N seconds pass, then the document as it is: a client waiting for a job makes one "
                        "request every N seconds instead of many.",
            responses=responses(404))
async def get_job(
    job_id: str, request: Request, backend: BackendDep, caller: CallerDep,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S, description="seconds to hold the response for the job "
                                                                   "to end, 0..60")] = 0,
) -> dict[str, Any]:
    record = await held(backend, await run_in_threadpool(load, backend, job_id, caller.owner), wait)
    if record is None:  # deleted while the request waited
        raise not_found(job_id, backend.settings.result_ttl)
    return await run_in_threadpool(document, backend, record, _root(request))


def _png(backend: Backend, caller: Caller, job_id: str, name: str, what: str) -> Response:
    record = load(backend, job_id, caller.owner)
    if record["status"] != JobStatus.SUCCEEDED.value:
        raise Problem(404, f"job {job_id} has no images: it is {record['status']}",
                      type=problem_type("no-images"), title="No images")
    indices = [im["index"] for im in record.get("images") or []]
    if what != "grid" and int(what) not in indices:
        raise Problem(404, f"job {job_id} has no image {what}; its images are 0..{len(indices) - 1}",
                      type=problem_type("image-not-found"), title="Image not found")
    data = backend.results.get(job_id, name)
    if data is None:
        raise Problem(404, f"the images of job {job_id} have expired", type=problem_type("job-expired"),
                      title="Job expired")
    cache = PNG_CACHE if caller.owner is None else PRIVATE_PNG_CACHE
    return Response(data, media_type="image/png", headers={"Cache-Control": cache})


_PNG_RESPONSE = {200: {"content": {"image/png": {}}, "description": "The PNG"}}


@router.get("/jobs/{job_id}/images/{index:int}.png", response_class=Response, summary="One image of a job",
            responses={**_PNG_RESPONSE, **responses(404)})
def get_image(job_id: str, index: int, backend: BackendDep, caller: CallerDep) -> Response:
    return _png(backend, caller, job_id, f"{index}.png", str(index))


@router.get("/jobs/{job_id}/grid.png", response_class=Response, summary="All images of a job in one grid",
            responses={**_PNG_RESPONSE, **responses(404)})
def get_grid(job_id: str, backend: BackendDep, caller: CallerDep) -> Response:
    return _png(backend, caller, job_id, "grid.png", "grid")


# --- progress and cancel -------------------------------------------------------------------------

@router.get(
    "/jobs/{job_id}/events", response_class=EventSourceResponse, summary="Progress as server-sent events",
    description="A `text/event-stream`: the current progress, then a `progress` event (`{\"step\", \"total\"}`) "
                "per sampler step, then one `end` event whose data is the final job document; the stream "
                "closes after it. Keep-alive comments come every 15 s. For a job submitted with `previews: true`, "
                "every few steps a progress event also carries `preview`: a base64 PNG grid (the layout of "
                "grid.png) of the current estimate of each clean image.",
    responses={200: {"content": {"text/event-stream": {}}, "description": "The event stream"}, **responses(404)},
)
async def job_events_stream(job_id: str, request: Request, backend: BackendDep,
                            caller: CallerDep) -> EventSourceResponse:
    pubsub = await subscribe(backend, job_id)
    try:
        record = await run_in_threadpool(load, backend, job_id, caller.owner)
    except BaseException:
        await close(pubsub)
        raise
    return EventSourceResponse(job_events(backend, pubsub, record, _root(request)),
                               ping=request.app.state.sse_ping_s)


def _cancel(backend: Backend, job_id: str, owner: str | None) -> dict[str, Any]:
    load(backend, job_id, owner)  # another key's job is not found, and not canceled
    status = backend.jobs.cancel(job_id)
    if status is None:
        raise not_found(job_id, backend.settings.result_ttl)
    if status == JobStatus.CANCELED.value:
        rq_job = backend.rq_job(job_id)
        if rq_job is not None and not rq_job.is_canceled:
            # RQ's own cancel: off the queue and into its canceled registry, so `rq info` agrees
            try:
                rq_job.cancel()
            except InvalidJobOperation:  # a worker finished or canceled it meanwhile
                pass
        # the RQ job hash has no TTL while queued: give it one, or every canceled job leaks it
        backend.redis.expire(Job.key_for(job_id), backend.settings.result_ttl)
    return load(backend, job_id, owner)


@router.post(
    "/jobs/{job_id}/cancel", response_model=JobDocument, summary="Cancel a job",
    response_description="The job ended: canceled now, or succeeded/failed before the request",
    description="A queued job is canceled at once (200, status `canceled`). A running one is canceled by its "
                "worker at the next sampler step: 202 with the document as it is now (status `running`); poll or "
                "stream events for the end. A job that had already ended is answered as it is (200). The job stays "
                "readable until RESULT_TTL; `DELETE /jobs/{id}` removes it.",
    responses={202: {"model": JobDocument, "description": "Cancel requested; the job is still running"},
               **responses(404)},
)
def cancel_job(job_id: str, request: Request, response: Response, backend: BackendDep,
               caller: CallerDep) -> dict[str, Any]:
    record = _cancel(backend, job_id, caller.owner)
    response.status_code = 202 if record["status"] == JobStatus.RUNNING.value else 200
    return document(backend, record, _root(request))


def _delete(backend: Backend, job_id: str, owner: str | None) -> None:
    record = load(backend, job_id, owner)  # another key's job is not found, and not deleted
    # the record first: from then on a worker's finish writes nothing, and a running job's worker
    # finds it gone at its next step and stops it (as for a cancel); a queued one leaves RQ's queue below
    if not backend.jobs.delete(job_id, record.get("idem") or None):
        raise not_found(job_id, backend.settings.result_ttl)
    num_images = int((record.get("request") or {}).get("num_images") or 0)
    backend.results.delete(job_id, result_names(num_images))
    rq_job = backend.rq_job(job_id)
    if rq_job is not None:
        try:
            rq_job.delete()  # off the queue and out of every registry, then its hash
        except InvalidJobOperation:  # a hash with no status (a worker's heartbeat wrote it back)
            backend.redis.delete(rq_job.key)


@router.delete(
    "/jobs/{job_id}", status_code=204, response_class=Response, summary="Delete a job",
    response_description="Deleted: the job, its images and its Idempotency-Key are gone",
    description="Cancels the job if it has not ended (a running one stops at its worker's next sampler step), then "
                "removes it: its record, its PNGs and its Idempotency-Key entry, so that the key can be used for a "
                "new job. Every later read of the job, its images, its grid and its events answers 404.",
    responses={204: {"description": "Deleted"}, **responses(404)},
)
def delete_job(job_id: str, backend: BackendDep, caller: CallerDep) -> Response:
    _delete(backend, job_id, caller.owner)
    return Response(status_code=204)
