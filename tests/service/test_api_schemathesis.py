"""Property-based fuzzing of every operation in the app's own /openapi.json with schemathesis: valid and
invalid inputs (positive and negative generation), at least 200 examples per operation, in-process
(ASGI) against the real app on a real Redis. Checks: no 5xx, and every 4xx is an RFC 9457 problem
document. (A live worker is registered, so that /readyz has no reason to answer 503.)"""

from __future__ import annotations

from datetime import timedelta

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from redis import Redis
from rq import Worker
from rq.serializers import JSONSerializer
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from contract.settings import Settings
from service.app import create_app

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

EXAMPLES = 200
"""Examples per operation and generation mode (valid inputs, then invalid ones)."""

EXAMPLE_DEADLINE = timedelta(seconds=10)
"""One request may take this long on the busy 2-core machine; a hang fails the test, not the run."""

WAIT_CAP_S = 0.05
"""A valid `?wait=` holds the response for up to 60 s while no worker runs: shortened, so that
fuzzing stays bounded (the value's validation is what is under test, not the wait)."""


def _operations() -> list[tuple[str, str]]:
    """(method, path) of every operation, read from the schema without serving it (no Redis needed)."""
    schema = create_app(Settings(redis_url="redis://127.0.0.1:1/0", api_keys="", api_keys_file=None)).openapi()
    return [(method.upper(), path) for path, operations in schema["paths"].items() for method in operations]


OPERATIONS = _operations()


def problem_document(ctx, response, case) -> None:
    """Every 4xx and 5xx is application/problem+json with type, title, status and detail."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    assert content_type.startswith("application/problem+json"), \
        f"{response.status_code} answered as {content_type!r}: {response.text[:200]}"
    body = response.json()
    assert isinstance(body, dict) and body.get("status") == response.status_code, body
    for field in ("type", "title", "detail"):
        assert isinstance(body.get(field), str) and body[field], f"no {field}: {body}"
    assert "Traceback" not in response.text
    return None


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_operation_answers_5xx_and_every_error_is_a_problem_document(method, path, settings, redis_url):
    worker = Worker([settings.queue_name], connection=Redis.from_url(redis_url), name="fuzz-worker",
                    serializer=JSONSerializer)
    worker.register_birth()  # alive for WORKER_HEARTBEAT_TTL: /readyz answers 200
    operation = schemathesis.openapi.from_asgi("/openapi.json", create_app(settings))[path][method]
    calls = {mode: 0 for mode in GenerationMode}

    for mode in GenerationMode:  # valid inputs, then invalid ones
        @given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis_settings(max_examples=EXAMPLES, deadline=EXAMPLE_DEADLINE, database=None,
                             phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        def fuzz(case) -> None:
            wait = (case.query or {}).get("wait")
            if isinstance(wait, (int, float)) and not isinstance(wait, bool) and wait > WAIT_CAP_S:
                case.query["wait"] = WAIT_CAP_S
            response = case.call()
            calls[mode] += 1  # noqa: B023 - run within this iteration
            case.validate_response(response, checks=[not_a_server_error, problem_document])

        try:
            fuzz()
        except Unsatisfiable:
            # an operation without parameters or body (GET /healthz) has no invalid input to generate
            assert mode is GenerationMode.NEGATIVE and not (operation.path_parameters or operation.query
                                                           or operation.headers or operation.body), operation.label
    print(f"{method} {path}: {calls[GenerationMode.POSITIVE]} valid and {calls[GenerationMode.NEGATIVE]} invalid inputs")
