"""`imagegen serve`: the HTTP API under uvicorn, as `python -m service` runs it (the API image's
command); `imagegen up` runs this command as its API process.

Every setting but where to listen comes from the environment (`contract.settings.Settings`: REDIS_URL,
API_KEYS, RESULT_TTL...), as in a container.
"""

from __future__ import annotations

import argparse

from service.__main__ import check_port, load_settings, serve

DEFAULT_HOST = "127.0.0.1"
"""Loopback by default: the API is open unless API_KEYS is set, so exposing it is a choice."""

DEFAULT_PORT = 8000
"""uvicorn's usual port."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `imagegen serve`."""
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to listen on; 0.0.0.0 for every interface (default: {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port, 1..65535 (default: {DEFAULT_PORT})")


def run(args: argparse.Namespace) -> int:
    """Serve the API in the foreground until interrupted."""
    check_port(args.port)
    serve(args.host, args.port, load_settings())
    return 0
