"""Python client of the imagegen HTTP API (`../shared/spec/api.md`), sync and async, on httpx.

    from imagegen.client import Client

    with Client("http://127.0.0.1:8000") as api:
        job = api.generate("sneaker", num_images=4, seed=1234).wait(timeout=60)
        for i, image in enumerate(job.images()):
            image.save(f"{i}.png")

`AsyncClient` has the same methods as coroutines (and `events` as an async iterator). Arguments left
out of `generate` are not sent, so the server fills them from the model card. Every error response
raises `ApiError` with the problem document's fields; network failures raise httpx's own errors
(`httpx.TransportError`).
"""

from imagegen.client.aio import AsyncClient
from imagegen.client.errors import ApiError, JobError
from imagegen.client.jobs import TERMINAL_STATUSES, AsyncJob, ImageList, Job, JobDocument
from imagegen.client.sync import DEFAULT_TIMEOUT, Client
from imagegen.client.wire import ImageInput

__all__ = ["ApiError", "AsyncClient", "AsyncJob", "Client", "DEFAULT_TIMEOUT", "ImageInput", "ImageList", "Job", "JobDocument",
           "JobError", "TERMINAL_STATUSES"]
