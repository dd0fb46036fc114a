"""The asynchronous client: `Client`'s methods as coroutines, `events` as an async iterator."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
from PIL import Image

from imagegen.client.errors import error_from, retry_delay
from imagegen.client.jobs import AsyncJob, JobDocument, terminal_event, timed_out
from imagegen.client.sync import DEFAULT_TIMEOUT
from imagegen.client.wire import (
    ImageInput,
    Progress,
    ProgressReport,
    SSEDecoder,
    auth_headers,
    decode_png,
    generate_body,
    generate_call,
    polled_progress,
    progress_event,
    unwrap,
)


class AsyncClient:
    """An asynchronous client of one imagegen server; see `Client` for the arguments. A
    `transport=httpx.ASGITransport(app)` talks to an app in the same process."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 retries: int = 0, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url, self.timeout, self.retries = base_url.rstrip("/"), timeout, retries
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=auth_headers(api_key), timeout=timeout,
                                       transport=transport)

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            response = await self._http.request(method, url, **kwargs)
            if response.is_success:
                return response
            error = error_from(response)
            delay = retry_delay(error, attempt, self.retries)
            if delay is None:
                raise error
            await asyncio.sleep(delay)
            attempt += 1

    async def generate(self, class_label: int | str | None, *, model: str | None = None,
                       num_images: int | None = None, guidance: str | None = None,
                       guidance_scale: float | None = None, sampler: str | None = None, steps: int | None = None,
                       eta: float | None = None, seed: int | None = None, webhook_url: str | None = None,
                       init_image: ImageInput | None = None, strength: float | None = None,
                       mask: ImageInput | None = None, resample_steps: int | None = None,
                       resize: bool | None = None, previews: bool | None = None, idempotency_key: str | None = None,
                       wait: float | None = None) -> AsyncJob:
        """Submit a request; see `Client.generate` (images, resize and previews included)."""
        options = dict(model=model, num_images=num_images, guidance=guidance, guidance_scale=guidance_scale,
                       sampler=sampler, steps=steps, eta=eta, seed=seed, webhook_url=webhook_url,
                       init_image=init_image, strength=strength, mask=mask, resample_steps=resample_steps,
                       resize=resize, previews=previews)
        response = await self._request("POST", "/generate", json=generate_body(class_label, options),
                                       **generate_call(wait, idempotency_key, self.timeout))
        return AsyncJob.parse(response.json(), client=self)

    async def job(self, id: str) -> AsyncJob:
        """The job as it is now."""
        return AsyncJob.parse((await self._request("GET", f"/jobs/{id}")).json(), client=self)

    async def cancel(self, id: str) -> AsyncJob:
        """Cancel a job, which stays readable; see `Client.cancel`."""
        return AsyncJob.parse((await self._request("POST", f"/jobs/{id}/cancel")).json(), client=self)

    async def delete(self, id: str) -> None:
        """Delete a job, its images and its Idempotency-Key; see `Client.delete`."""
        await self._request("DELETE", f"/jobs/{id}")

    async def models(self) -> list[dict[str, Any]]:
        """Every model the server has."""
        return unwrap((await self._request("GET", "/models")).json(), "models")

    async def model(self, name: str) -> dict[str, Any]:
        """One model, `name` or `name@version`."""
        return (await self._request("GET", f"/models/{name}")).json()

    async def samplers(self) -> Any:
        """The samplers with their descriptions and defaults."""
        return unwrap((await self._request("GET", "/samplers")).json(), "samplers")

    async def ready(self) -> dict[str, Any]:
        """`GET /readyz`'s document; ApiError (503) saying what is not ready."""
        return (await self._request("GET", "/readyz")).json()

    async def events(self, id: str, read_timeout: float | None = None) -> AsyncIterator[dict[str, Any]]:
        """The job's server-sent events; see `Client.events`."""
        timeout = httpx.Timeout(self.timeout, read=read_timeout)
        async with self._http.stream("GET", f"/jobs/{id}/events", timeout=timeout,
                                     headers={"Accept": "text/event-stream"}) as response:
            if not response.is_success:
                await response.aread()
                raise error_from(response)
            decoder = SSEDecoder()
            async for line in response.aiter_lines():
                event = decoder.feed(line)
                if event is not None:
                    yield event

    async def wait(self, job: AsyncJob | str, timeout: float | None = None, poll: float = 0.5,
                   stream: bool = False,
                   on_progress: Callable[[Progress], Awaitable[Any] | Any] | None = None) -> AsyncJob:
        """`job` (or the job with that id) once it ended; see `Job.wait`. `on_progress` may be a
        plain function or a coroutine function (awaited before the wait goes on)."""
        job = await self.job(job) if isinstance(job, str) else job
        report = ProgressReport(on_progress)

        async def reported(progress: Progress | None) -> None:
            result = report(progress)
            if inspect.isawaitable(result):
                await result

        try:
            async with asyncio.timeout(timeout):
                if stream and not job.done:
                    events = self.events(job.id)
                    try:
                        async for event in events:
                            await reported(progress_event(event))
                            ended, doc = terminal_event(event)
                            if ended:
                                return AsyncJob.parse(doc, client=self) if doc else await self.job(job.id)
                    finally:
                        await events.aclose()
                # the stream closed before its terminal event, or none was asked for: poll
                while not job.done:
                    await asyncio.sleep(poll)
                    job = await self.job(job.id)
                    if not job.done:
                        await reported(polled_progress(job))
                return job
        except TimeoutError:
            raise timed_out(job, timeout) from None

    async def image(self, url: str) -> Image.Image:
        """One PNG of a job, by its URL in the job document."""
        return decode_png((await self._request("GET", url)).content)

    async def images(self, job: JobDocument) -> list[Image.Image]:
        """The images of a succeeded job, in order (JobError if it did not succeed)."""
        return list(await asyncio.gather(*(self.image(url) for url in job.image_urls())))

    async def grid(self, job: JobDocument) -> Image.Image:
        """The grid of all images of a succeeded job (JobError if it did not succeed)."""
        return await self.image(job.grid_path())
