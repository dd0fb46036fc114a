"""Per-image seeded noise: image i of a request with seed s draws from its own generator seeded s + i,
so an image depends on its seed alone, never on what else shares its batch (like EDM's
StackedRandomGenerator).

A call into the generator costs several microseconds whatever its size, which for a batch of
thousands of small images is most of a sampler step's host time; so a stream may draw the next few
steps' noise in one call and hand it out a draw at a time (`stacked_randn`'s `ahead`). It does so only
for shapes where one draw of (k, *shape) gives exactly the numbers of k draws of `shape`
(`block_draws_match`): the images stay those of one draw at a time, bit for bit.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

MAX_SEED = 2**63 - 1
"""Largest seed: seeds are 0..2**63-1 (torch generators take 64-bit seeds; the API's range too)."""

MAX_AHEAD = 8
"""Most draws a stream makes in one call. On the 2-core CPU a 1x28x28 draw costs 6.0 us alone and
3.8 us in a call of 8 (3.7 us in one of 16): past 8 the call's overhead is paid off."""

AHEAD_BYTES = 64 * 1024
"""Most bytes of noise a stream holds ahead of use (images that are large for their call's overhead
gain little from drawing ahead, and a batch of thousands holds this much per image)."""


def _draw(generator: torch.Generator, out: torch.Tensor) -> None:
    torch.randn(out.shape, generator=generator, dtype=torch.float32, out=out)


@functools.cache
def block_draws_match(shape: tuple[int, ...]) -> bool:
    """Whether one draw of (k, *shape) from a generator gives the numbers of k draws of `shape`, and
    leaves the generator where they leave it.

    torch's CPU normal sampler (float32, 16 numbers or more) fills the whole tensor with uniforms, turns
    each block of 16 into normals by Box-Muller, and, when the size is no multiple of 16, draws 16 more
    uniforms for a last block overlapping the end. k draws of a size that is a multiple of 16 are then
    the blocks of one draw of k times that size; other sizes are not (each draw has its own overlapping
    block, and below 16 numbers another sampler is used). That is the rule; it is also checked once per
    shape, on this build, by the very calls that draw ahead."""
    numel = math.prod(shape)
    if numel < 16 or numel % 16:
        return False
    one, block = torch.Generator().manual_seed(0x5EED), torch.Generator().manual_seed(0x5EED)
    singles = torch.empty((3, *shape))
    for z in singles:
        _draw(one, z)
    drawn = torch.empty((3, *shape))
    _draw(block, drawn)
    after_one, after_block = torch.empty(shape), torch.empty(shape)
    _draw(one, after_one)
    _draw(block, after_block)
    return torch.equal(singles, drawn) and torch.equal(after_one, after_block)


@functools.cache
def draws_ahead(shape: tuple[int, ...]) -> int:
    """Most draws of `shape` a stream makes in one call: 1 where a block of draws would change the
    numbers, else as many as AHEAD_BYTES holds, at most MAX_AHEAD."""
    if not block_draws_match(shape):
        return 1
    return max(1, min(MAX_AHEAD, AHEAD_BYTES // (4 * math.prod(shape))))


class ImageNoise:
    """A stream of Gaussian noise for one image. Draws happen on the CPU, so a seed gives the same
    image on every device, and are then moved to the sampling device."""

    def __init__(self, seed: int):
        if not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed must be in 0..{MAX_SEED}, got {seed}")
        self.seed = seed
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        # draws made ahead and not yet handed out: this stream's are block[row, next:end], a block that
        # `stacked_randn` shares between the streams it filled in one go
        self._block: torch.Tensor | None = None
        self._row = self._next = self._end = 0

    def randn(self, shape: tuple[int, ...]) -> torch.Tensor:
        """The stream's next draw of `shape`."""
        if self._next < self._end:
            return self._take(tuple(shape))
        return torch.randn(shape, generator=self.generator, dtype=torch.float32)

    def _take(self, shape: tuple[int, ...]) -> torch.Tensor:
        assert self._block is not None
        if tuple(self._block.shape[2:]) != shape:
            # the draws in hand are of another shape, and the generator is past them: never the case for
            # an image, whose every draw has its own shape
            raise RuntimeError(f"noise of shape {shape} asked for, with draws of {tuple(self._block.shape[2:])} "
                               "made ahead")
        z = self._block[self._row, self._next]
        self._next += 1
        return z

    def _fill(self, block: torch.Tensor, row: int, k: int) -> None:
        """The next `k` draws, in one call, into block[row, :k]."""
        _draw(self.generator, block[row, :k])
        self._block, self._row, self._next, self._end = block, row, 0, k


def stacked_randn(streams: list[ImageNoise], shape: tuple[int, ...], device: torch.device | str,
                  ahead: int | Sequence[int] = 1) -> torch.Tensor:
    """One draw of `shape` from each stream, stacked along a new first dimension.

    `ahead`, for all streams or one per stream, is how many draws the stream still makes, this one
    included, as far as the caller knows (an image's steps left): a stream with no draw in hand makes
    up to that many in one call where `draws_ahead` allows, and keeps the rest for its next draws. The
    numbers are those of one draw at a time either way; `ahead` only changes what the draws cost."""
    shape = tuple(shape)
    if not streams:
        return torch.empty((0, *shape), device=device)
    empty = [j for j, s in enumerate(streams) if s._next == s._end]
    if empty:
        most = draws_ahead(shape)
        if most == 1:
            counts = [1] * len(empty)
        else:
            wanted = [ahead] * len(streams) if isinstance(ahead, int) else ahead
            counts = [min(max(int(wanted[j]), 1), most) for j in empty]
        # one block for all the streams filled now: while they stay in step (as a job's images do), the
        # next draws of all of them are one slice of it
        block = torch.empty((len(empty), max(counts), *shape), dtype=torch.float32)
        for row, (j, k) in enumerate(zip(empty, counts)):
            streams[j]._fill(block, row, k)
    draws = _take_all(streams, shape)
    if torch.device(device).type == "cuda":
        # pinned and asynchronous: a pageable copy would wait for the device's queued work
        return draws.pin_memory().to(device, non_blocking=True)
    return draws.to(device)


def _take_all(streams: list[ImageNoise], shape: tuple[int, ...]) -> torch.Tensor:
    """The next draw in hand of every stream, [len(streams), *shape]: a slice of a block for each run
    of streams that sit on consecutive rows of one block at the same draw."""
    runs: list[list] = []  # [block, first row, rows, draw]
    run: list = [None, 0, 0, 0]
    for s in streams:
        if s._block is run[0] and s._row == run[1] + run[2] and s._next == run[3]:
            run[2] += 1
        else:
            if s._block is None or tuple(s._block.shape[2:]) != shape:
                raise RuntimeError(f"noise of shape {shape} asked for, with draws of another shape made ahead")
            run = [s._block, s._row, 1, s._next]
            runs.append(run)
        s._next += 1
    parts = [block[row:row + n, at] for block, row, n, at in runs]
    return parts[0].contiguous() if len(parts) == 1 else torch.cat(parts)
