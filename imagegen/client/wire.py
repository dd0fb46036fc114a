"""What goes over the wire besides errors: the request body, images in and out, server-sent events."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

from PIL import Image

ImageInput = str | bytes | Path | Image.Image
"""An image to send: base64 PNG text, PNG bytes, a PNG file, or a PIL image."""


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The Authorization header for `api_key` (none without a key: the local API is open)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def b64_png(value: ImageInput) -> str:
    """`value` as base64 PNG text."""
    if isinstance(value, str):
        return value
    if isinstance(value, Path):
        value = value.read_bytes()
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
