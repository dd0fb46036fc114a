"""RFC 9457 problem documents: every 4xx and 5xx the API sends is one, whatever raised it.

Routes raise `Problem`; the handlers installed by `install` turn request validation errors, Starlette's
own HTTP errors (unknown route, wrong method), Redis outages and unexpected exceptions into problems
too, so that a client never has to parse two error shapes.
"""

from __future__ import annotations

import json
import logging
import re
from http import HTTPStatus
from typing import Any

import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("service")

MEDIA_TYPE = "application/problem+json"

TYPE_BASE = "tag:imagegen,2026:problem/"
"""Problem types are tag URIs (RFC 4151): stable identifiers that nobody expects to dereference."""

REDIS_RETRY_AFTER_S = 5
"""Retry-After of a 503 caused by Redis: long enough for a restart, short enough for a client loop."""


def problem_type(name: str) -> str:
    """The type URI of a problem named `name` (e.g. "invalid-request")."""
    return TYPE_BASE + name


class Problem(Exception):
    """An error response: raise it from a route or a dependency."""

    def __init__(self, status: int, detail: str, *, type: str = "about:blank", title: str | None = None,
                 errors: list[dict[str, str]] | None = None, headers: dict[str, str] | None = None,
                 **extensions: Any) -> None:
        super().__init__(detail)
        self.status, self.detail, self.type = status, detail, type
        self.title = title or HTTPStatus(status).phrase
        self.errors, self.headers, self.extensions = errors, headers or {}, extensions

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status, "detail": self.detail}
        if self.errors is not None:
            body["errors"] = self.errors
        body.update(self.extensions)
        return JSONResponse(body, status_code=self.status, headers=self.headers, media_type=MEDIA_TYPE)


def invalid(errors: list[dict[str, str]]) -> Problem:
    """422 naming each offending field: `errors` is [{"field", "message"}]."""
    detail = "invalid request: " + "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return Problem(422, detail, type=problem_type("invalid-request"), title="Invalid request", errors=errors)


def redis_unavailable(exc: Exception | None = None) -> Problem:
    if isinstance(exc, redis.exceptions.MaxConnectionsError):
        return Problem(503, "this API process has all REDIS_MAX_CONNECTIONS connections to Redis in use (each "
                            "request waiting with ?wait= or following events holds one); retry shortly",
                       type=problem_type("redis-connections-exhausted"), title="Service unavailable",
                       headers={"Retry-After": str(REDIS_RETRY_AFTER_S)})
    why = f" ({type(exc).__name__})" if exc is not None else ""
    return Problem(503, f"Redis is unreachable{why}; retry shortly", type=problem_type("redis-unavailable"),
                   title="Service unavailable", headers={"Retry-After": str(REDIS_RETRY_AFTER_S)})


_DESCRIPTIONS = {
    401: "No API key, or a malformed Authorization header (where API keys are configured)",
    403: "The API key is not valid",
    404: "Not found: unknown or expired job, unknown model or image index",
    409: "Conflict: a request with the same Idempotency-Key is still being processed; retry",
    413: "The request body is larger than MAX_BODY_BYTES",
    422: "Invalid request: `errors` names each offending field and what is allowed",
    429: "Too many requests: the key is over RATE_LIMIT_PER_MINUTE, or the queue over MAX_QUEUE_DEPTH; see Retry-After",
    500: "Unexpected error (logged on the server)",
    503: "Redis unreachable, or no worker alive; see Retry-After",
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can answer (503 and 500 are always possible)."""
    from service.schemas import ProblemDocument

    return {code: {"model": ProblemDocument, "description": _DESCRIPTIONS[code]} for code in (*codes, 503, 500)}


# pydantic error types whose own message is worse than ours
_MESSAGES = {
    "missing": "is required",
    "json_invalid": "is not valid JSON",
}


def _validation_errors(exc: RequestValidationError, allowed_fields: list[str]) -> list[dict[str, str]]:
    """One entry per offending field, named as the client spelled it (a union's per-member errors
    are merged: `class_label` fails as int and as str at once)."""
    merged: dict[str, list[str]] = {}
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        located = loc and loc[0] in ("body", "query", "path", "header", "cookie")
        where, rest = (loc[0], loc[1:]) if located else ("", loc)
        kind = err.get("type", "")
        # a JSON syntax error's location is a character offset, not a field
        field = rest[0] if rest and kind != "json_invalid" else (where or "body")
        ctx = err.get("ctx") or {}
        if kind == "extra_forbidden":
            message = f"unknown field; allowed fields: {', '.join(allowed_fields)}"
        elif kind == "json_invalid":
            message = f"{_MESSAGES[kind]}: {ctx.get('error', err.get('msg', ''))}"
        elif kind == "value_error" and "error" in ctx:
            message = str(ctx["error"])  # our own validator's words, without pydantic's "Value error, "
        elif kind in ("int_type", "float_type"):
            message = f"must be {'an integer' if kind == 'int_type' else 'a number'} (got {_echo(err.get('input'))})"
        else:
            message = _MESSAGES.get(kind) or err.get("msg", "is invalid")
            if where == "header":
                field = field.title()
        if message not in merged.setdefault(field, []):
            merged[field].append(message)
    return [{"field": f, "message": "; ".join(ms)} for f, ms in merged.items()]


def _echo(value: Any, limit: int = 80) -> str:
    # a client's value quoted back, cut short: a 1 MB string must not come back in the error
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _unparsable(cause: BaseException) -> str:
    if isinstance(cause, RecursionError):
        return "is not valid JSON: nested too deeply"
    if isinstance(cause, UnicodeDecodeError):
        return "is not valid JSON: not UTF-8 text"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return "is not valid JSON: a number has too many digits"
    return "is not valid JSON"


def _allowed_methods(request: Request) -> str:
    """The methods the API's schema gives the request's path, or "" for a path it does not list.
    (Starlette's 405 names only those of the first route that matched the path: GET /jobs/{id} hid
    DELETE /jobs/{id}.)"""
    root = request.scope.get("root_path", "").rstrip("/")
    path = request.url.path[len(root):] if root and request.url.path.startswith(root) else request.url.path
    for template, operations in request.app.openapi().get("paths", {}).items():
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            methods = {m.upper() for m in operations}
            return ", ".join(sorted(methods | ({"HEAD"} if "GET" in methods else set())))
    return ""


def install(app: FastAPI, allowed_fields: list[str]) -> None:
    """Register the handlers; `allowed_fields` are the request body's fields, listed when a client
    sends an unknown one."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return invalid(_validation_errors(exc, allowed_fields)).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.__cause__ is not None:
            # FastAPI's "error parsing the body": JSON too deep for the parser, an integer too long
            # for int(), bytes that are not UTF-8; answered like any other unreadable body
            return invalid([{"field": "body", "message": _unparsable(exc.__cause__)}]).response()
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and detail == HTTPStatus(404).phrase:
            detail = f"no route {request.url.path}; see /docs"
        headers = dict(exc.headers or {})
        if exc.status_code == 405 and "Allow" in headers:
            headers["Allow"] = _allowed_methods(request) or headers["Allow"]
            detail = f"{request.method} is not allowed on {request.url.path}; allowed: {headers['Allow']}"
        return Problem(exc.status_code, detail, headers=headers).response()

    async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("%s %s: Redis unreachable: %s", request.method, request.url.path, exc)
        return redis_unavailable(exc).response()

    # BusyLoadingError (Redis still loading its data) is a ConnectionError too
    app.add_exception_handler(redis.exceptions.ConnectionError, _redis_down)
    app.add_exception_handler(redis.exceptions.TimeoutError, _redis_down)
    app.add_middleware(CatchAll)


class CatchAll:
    """The last resort: an unexpected exception becomes a 500 problem with no stack trace in the
    body, logged here once. (Starlette's own 500 handler would re-raise after answering, which logs
    twice under uvicorn and breaks test clients.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                # a stream broke halfway (an SSE stream, say): nothing left to answer with
                log.exception("%s %s failed after the response started", scope.get("method"), scope.get("path"))
                raise
            if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
                # raised outside a route (a streaming body's setup, a middleware): still a 503
                response = redis_unavailable(exc).response()
            else:
                log.exception("%s %s: unexpected error", scope.get("method"), scope.get("path"))
                response = Problem(500, "internal error; it has been logged on the server",
                                   type=problem_type("internal-error")).response()
            await response(scope, receive, send)
