"""Python client of the imagegen HTTP API (`../shared/spec/api.md`), sync and async, on httpx.

    from imagegen.client import Client

    with Client("http://127.0.0.1:8000") as api:
        job = api.generate("sneaker", num_images=4, seed=1234).wait(timeout=60)
        for i, image in enumerate(job.images()):
            image.save(f"{i}.png")

img2img and inpainting: `api.generate("sneaker", init_image="shoe.png", strength=0.6)`, plus
`mask=` (white = regenerate) for inpainting; live previews: `api.generate(..., previews=True)` then
`job.wait(stream=True, on_progress=callback)`, which hands `callback` a `Progress` whose `preview` is
a PIL image of the images forming.

`job.cancel()` stops a job and keeps it readable (status `canceled`); `job.delete()` (or
`api.delete(id)`) removes it, its images and its Idempotency-Key from the server.

`AsyncClient` has the same methods as coroutines (and `events` as an async iterator). Arguments left
out of `generate` are not sent, so the server fills them from the model card. Every error response
raises `ApiError` with the problem document's fields; network failures raise httpx's own errors
(`httpx.TransportError`).
"""

from imagegen.client.aio import AsyncClient
from imagegen.client.errors import ApiError, JobError
from imagegen.client.jobs import TERMINAL_STATUSES, AsyncJob, ImageList, Job, JobDocument
from imagegen.client.sync import DEFAULT_TIMEOUT, Client
from imagegen.client.wire import ImageInput, Progress

__all__ = ["ApiError", "AsyncClient", "AsyncJob", "Client", "DEFAULT_TIMEOUT", "ImageInput", "ImageList", "Job",
           "JobDocument", "JobError", "Progress", "TERMINAL_STATUSES"]
