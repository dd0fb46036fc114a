"""The playground: the web page at `GET /` and its static files under `/static/`.

The page is plain HTML, CSS and JavaScript (no build step, nothing from another host). Every URL it
uses is relative, so that it works wherever the API is mounted.
"""

from __future__ import annotations

import html
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
"""index.html, app.js and app.css (package data of `service`)."""

router = APIRouter(tags=["page"])


@router.get("/", response_class=HTMLResponse, summary="The playground web page",
            description="A page to generate images from this service and watch them appear: pick a model, a "
                        "class, guidance and sampler, follow the job's progress, download the PNGs; a second tab "
                        "shows the model card's quality tables. Its files are served under `/static/`.")
def index(request: Request) -> HTMLResponse:
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    root = request.scope.get("root_path", "").rstrip("/")
    if root:
        # behind a proxy that says where it mounts the API (uvicorn --root-path), the page may be
        # reached as /prefix without a trailing slash: anchor its relative URLs at the mount point
        page = page.replace("<head>", f'<head>\n<base href="{html.escape(root, quote=True)}/">', 1)
    # no-cache: a new deployment's page must not run against an old cached app.js
    return HTMLResponse(page, headers={"Cache-Control": "no-cache"})


def install(app: FastAPI) -> None:
    """Serve the page at `/` and its files at `/static/`."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
