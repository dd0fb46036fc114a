"""`imagegen serve`: the HTTP API (`service.app`) under uvicorn.

Every setting but where to listen comes from the environment (`service.settings.Settings`: REDIS_URL,
API_KEYS, RESULT_TTL...), as in a container; `imagegen up` runs this command as its API process.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from imagegen.errors import UsageError

if TYPE_CHECKING:
    from service.settings import Settings

DEFAULT_HOST = "127.0.0.1"
"""Loopback by default: the API is open unless API_KEYS is set, so exposing it is a choice."""

DEFAULT_PORT = 8000
"""uvicorn's usual port."""

GRACEFUL_SHUTDOWN_S = 10.0
"""Seconds a stopping API gives open requests (event streams, `?wait=`) to finish."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `imagegen serve`."""
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to listen on; 0.0.0.0 for every interface (default: {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port, 1..65535 (default: {DEFAULT_PORT})")


def check_port(port: int) -> int:
    """`port` if it is a TCP port number, else UsageError naming --port."""
    if not 1 <= port <= 65535:
        raise UsageError(f"--port must be between 1 and 65535 (got {port})")
    return port


def load_settings() -> "Settings":
    """The service settings from the environment; a bad value is one line naming its variable."""
    from pydantic import ValidationError

    from service.settings import Settings

    try:
        settings = Settings()
    except ValidationError as e:
        first = e.errors()[0]
        name = str(first["loc"][0]).upper() if first["loc"] else "environment"
        raise UsageError(f"{name}: {first['msg']} (got {first.get('input')!r})") from None
    return settings


def run(args: argparse.Namespace) -> int:
    """Serve the API in the foreground until interrupted."""
    port = check_port(args.port)
    settings = load_settings()
    import logging

    import uvicorn

    # the app's own log (its startup line says which Redis, and whether the API is open) beside uvicorn's
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    # imported only now: `imagegen --help` and the other commands must not need the service's deps
    from service.app import create_app

    # an open event stream would hold a graceful shutdown forever: cut it after a bound
    uvicorn.run(create_app(settings), host=args.host, port=port, log_level=settings.log_level.lower(),
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
    return 0
