"""The job document as a dataclass, and the Job objects the clients return (the document plus the
client that fetched it, so that `job.wait()` and `job.images()` need nothing else)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from PIL import Image

from imagegen.client.errors import JobError

if TYPE_CHECKING:
    from imagegen.client.aio import AsyncClient
    from imagegen.client.sync import Client
    from imagegen.client.wire import Progress

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled"})
"""Job statuses that never change again."""


class ImageList(list):
    """The document's `images` (`{"index", "seed", "url"}` each) that downloads them when called:
    `job.images` is the list the server sent, `job.images()` the PIL images (for an AsyncJob, a
    coroutine). One name for both, because the contract names the field and users expect the call."""

    def __init__(self, entries: Iterable[dict[str, Any]] = (), fetch: Callable[[], Any] | None = None) -> None:
        super().__init__(entries)
        self._fetch = fetch

    def __call__(self) -> Any:
        if self._fetch is None:
            raise RuntimeError("these images have no client to download them; get the job from a client")
        return self._fetch()


@dataclass
class JobDocument:
    """The fields of a job document (see `GET /jobs/{id}`); `document` is the JSON as received."""

    id: str
    status: str
    model: str | None = None
    request: dict[str, Any] = field(default_factory=dict)
    queue_position: int | None = None
    waiting_for: str | None = None  # while queued and no live worker may serve its model: what it waits for
    progress: dict[str, int] | None = None
    images: list[dict[str, Any]] = field(default_factory=list)
    grid_url: str | None = None
    error: dict[str, str] | None = None
    notes: list[str] = field(default_factory=list)  # what the service did to the request (e.g. resized init_image)
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    document: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def done(self) -> bool:
        """The job has ended (succeeded, failed or canceled)."""
        return self.status in TERMINAL_STATUSES

    @classmethod
    def parse(cls, doc: dict[str, Any], **extra: Any) -> Any:
        """An instance from a job document; fields the contract adds later stay in `document`."""
        known = {f.name for f in fields(cls)} - {"document", *extra}
        return cls(**{k: v for k, v in doc.items() if k in known}, document=doc, **extra)

    def image_urls(self) -> list[str]:
        """The image URLs in index order; JobError unless the job succeeded."""
        if self.status != "succeeded":
            raise JobError(self)
        return [i["url"] for i in sorted(self.images, key=lambda i: i.get("index", 0))]

    def grid_path(self) -> str:
        """The grid's URL; JobError unless the job succeeded."""
        if self.status != "succeeded":
            raise JobError(self)
        return self.grid_url or f"/jobs/{self.id}/grid.png"


def terminal_event(event: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
    """Whether a server-sent event ends the job, and the final job document if it carries one."""
    data = event["data"]
    if isinstance(data, dict) and data.get("status") in TERMINAL_STATUSES:
        return True, data if "id" in data else None
    return False, None


@dataclass
class Job(JobDocument):
    """A job of a `Client`: the document plus `wait`, `grid`, `refresh`, `cancel` and `delete`;
    `images()` downloads the images as PIL images (see ImageList)."""

    client: Client | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.images = ImageList(self.images, lambda: self._client().images(self))

    def wait(self, timeout: float | None = None, poll: float = 0.5, stream: bool = False,
             on_progress: Callable[[Progress], Any] | None = None) -> Job:
        """The job once it ended: polled every `poll` s, or by following its event stream
        (`stream=True`). TimeoutError after `timeout` s (None: no limit).

        `on_progress` is called with a `Progress` (`step`, `total`, `preview`) for each progress
        event of the stream, or, when polling, each time the polled step changes. `preview` is a PIL
        image of the images forming (the model's current clean-image estimate, in grid.png's layout)
        in the events that carry one: only with `stream=True`, for a job submitted with
        `previews=True`; else None.

            job = api.generate("sneaker", steps=50, previews=True)
            job.wait(stream=True, on_progress=lambda p: p.preview and p.preview.save(f"step-{p.step}.png"))
        """
        return self._client().wait(self, timeout=timeout, poll=poll, stream=stream, on_progress=on_progress)

    def grid(self) -> Image.Image:
        """All the job's images in one grid image."""
        return self._client().grid(self)

    def refresh(self) -> Job:
        """The job as it is now."""
        return self._client().job(self.id)

    def cancel(self) -> Job:
        """Cancel the job (see `Client.cancel`)."""
        return self._client().cancel(self.id)

    def delete(self) -> None:
        """Delete the job and its images from the server (see `Client.delete`)."""
        self._client().delete(self.id)

    def _client(self) -> Client:
        if self.client is None:
            raise RuntimeError("this Job has no client; get it from Client.generate or Client.job")
        return self.client


@dataclass
class AsyncJob(JobDocument):
    """A job of an `AsyncClient`: like `Job`, with coroutines."""

    client: AsyncClient | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.images = ImageList(self.images, lambda: self._client().images(self))

    async def wait(self, timeout: float | None = None, poll: float = 0.5, stream: bool = False,
                   on_progress: Callable[[Progress], Awaitable[Any] | Any] | None = None) -> AsyncJob:
        """The job once it ended (see `Job.wait`); `on_progress` may also be a coroutine function."""
        return await self._client().wait(self, timeout=timeout, poll=poll, stream=stream, on_progress=on_progress)

    async def grid(self) -> Image.Image:
        """All the job's images in one grid image."""
        return await self._client().grid(self)

    async def refresh(self) -> AsyncJob:
        """The job as it is now."""
        return await self._client().job(self.id)

    async def cancel(self) -> AsyncJob:
        """Cancel the job (see `Client.cancel`)."""
        return await self._client().cancel(self.id)

    async def delete(self) -> None:
        """Delete the job and its images from the server (see `Client.delete`)."""
        await self._client().delete(self.id)

    def _client(self) -> AsyncClient:
        if self.client is None:
            raise RuntimeError("this AsyncJob has no client; get it from AsyncClient.generate or .job")
        return self.client


def timed_out(job: JobDocument, timeout: float | None) -> TimeoutError:
    """The error of a wait that ran out of time, saying where the job stands."""
    return TimeoutError(f"job {job.id} is still {job.status} after {timeout} s")
