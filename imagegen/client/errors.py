"""Errors of the client: an error response (read from its RFC 9457 problem document), and images
asked for from a job that has none."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from imagegen.client.jobs import JobDocument


class ApiError(Exception):
    """An error response of the API, read from its problem document.

    `str()` is the problem's detail followed by its field errors (`steps: must be ...`), one line.
    `retry_after` is the Retry-After header in seconds (429 and 503), else None.
    """

    def __init__(self, status: int, title: str, detail: str, errors: list[dict[str, Any]] | None = None,
                 type: str = "about:blank", retry_after: float | None = None) -> None:
        self.status, self.title, self.detail, self.type = status, title, detail, type
        self.errors = errors or []
        self.retry_after = retry_after
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """One line: the detail, then each field error that the detail does not already say."""
        parts = [self.detail or self.title or f"HTTP {self.status}"]
        parts += [e for e in map(field_error, self.errors) if e and e not in parts[0]]
        return " ".join("; ".join(parts).split())

    def __str__(self) -> str:
        return self.message


class JobError(RuntimeError):
    """Images were asked for from a job that did not succeed (it failed, was canceled, or runs)."""

    def __init__(self, job: JobDocument) -> None:
        self.job = job
        why = f": {job.error.get('message') or job.error.get('code')}" if job.error else ""
        super().__init__(f"job {job.id} is {job.status}{why}")


def field_error(error: Any) -> str:
    """`field: message` for one entry of a problem document's field errors."""
    # accepted shapes: {"field", "message"}, FastAPI's {"loc", "msg"}, RFC 9457's {"pointer", "detail"}
    if not isinstance(error, dict):
        return str(error)
    where = error.get("field") or error.get("name") or error.get("pointer")
    if where is None and isinstance(error.get("loc"), list):
        where = ".".join(str(p) for p in error["loc"] if p not in ("body", "query", "path", "header"))
    where = str(where or "").lstrip("#/").replace("/", ".")
    what = error.get("message") or error.get("msg") or error.get("detail") or ""
    return f"{where}: {what}" if where else str(what)


def retry_after(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds (either of its forms), or None."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def error_from(response: httpx.Response) -> ApiError:
    """The ApiError for an error response, whether or not its body is a problem document."""
    try:
        doc = response.json()
    except ValueError:
        doc = None
    wait = retry_after(response)
    if not isinstance(doc, dict):
        # not ours (a proxy's HTML page, say): keep a short piece of the text for the message
        text = " ".join(response.text.split())[:200]
        return ApiError(response.status_code, response.reason_phrase, text or response.reason_phrase,
                        retry_after=wait)
    detail = doc.get("detail")
    errors = doc.get("errors") or doc.get("invalid_params") or []
    if not isinstance(detail, str):  # FastAPI's default 422 puts the field list in `detail`
        errors = errors or (detail if isinstance(detail, list) else [])
        detail = doc.get("title") or response.reason_phrase
    return ApiError(response.status_code, str(doc.get("title") or response.reason_phrase), detail,
                    errors if isinstance(errors, list) else [errors], str(doc.get("type") or "about:blank"), wait)


def retry_delay(error: ApiError, attempt: int, retries: int) -> float | None:
    """Seconds to sleep before retrying after `error` on attempt `attempt` (0-based), or None to
    raise: only 429 and 503 with Retry-After are retried, and only `retries` times."""
    if error.status in (429, 503) and error.retry_after is not None and attempt < retries:
        return error.retry_after
    return None
