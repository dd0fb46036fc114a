"""The synchronous client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from PIL import Image

from imagegen.client.errors import error_from, retry_delay
from imagegen.client.jobs import Job, JobDocument, terminal_event, timed_out
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

DEFAULT_TIMEOUT = 30.0
"""Seconds one HTTP request may take (a `?wait=` request gets its wait on top)."""


class Client:
    """A synchronous client of one imagegen server.

    `retries`: how many times a 503 or 429 answer with Retry-After is retried, after the time it
    asks for, before ApiError is raised (default 0: raise at once). `transport` replaces httpx's
    network transport (tests, proxies).
    """

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 retries: int = 0, transport: httpx.BaseTransport | None = None) -> None:
        self.base_url, self.timeout, self.retries = base_url.rstrip("/"), timeout, retries
        self._http = httpx.Client(base_url=self.base_url, headers=auth_headers(api_key), timeout=timeout,
                                  transport=transport)

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            response = self._http.request(method, url, **kwargs)
            if response.is_success:
                return response
            error = error_from(response)
            delay = retry_delay(error, attempt, self.retries)
            if delay is None:
                raise error
            time.sleep(delay)
            attempt += 1

    def generate(self, class_label: int | str | None, *, model: str | None = None, num_images: int | None = None,
                 guidance: str | None = None, guidance_scale: float | None = None, sampler: str | None = None,
                 steps: int | None = None, eta: float | None = None, seed: int | None = None,
                 webhook_url: str | None = None, init_image: ImageInput | None = None,
                 strength: float | None = None, mask: ImageInput | None = None, resample_steps: int | None = None,
                 resize: bool | None = None, previews: bool | None = None, idempotency_key: str | None = None,
                 wait: float | None = None) -> Job:
        """Submit a request (`POST /generate`) and return its job: queued, or ended if it ended
        within `wait` seconds (0..60, the server holds the answer). The fields are the contract's;
        `class_label` is an index, a class name, or None for unconditional.

        Image conditioning: `init_image` starts from an image (img2img; `strength` 0..1, 0 returns
        it, 1 ignores it), and with `mask` (white = regenerate, black = keep; the init image's size)
        fills in part of it (inpainting; `resample_steps` 1..10). Each image may be PNG bytes, a PIL
        image, a path to a PNG file, or base64 PNG text (see `ImageInput`). An image of another size
        or channel count than the model's is refused (ApiError 422 naming `init_image`) unless
        `resize=True`, which lets the service convert, center-crop and resize it; the job's `notes`
        say what it did. `previews=True` puts a preview of the images forming into the progress
        events (see `Job.wait`'s `on_progress`)."""
        options = dict(model=model, num_images=num_images, guidance=guidance, guidance_scale=guidance_scale,
                       sampler=sampler, steps=steps, eta=eta, seed=seed, webhook_url=webhook_url,
                       init_image=init_image, strength=strength, mask=mask, resample_steps=resample_steps,
                       resize=resize, previews=previews)
        response = self._request("POST", "/generate", json=generate_body(class_label, options),
                                 **generate_call(wait, idempotency_key, self.timeout))
        return Job.parse(response.json(), client=self)

    def job(self, id: str) -> Job:
        """The job as it is now (`GET /jobs/{id}`)."""
        return Job.parse(self._request("GET", f"/jobs/{id}").json(), client=self)

    def cancel(self, id: str) -> Job:
        """Cancel a job (`POST /jobs/{id}/cancel`): a queued one ends at once, a running one at its
        next step; the answer says `canceled` (or `running`, for a job still stopping), or how the job
        ended if it already had. The job stays readable until the server's RESULT_TTL."""
        return Job.parse(self._request("POST", f"/jobs/{id}/cancel").json(), client=self)

    def delete(self, id: str) -> None:
        """Delete a job (`DELETE /jobs/{id}`): cancel it if it has not ended, then remove it, its
        images and its Idempotency-Key from the server. Reading it afterwards raises ApiError (404)."""
        self._request("DELETE", f"/jobs/{id}")

    def models(self) -> list[dict[str, Any]]:
        """Every model the server has (`GET /models`)."""
        return unwrap(self._request("GET", "/models").json(), "models")

    def model(self, name: str) -> dict[str, Any]:
        """One model, `name` or `name@version` (`GET /models/{name}`)."""
        return self._request("GET", f"/models/{name}").json()

    def samplers(self) -> Any:
        """The samplers with their descriptions and defaults (`GET /samplers`)."""
        return unwrap(self._request("GET", "/samplers").json(), "samplers")

    def ready(self) -> dict[str, Any]:
        """`GET /readyz`'s document; ApiError (503) saying what is not ready."""
        return self._request("GET", "/readyz").json()

    def events(self, id: str, read_timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """The job's server-sent events, `{"event", "data", "id"}` each, until the server closes
        the stream (after the terminal event). `read_timeout`: most seconds between two lines."""
        for event in self._lines(id, read_timeout):
            if event is not None:
                yield event

    def _lines(self, id: str, read_timeout: float | None) -> Iterator[dict[str, Any] | None]:
        # None for every line that ends no event, so that a waiter checks its deadline on heartbeats
        timeout = httpx.Timeout(self.timeout, read=read_timeout)
        with self._http.stream("GET", f"/jobs/{id}/events", timeout=timeout,
                               headers={"Accept": "text/event-stream"}) as response:
            if not response.is_success:
                response.read()
                raise error_from(response)
            decoder = SSEDecoder()
            for line in response.iter_lines():
                yield decoder.feed(line)

    def wait(self, job: Job | str, timeout: float | None = None, poll: float = 0.5, stream: bool = False,
             on_progress: Callable[[Progress], Any] | None = None) -> Job:
        """`job` (or the job with that id) once it ended; see `Job.wait`."""
        job = self.job(job) if isinstance(job, str) else job
        deadline = None if timeout is None else time.monotonic() + timeout
        report = ProgressReport(on_progress)
        if stream and not job.done:
            lines = self._lines(job.id, timeout)
            try:
                for event in lines:
                    if deadline is not None and time.monotonic() > deadline:
                        raise timed_out(job, timeout)
                    if event:
                        report(progress_event(event))
                    ended, doc = terminal_event(event) if event else (False, None)
                    if ended:
                        return Job.parse(doc, client=self) if doc else self.job(job.id)
            except httpx.ReadTimeout:
                raise timed_out(job, timeout) from None
            finally:
                lines.close()
            # the stream closed before its terminal event: polling finds the end
        while not job.done:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise timed_out(job, timeout)
            time.sleep(poll if left is None else min(poll, left))
            job = self.job(job.id)
            if not job.done:
                report(polled_progress(job))
        return job

    def image(self, url: str) -> Image.Image:
        """One PNG of a job, by its URL in the job document."""
        return decode_png(self._request("GET", url).content)

    def images(self, job: JobDocument) -> list[Image.Image]:
        """The images of a succeeded job, in order (JobError if it did not succeed)."""
        return [self.image(url) for url in job.image_urls()]

    def grid(self, job: JobDocument) -> Image.Image:
        """The grid of all images of a succeeded job (JobError if it did not succeed)."""
        return self.image(job.grid_path())
