"""Property-based fuzzing of every operation in the app's own /openapi.json with schemathesis.

1. In-process (ASGI) against the real app on a real Redis: valid and invalid inputs (positive and
   negative generation), 200 examples per operation and mode. Checks: no 5xx, and every 4xx is an
   RFC 9457 problem document. (A live worker is registered, so that /readyz has no reason to answer
   503.)
2. The schemathesis command line, as an outside client would run it, with every check and every phase
   (examples, coverage, fuzzing, stateful) against the API served over HTTP with a real worker, once
   open and once with API keys (two of them, so that the object-level authorization check has a
   second identity to try another's jobs with). The stateful phase follows the schema's links from
   POST /generate to the job's operations, DELETE included; the worker makes the jobs end, so that
   long polls and event streams end too. Only POST /generate's schema-valid 422s are allowed beyond
   what the schema says (schemathesis.toml says why).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import schemathesis
from api_helpers import REPO, api_process
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


def negatable(operation) -> bool:
    """Whether the operation has an input that can be invalid: a query, a header, a body, or a path
    parameter more constrained than "a string"."""
    if operation.query or operation.headers or operation.body:
        return True
    constraints = {"type", "title", "description"}
    return any(parameter.definition.get("schema", {}).get("type") != "string"
               or set(parameter.definition.get("schema", {})) - constraints for parameter in operation.path_parameters)


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
            # an operation without parameters or body (GET /healthz), or whose only input is a path
            # segment that any string fills (GET /models/{ref}), has no invalid input to generate
            assert mode is GenerationMode.NEGATIVE and not negatable(operation), operation.label
    print(f"{method} {path}: {calls[GenerationMode.POSITIVE]} valid and {calls[GenerationMode.NEGATIVE]} "
          "invalid inputs")


# --- 2. the command line, every check and phase, against the served API --------------------------

CLI_EXAMPLES = 100
"""Examples per operation and phase: a run takes about 25 s on the 2-core machine."""

CLI_SEED = 23
"""A fixed seed, so that a failure found once is found again; vary it to explore."""

CONFIG = Path(__file__).with_name("schemathesis.toml")

LIMITS = {"MAX_STEPS": "8", "MAX_IMAGES_PER_JOB": "4", "MAX_QUEUE_DEPTH": "8"}
"""Small jobs, and a short queue (beyond it, 429), so that every job a run makes ends in about a second
and no long poll or event stream outlasts --request-timeout."""

KEYS = {"alpha": "fuzz-alpha-key-0123", "beta": "fuzz-beta-key-4567"}


@pytest.fixture
def fuzz_worker(redis_url, tiny_store_root, tmp_path):
    """`python -m worker` on the tiny store, as a process."""
    env = {**os.environ, "REDIS_URL": redis_url, "MODEL_STORE": str(tiny_store_root), "WORKER_DEVICE": "cpu",
           "OMP_NUM_THREADS": "1", **LIMITS}
    with open(tmp_path / "worker.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "worker"], cwd=REPO, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_ready(base: str, worker: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 90
    while httpx.get(f"{base}/readyz", timeout=5).status_code != 200:
        assert worker.poll() is None and time.monotonic() < deadline, f"no worker came up:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("keyed", [False, True], ids=["open", "keyed"])
def test_every_check_and_phase_of_the_schemathesis_cli_passes(keyed, redis_url, tiny_store_root, tmp_path,
                                                             fuzz_worker):
    env = {**LIMITS, **({"API_KEYS": ",".join(KEYS.values())} if keyed else {})}
    auth: list[str] = []
    if keyed:
        # two identities in the Web Fuzzing Commons format schemathesis reads
        wfc = tmp_path / "keys.wfc.json"
        wfc.write_text(json.dumps({"auth": [{"name": name, "fixedHeaders": [{"name": "Authorization",
                                                                             "value": f"Bearer {key}"}]}
                                            for name, key in KEYS.items()]}))
        auth = ["--auth-wfc", str(wfc)]
    with api_process(redis_url, tiny_store_root, tmp_path / "api.log", **env) as base:
        wait_ready(base, fuzz_worker, tmp_path / "worker.log")
        started = time.monotonic()
        run = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "--no-color", "run",
             f"{base}/openapi.json", "--checks", "all", "--phases", "examples,coverage,fuzzing,stateful",
             "--max-examples", str(CLI_EXAMPLES), "--seed", str(CLI_SEED), "--request-timeout", "30", *auth],
            capture_output=True, text=True, timeout=540, cwd=tmp_path)  # its cache stays out of the checkout
        took = time.monotonic() - started
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-8000:]
    summary = re.search(r"(\d+) generated, (\d+) passed", report)
    links = re.search(r"API Links:\s+(\d+) covered / (\d+) selected", report)
    assert summary and links, report[-3000:]
    # the stateful phase reached the jobs it made: GET, cancel and DELETE after POST /generate
    assert int(links.group(1)) > 0, report[-3000:]
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert re.search(rf"✅ +{phase}", report), f"{phase} did not pass\n{report[-3000:]}"
    print(f"\nschemathesis, {'keyed' if keyed else 'open'} API: {summary.group(1)} cases, {summary.group(2)} passed, "
          f"{links.group(1)} of {links.group(2)} links followed, in {took:.0f} s")
