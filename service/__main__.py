"""`python -m service [--host H] [--port P]`: run the API under uvicorn (one process; scale out by
running more of them behind a proxy, all on one Redis)."""

from __future__ import annotations

import argparse
import logging
import os

import uvicorn

from service.app import create_app
from service.settings import Settings


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, configure logging from LOG_LEVEL and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m service", description="Run the imagegen HTTP API.")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"),
                        help="address to listen on (default: $HOST, else 127.0.0.1)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")),
                        help="port to listen on (default: $PORT, else 8000)")
    args = parser.parse_args(argv)
    settings = Settings()
    level = settings.log_level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=settings.log_level.lower())


if __name__ == "__main__":
    main()
