"""What goes over the wire besides errors: the request body, images in and out, server-sent events."""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

ImageInput = str | bytes | os.PathLike | Image.Image
"""An image to send (`init_image`, `mask`): PNG bytes, a PIL image (sent as a PNG), a path to a PNG
file (a `pathlib.Path`, or a `str` that is not base64 PNG text), or base64 PNG text as the API takes it
(a `str` starting with the base64 of the PNG signature, `iVBORw0KGgo`, or a `data:` URL)."""

_B64_PNG_START = "iVBORw0KGgo"  # base64 of the 8-byte PNG signature: no file path starts like that in practice


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The Authorization header for `api_key` (none without a key: the local API is open)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def b64_png(value: ImageInput) -> str:
    """`value` as base64 PNG text (see ImageInput); a path is read here (OSError if it cannot be)."""
    if isinstance(value, str):
        if value.lstrip().startswith(("data:", _B64_PNG_START)):
            return value
        value = Path(value)
    if isinstance(value, os.PathLike):
        value = Path(value).read_bytes()
    if isinstance(value, Image.Image):
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        value = buf.getvalue()
    return base64.b64encode(value).decode("ascii")


def generate_body(class_label: int | str | None, options: dict[str, Any]) -> dict[str, Any]:
    """The JSON body of `POST /generate`."""
    # class_label is always sent (null means unconditional); everything else only when given, so
    # that the server's model-card defaults apply
    body: dict[str, Any] = {"class_label": class_label}
    body.update({k: v for k, v in options.items() if v is not None})
    for key in ("init_image", "mask"):
        if key in body:
            body[key] = b64_png(body[key])
    return body


def generate_call(wait: float | None, idempotency_key: str | None, timeout: float) -> dict[str, Any]:
    """The query, headers and timeout of a `POST /generate`."""
    # the server holds a ?wait= answer for up to `wait` s: the read timeout must outlast it
    return {"params": {"wait": wait} if wait is not None else {},
            "headers": {"Idempotency-Key": idempotency_key} if idempotency_key else {},
            "timeout": timeout + (wait or 0)}


def decode_png(data: bytes) -> Image.Image:
    """PNG bytes as a loaded PIL image."""
    image = Image.open(io.BytesIO(data))
    image.load()  # read now: the buffer is gone once this returns
    return image


def unwrap(doc: Any, key: str) -> Any:
    """`doc[key]` when the server wraps a list in an object, else `doc`."""
    return doc[key] if isinstance(doc, dict) and isinstance(doc.get(key), list) else doc


class SSEDecoder:
    """Lines of a `text/event-stream` in, events out: `{"event", "data", "id"}` with `data` parsed
    as JSON where it is JSON (the WHATWG parsing rules, without reconnection)."""

    def __init__(self) -> None:
        self._event, self._data, self._id = "", [], None

    def feed(self, line: str) -> dict[str, Any] | None:
        """The event that `line` completes, or None (a field, a comment or a heartbeat)."""
        if line == "":
            if not self._data:
                self._event = ""
                return None
            raw = "\n".join(self._data)
            try:
                data: Any = json.loads(raw)
            except ValueError:
                data = raw
            event = {"event": self._event or "message", "data": data, "id": self._id}
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None


@dataclass(frozen=True)
class Progress:
    """One progress event of a job, as `Job.wait(on_progress=...)` hands it over: `step` of `total`
    sampler steps done, and, for a job submitted with `previews=True`, every few steps, `preview`:
    the model's current estimate of the clean images, in one grid laid out as grid.png (up to 8 per
    row), as a PIL image (None in the events that carry none, and whenever progress came from
    polling)."""

    step: int
    total: int
    preview: Image.Image | None = None


def progress_event(event: dict[str, Any]) -> Progress | None:
    """The Progress of a `progress` server-sent event (its base64 `preview` decoded), else None."""
    data = event.get("data")
    if event.get("event") != "progress" or not isinstance(data, dict) or "step" not in data:
        return None
    preview = data.get("preview")
    image = None
    if isinstance(preview, str) and preview:
        # the contract sends plain base64; a data: URL prefix is tolerated, as the API tolerates it
        image = decode_png(base64.b64decode(preview.partition(",")[2] if preview.startswith("data:") else preview))
    return Progress(int(data["step"]), int(data.get("total") or 0), image)


def polled_progress(doc: Any) -> Progress | None:
    """The Progress of a polled job document (never a preview: those come in events only)."""
    p = getattr(doc, "progress", None)
    if not isinstance(p, dict) or "step" not in p:
        return None
    return Progress(int(p["step"]), int(p.get("total") or 0))


class ProgressReport:
    """Hands each new Progress to a waiter's `on_progress` (returning what it returns, so that an
    async waiter can await a coroutine); a polled step already reported is not reported again."""

    def __init__(self, on_progress: Callable[[Progress], Any] | None) -> None:
        self.on_progress = on_progress
        self.last: tuple[int, int] | None = None

    def __call__(self, progress: Progress | None) -> Any:
        if progress is None or self.on_progress is None:
            return None
        if progress.preview is None and (progress.step, progress.total) == self.last:
            return None
        self.last = (progress.step, progress.total)
        return self.on_progress(progress)
