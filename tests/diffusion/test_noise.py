"""Per-image noise drawn several steps ahead: the same numbers as one draw at a time, and never a
block of draws where torch's sampler would give other numbers."""

import pytest
import torch
from analytic import GaussianEps
from models import IMAGE_SHAPE, NUM_CLASSES, an_input

import diffusion.noise
from diffusion.noise import ImageNoise, block_draws_match, draws_ahead, stacked_randn
from diffusion.sampling import SampleSpec, sample

# the images of the shipped models (1x28x28), of an imported RGB UNet2DModel (3x32x32), a DiT's latent
# (4x32x32), and the tests' small ones
USED = [(1, 28, 28), (3, 32, 32), (4, 32, 32), (1, 4, 4), (1, 2, 2, 4)]
# sizes that are no multiple of 16 (75, 49, 9, 2352 + 1...), and one under 16 numbers
ODD = [(3, 5, 5), (1, 7, 7), (1, 3, 3), (1, 1, 9), (3, 29, 27)]


def singles(seed: int, shape: tuple[int, ...], k: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randn(shape, generator=g) for _ in range(k)])


@pytest.mark.parametrize("shape", USED)
def test_a_block_of_draws_is_the_single_draws_for_the_shapes_used(shape):
    for k in (2, 3, 8):
        block = torch.randn((k, *shape), generator=torch.Generator().manual_seed(11))
        assert torch.equal(block, singles(11, shape, k)), (shape, k)
    assert block_draws_match(shape) and draws_ahead(shape) > 1


@pytest.mark.parametrize("shape", ODD)
def test_shapes_off_the_rule_are_drawn_one_at_a_time(shape):
    assert not block_draws_match(shape) and draws_ahead(shape) == 1


def test_a_block_of_an_odd_shape_is_other_numbers():
    """Why the guard exists: each draw of 75 numbers redraws its own last 16, which a block of three
    does only once (if torch ever changes this, the guard is merely cautious)."""
    block = torch.randn((3, 3, 5, 5), generator=torch.Generator().manual_seed(11))
    assert not torch.equal(block, singles(11, (3, 5, 5), 3))


def test_a_block_is_no_larger_than_the_budget():
    assert draws_ahead((1, 28, 28)) == diffusion.noise.MAX_AHEAD
    assert draws_ahead((4, 32, 32)) * 4 * 4 * 32 * 32 <= diffusion.noise.AHEAD_BYTES
    assert draws_ahead((3, 256, 256)) == 1


@pytest.mark.parametrize("shape", USED + ODD)
def test_drawing_ahead_hands_out_each_streams_single_draws_in_order(shape):
    """Streams filled together or apart, with draws in hand or not, taken in runs or one by one, by
    stacked_randn or by ImageNoise.randn: each stream's draws are its generator's single draws."""
    seeds = list(range(40, 50))
    streams = {s: ImageNoise(s) for s in seeds}
    taken: dict[int, list[torch.Tensor]] = {s: [] for s in seeds}
    calls = [(seeds, 3), (seeds[:4], 1), (seeds[2:], [5, 1, 2, 8, 3, 1, 9, 2]), (seeds[::2], 20),
             (list(reversed(seeds)), 2), (seeds[1:3], 1), (seeds, 4), (seeds, [1] * 10)]
    for i, (chosen, ahead) in enumerate(calls):
        draws = stacked_randn([streams[s] for s in chosen], shape, "cpu", ahead)
        assert draws.shape == (len(chosen), *shape)
        for s, z in zip(chosen, draws):
            taken[s].append(z)
        if i == 3:
            for s in seeds[5:7]:
                taken[s].append(streams[s].randn(shape))
    for s in seeds:
        assert torch.equal(torch.stack(taken[s]), singles(s, shape, len(taken[s]))), s


def test_a_stream_refuses_a_draw_of_another_shape_than_it_holds():
    stream = ImageNoise(3)
    stacked_randn([stream], (1, 4, 4), "cpu", ahead=4)
    with pytest.raises(RuntimeError, match="made ahead"):
        stream.randn((1, 8, 8))


@pytest.mark.parametrize("shape", [IMAGE_SHAPE, (3, 5, 5)])
def test_the_images_are_those_of_one_draw_per_call(linear_schedule, monkeypatch, shape):
    """A mixed batch (DDPM, stochastic DDIM, img2img, inpainting with resampling) sampled with draws
    ahead equals the same batch sampled one draw per call, bit for bit."""
    numel = torch.Size(shape).numel()
    model = GaussianEps(linear_schedule, torch.linspace(-0.6, 0.6, numel, dtype=torch.float64).view(shape),
                        torch.full(shape, 0.3, dtype=torch.float64))
    init = an_input() if shape == IMAGE_SHAPE else torch.linspace(-1, 1, numel).view(shape)
    left = torch.zeros((1, *shape[1:]))
    left[..., : shape[-1] // 2] = 1
    specs = [SampleSpec(1, 2.0, sampler="ddpm", steps=13, seed=1), SampleSpec(2, 3.0, sampler="ddim", steps=11,
                                                                              eta=0.7, seed=2),
             SampleSpec(None, sampler="ddpm", steps=9, seed=3, strength=0.6),
             SampleSpec(4, 1.5, sampler="ddpm", steps=6, seed=4, resample_steps=3),
             SampleSpec(5, 2.0, sampler="dpmpp_2m", steps=10, seed=5, resample_steps=2),
             SampleSpec(6, 0.0, sampler="heun", steps=4, seed=6)]
    inputs = dict(init_images=[None, None, init, init, init, None], masks=[None, None, None, left, left, None])
    ahead = sample(model, linear_schedule, specs, shape, NUM_CLASSES, **inputs)
    monkeypatch.setattr(diffusion.noise, "draws_ahead", lambda shape: 1)
    one_by_one = sample(model, linear_schedule, specs, shape, NUM_CLASSES, **inputs)
    assert torch.equal(ahead, one_by_one)
