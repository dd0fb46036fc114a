"""The FastAPI app: `create_app(settings)` wires the routers, the problem handlers and the metrics;
Redis connections open in the lifespan, never at import. Imports no torch."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi

from contract.schema import GenerateRequest
from contract.settings import Settings
from service import problems
from service.auth import KeyRing
from service.deps import Backend
from service.documents import SSE_PING_S
from service.limits import BodyLimit
from service.metrics import Metrics, RequestMetrics
from service.routers import jobs, models, ops, page

log = logging.getLogger("service")

DESCRIPTION = """Class-conditional diffusion as a service: submit a job with `POST /generate`, follow it with
`GET /jobs/{id}` or `GET /jobs/{id}/events`, fetch its PNGs. Every error is an RFC 9457 problem document
(`application/problem+json`)."""


def _redacted(url: str) -> str:
    # a password in REDIS_URL must not reach the log
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}***@{rest.rpartition('@')[2]}" if "@" in rest else url


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API, configured by `settings` (default: from the environment)."""
    settings = settings or Settings()
    keys = KeyRing.from_settings(settings)  # a bad API_KEYS_FILE stops the start, naming its line

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backend = Backend.open(settings)
        app.state.backend = backend
        access = ("no API keys configured: the API is open" if keys.open else
                  f"{len(keys.digests)} API key(s) configured: every endpoint but /healthz, /readyz, / and the "
                  f"docs needs Authorization: Bearer <key>")
        log.info("imagegen API: Redis %s, queue %r, model store %s; %s", _redacted(settings.redis_url),
                 settings.queue_name, backend.store.root, access)
        try:
            yield
        finally:
            del app.state.backend
            await backend.close()

    app = FastAPI(title="imagegen", version="1", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.keys = keys
    app.state.sse_ping_s = SSE_PING_S
    app.state.metrics = metrics = Metrics(lambda: getattr(app.state, "backend", None))
    problems.install(app, list(GenerateRequest.model_fields))
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    # added after the others, so outside them: it sees the final status of every request, 500s included
    app.add_middleware(RequestMetrics, metrics=metrics)
    if settings.cors_origin_list:
        # outermost: a browser's preflight is answered here, before auth (it carries no key)
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origin_list,
                           allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
                           expose_headers=["Location", "Retry-After"])
    for module in (jobs, models, ops):
        app.include_router(module.router)
    page.install(app)
    app.openapi = lambda: _openapi(app, settings, keys)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI, settings: Settings, keys: KeyRing) -> dict[str, Any]:
    """FastAPI's schema, with error bodies declared as application/problem+json and its default
    validation-error schema replaced by the problem document the API really sends; then made to
    describe this server as configured: its auth, its limits, and how a job's operations follow
    from POST /generate."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    problem_ref = {"$ref": "#/components/schemas/ProblemDocument"}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for code, response in operation.get("responses", {}).items():
                if not code.isdigit() or int(code) < 400:
                    continue
                content = response.setdefault("content", {})
                body = content.pop("application/json", None) or {"schema": problem_ref}
                if "HTTPValidationError" in str(body):
                    body, response["description"] = {"schema": problem_ref}, "Invalid request"
                content[problems.MEDIA_TYPE] = body
    components = schema.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    _describe_auth(schema, keys)
    _describe_limits(schema, settings)
    _link_job_operations(schema)
    app.openapi_schema = schema
    return schema


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, operation) for path, operations in schema.get("paths", {}).items()
            for method, operation in operations.items()]


def _describe_auth(schema: dict[str, Any], keys: KeyRing) -> None:
    """With API keys, the bearer scheme and a `security` requirement on every operation that
    needs a key (FastAPI derives both from the auth dependency); with the API open, neither, and
    no 401 or 403 that the server never sends."""
    if not keys.open:
        schema["info"]["description"] += ("\n\nThis server has API keys configured: every operation but `/healthz`, "
                                          "`/readyz`, `/` and the docs needs `Authorization: Bearer <key>`, and a job "
                                          "is visible only to the key that made it.")
        return
    schema.get("components", {}).pop("securitySchemes", None)
    for _, _, operation in _operations(schema):
        operation.pop("security", None)
        for code in ("401", "403"):
            operation.get("responses", {}).pop(code, None)


def _describe_limits(schema: dict[str, Any], settings: Settings) -> None:
    """The request's ranges that the deployment sets (MAX_STEPS, MAX_IMAGES_PER_JOB), as its
    normalizer will check them."""
    fields = schema.get("components", {}).get("schemas", {}).get("GenerateRequest", {}).get("properties", {})
    if "steps" in fields:
        fields["steps"]["maximum"] = settings.max_steps
    if "num_images" in fields:
        fields["num_images"]["maximum"] = settings.max_images_per_job


def _link_job_operations(schema: dict[str, Any]) -> None:
    """OpenAPI links from POST /generate's answers to every operation on the job it made (its
    `id` is their `job_id`), so that tools which follow links (schemathesis's stateful phase,
    client generators) know how the operations chain."""
    links = {operation["operationId"]: {"operationId": operation["operationId"],
                                        "parameters": {"job_id": "$response.body#/id"}}
             for path, _, operation in _operations(schema)
             if path.startswith("/jobs/{job_id}") and "operationId" in operation}
    generate = schema.get("paths", {}).get("/generate", {}).get("post", {})
    for code in ("200", "202"):
        if code in generate.get("responses", {}):
            generate["responses"][code]["links"] = dict(links)
