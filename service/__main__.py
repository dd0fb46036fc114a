"""`python -m service [--host H] [--port P]`: run the API under uvicorn (one process; scale out by
running more of them behind a proxy, all on one Redis). The API image's command; `imagegen serve`
runs the same `serve`.

Every setting but where to listen comes from the environment (`contract.settings.Settings`: REDIS_URL,
API_KEYS, RESULT_TTL...), as in a container.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from contract.errors import UsageError
from contract.settings import Settings

GRACEFUL_SHUTDOWN_S = 10.0
"""Seconds a stopping API gives open requests (event streams, `?wait=`) to finish."""


def load_settings() -> Settings:
    """The service settings from the environment; a bad value is one line naming its variable."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as e:
        first = e.errors()[0]
        name = str(first["loc"][0]).upper() if first["loc"] else "environment"
        raise UsageError(f"{name}: {first['msg']} (got {first.get('input')!r})") from None


def check_port(port: int, flag: str = "--port") -> int:
    """`port` if it is a TCP port number, else UsageError naming `flag`."""
    if not 1 <= port <= 65535:
        raise UsageError(f"{flag} must be between 1 and 65535 (got {port})")
    return port


def serve(host: str, port: int, settings: Settings) -> None:
    """Serve the API in the foreground until interrupted (SIGTERM: a graceful shutdown)."""
    import uvicorn

    from service.app import create_app

    # the app's own log (its startup line says which Redis, and whether the API is open) beside uvicorn's
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # an open event stream would hold a graceful shutdown forever: cut it after a bound
    uvicorn.run(create_app(settings), host=host, port=check_port(port), log_level=settings.log_level.lower(),
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description="Run the imagegen HTTP API.")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"),
                        help="address to listen on (default: $HOST, else 127.0.0.1)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")),
                        help="port to listen on (default: $PORT, else 8000)")
    args = parser.parse_args(argv)
    try:
        serve(args.host, args.port, load_settings())
    except UsageError as e:
        print(f"python -m service: error: {e.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
