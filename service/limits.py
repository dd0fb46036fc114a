"""The request body limit (MAX_BODY_BYTES): a body over it is answered 413 before any of it is parsed.

A declared Content-Length over the limit is refused without reading the body; a body without one
(chunked) is read up to the limit and refused as soon as it passes. Within the limit, the body is
buffered here and handed on unchanged (FastAPI buffers a JSON body anyway).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.problems import Problem, problem_type


def too_large(limit: int) -> Problem:
    return Problem(413, f"the request body is larger than {limit} bytes (MAX_BODY_BYTES)",
                   type=problem_type("body-too-large"), title="Content Too Large")


class BodyLimit:
    """ASGI middleware refusing request bodies over `max_bytes` with a 413 problem document."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = None  # the server itself refuses a malformed Content-Length
            if declared is not None and declared > self.max_bytes:
                await too_large(self.max_bytes).response()(scope, receive, send)
                return
            if not declared:
                await self.app(scope, receive, send)
                return
        elif b"chunked" not in headers.get(b"transfer-encoding", b""):
            await self.app(scope, receive, send)  # no body
            return

        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nothing to answer
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await too_large(self.max_bytes).response()(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break

        replayed = False

        async def replay() -> Message:
            # the whole body once, then the real channel (an event stream waits on it for disconnect)
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
