"""Who may call the API, and whose jobs are whose.

API keys come from API_KEYS (the keys) and API_KEYS_FILE (their sha256 hex digests, so that a server
need not store the keys); only digests are kept in memory. A request presents its key as
`Authorization: Bearer <key>`. Its digest is the caller's identity: each job records it as its
`owner`, and a job is visible only to the key that made it (any other key gets the same 404 as for
a job that does not exist, so that job ids cannot be probed). A key never reaches a log, a record or
a job document. With no keys configured the API is open and every job is everyone's.

Rate limiting counts requests per key (per client address when the API is open) in fixed one-minute
windows in Redis, so that every API process behind a load balancer shares the count.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from contract.jobs import PREFIX
from contract.settings import Settings
from service.problems import Problem, problem_type

RATE_WINDOW_S = 60
"""The rate limit's window: RATE_LIMIT_PER_MINUTE requests per key per calendar minute."""

_HEX = set("0123456789abcdef")

# declares the scheme in the OpenAPI schema (the /docs "Authorize" button); the header is read below
_bearer = HTTPBearer(auto_error=False, description="an API key from API_KEYS, where keys are configured")


def key_digest(key: str) -> str:
    """The sha256 hex digest of an API key: what API_KEYS_FILE holds and what a job records as owner."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class KeyRing:
    """The digests of the accepted API keys; empty = the API is open."""

    digests: frozenset[str]

    @property
    def open(self) -> bool:
        return not self.digests

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        """API_KEYS and API_KEYS_FILE together; ValueError naming the file's bad line."""
        digests = {key_digest(k.strip()) for k in settings.api_keys.split(",") if k.strip()}
        if settings.api_keys_file:
            path = Path(settings.api_keys_file)
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                line = line.split("#", 1)[0].strip().lower()
                if not line:
                    continue
                if len(line) != 64 or not set(line) <= _HEX:
                    raise ValueError(f"API_KEYS_FILE {path}, line {number}: not a sha256 hex digest (64 hex digits); "
                                     "store keys as e.g. `printf %s KEY | sha256sum`")
                digests.add(line)
        return cls(frozenset(digests))


@dataclass(frozen=True)
class Caller:
    """Who is calling: `owner` is the key's digest (None when the API is open); `bucket` is what the
    rate limit counts against."""

    owner: str | None
    bucket: str


def _unauthorized(detail: str) -> Problem:
    return Problem(401, detail, type=problem_type("unauthorized"), title="Unauthorized",
                   headers={"WWW-Authenticate": 'Bearer realm="imagegen"'})


def identify(keys: KeyRing, authorization: str | None, client: str) -> Caller:
    """The caller of a request with this Authorization header, or a 401/403 problem."""
    if keys.open:
        return Caller(None, f"addr:{client}")
    if not authorization:
        raise _unauthorized("this API needs a key: send Authorization: Bearer <key>")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise _unauthorized("malformed Authorization header: expected Bearer <key>")
    digest = key_digest(token)
    # comparing digests, not keys: a timing difference would tell an attacker about a hash of
    # their guess, not about a key
    if digest not in keys.digests:
        raise Problem(403, "the API key is not valid", type=problem_type("forbidden"), title="Forbidden")
    return Caller(digest, f"key:{digest}")


async def _rate_limit(request: Request, settings: Settings, caller: Caller) -> None:
    limit = settings.rate_limit_per_minute
    if limit <= 0:
        return
    now = time.time()
    window = int(now // RATE_WINDOW_S)
    key = f"{PREFIX}rate:{caller.bucket}:{window}"
    aredis = request.app.state.backend.aredis
    async with aredis.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, RATE_WINDOW_S * 2)
        count, _ = await pipe.execute()
    if count > limit:
        wait = max(1, math.ceil((window + 1) * RATE_WINDOW_S - now))
        raise Problem(429, f"rate limit: at most {limit} requests per minute per API key; retry in {wait} s",
                      type=problem_type("rate-limited"), title="Too Many Requests", headers={"Retry-After": str(wait)})


async def authenticate(request: Request,
                       _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Caller:
    """The dependency of every endpoint that needs a key: the caller, rate-limited."""
    caller = identify(request.app.state.keys, request.headers.get("authorization"),
                      request.client.host if request.client else "unknown")
    await _rate_limit(request, request.app.state.settings, caller)
    request.state.caller = caller
    return caller


CallerDep = Annotated[Caller, Depends(authenticate)]
