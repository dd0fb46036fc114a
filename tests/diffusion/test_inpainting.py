"""Inpainting (RePaint): the kept region is the input noised to every step, and exactly the input at the end."""

import pytest
import torch
from models import IMAGE_SHAPE, NUM_CLASSES, Counting, an_input, perturbed_model

from contract.names import SAMPLERS
from diffusion.guidance import GuidedDenoiser
from diffusion.samplers import ddim_step
from diffusion.sampling import SamplerState, SampleSpec, advance, sample
from diffusion.schedules import timestep_subsequence

ALL = list(SAMPLERS)
_, H, W = IMAGE_SHAPE
LEFT = torch.zeros(1, H, W)
LEFT[..., : W // 2] = 1  # regenerate the left half, keep the right one
KEPT = LEFT.expand(IMAGE_SHAPE) == 0


@pytest.fixture(scope="module")
def model(linear_schedule):
    return perturbed_model(linear_schedule)


def run(model, schedule, specs, inits=None, masks=None):
    return sample(model, schedule, specs, IMAGE_SHAPE, NUM_CLASSES, init_images=inits, masks=masks)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("repeats", [1, 2])
def test_an_all_keep_mask_returns_the_input_exactly(model, linear_schedule, name, repeats):
    init = an_input()
    spec = SampleSpec(2, 2.0, sampler=name, steps=4, seed=1, resample_steps=repeats)
    out = run(model, linear_schedule, [spec], [init], [torch.zeros(1, H, W)])
    assert torch.equal(out[0], init)


@pytest.mark.parametrize("name, eta", [(n, 0.0) for n in ALL] + [("ddim", 0.7)])
def test_an_all_regenerate_mask_is_plain_generation_bit_for_bit(model, linear_schedule, name, eta):
    spec = SampleSpec(4, 2.5, sampler=name, steps=5, eta=eta, seed=11)
    plain = run(model, linear_schedule, [spec])
    assert torch.equal(run(model, linear_schedule, [spec], [an_input()], [torch.ones(IMAGE_SHAPE)]), plain)


@pytest.mark.parametrize("name", ALL)
def test_a_half_mask_keeps_its_half_exactly_and_regenerates_the_other(model, linear_schedule, name):
    init = an_input()
    out = run(model, linear_schedule, [SampleSpec(4, 2.0, sampler=name, steps=5, seed=2)], [init], [LEFT])[0]
    plain = run(model, linear_schedule, [SampleSpec(4, 2.0, sampler=name, steps=5, seed=2)])[0]
    assert torch.equal(out[KEPT], init[KEPT])
    assert (out[~KEPT] - init[~KEPT]).abs().max() > 0.1
    # the regenerated half is drawn toward the kept one: not the plain image's half
    assert (out[~KEPT] - plain[~KEPT]).abs().max() > 1e-3
    assert torch.isfinite(out).all() and out.abs().max() < 3


def test_the_kept_region_is_the_input_noised_to_each_step(model, linear_schedule):
    """Between steps, the kept region of x_t, standardized by q(x_t | x_0), is unit Gaussian noise,
    after a resampling jump back to t as after a step down to it."""
    init, seen = an_input(), []

    def check(state):
        if state.done[0]:
            return
        t = torch.tensor([state.timesteps[0][state.index[0]]])
        ab = linear_schedule.alpha_bar(t).item()
        r = ((state.x[0] - ab**0.5 * init) / (1 - ab) ** 0.5)[KEPT]
        seen.append(state.repeat[0])
        assert abs(r.mean().item()) < 0.15 and 0.85 < r.std().item() < 1.15, (t, r.mean(), r.std())

    sample(model, linear_schedule, [SampleSpec(3, 2.0, steps=6, seed=4, resample_steps=2)], IMAGE_SHAPE,
           NUM_CLASSES, callback=check, init_images=[init], masks=[LEFT])
    assert seen.count(1) == 5 and seen.count(0) == 5


@pytest.mark.parametrize("name", ALL)
def test_resampling_repeats_every_step_but_the_last_and_keeps_the_kept_half(model, linear_schedule, name):
    counting, init, steps, repeats = Counting(model), an_input(), 4, 3
    spec = SampleSpec(5, 2.0, sampler=name, steps=steps, seed=6, resample_steps=repeats)
    state = SamplerState.start([spec], IMAGE_SHAPE, NUM_CLASSES, linear_schedule, init_images=[init], masks=[LEFT])
    denoiser, totals = GuidedDenoiser(counting, NUM_CLASSES), []
    while not all(state.done):
        advance(state, denoiser, linear_schedule)
        totals.append(state.progress(0))
    per_step = 2 if name == "heun" else 1
    assert len(counting.t) == repeats * (steps - 1) * per_step + 1
    assert totals[-1] == (steps, steps)  # a resampled step counts once
    full = timestep_subsequence(steps, 1000)
    if per_step == 1:
        assert [t[0] for t in counting.t] == [t for t in full[:-2] for _ in range(repeats)] + [full[-2]]
    assert torch.equal(state.x[0][KEPT], init[KEPT])
    once = run(model, linear_schedule, [SampleSpec(5, 2.0, sampler=name, steps=steps, seed=6)], [init], [LEFT])[0]
    assert (state.x[0] - once).abs().max() > 1e-3
    assert torch.isfinite(state.x).all() and state.x.abs().max() < 3


def test_dpmpp_2m_takes_its_repeated_steps_first_order(model, linear_schedule):
    """After a jump, x_t is off the path that the multistep history lies on: a repeat is a DDIM step
    (DPM-Solver++(1)) in the regenerated region."""
    init, denoiser = an_input(), GuidedDenoiser(model, NUM_CLASSES)
    state = SamplerState.start([SampleSpec(None, sampler="dpmpp_2m", steps=4, seed=9, resample_steps=2)], IMAGE_SHAPE,
                               NUM_CLASSES, linear_schedule, init_images=[init], masks=[LEFT])
    t, t_next = state.timesteps[0][1:3]
    ab = lambda s: linear_schedule.alpha_bar(torch.tensor([s])).view(-1, 1, 1, 1)  # noqa: E731

    def ddim_from_here():
        x = state.x.clone()
        eps = model(x, torch.tensor([t]), torch.tensor([NUM_CLASSES]))
        return ddim_step(x, eps, ab(t), ab(t_next), torch.zeros(1, 1, 1, 1), torch.zeros_like(x))[0]

    while not (state.index[0] == 1 and state.repeat[0] == 1):
        advance(state, denoiser, linear_schedule)
    expected = ddim_from_here()
    advance(state, denoiser, linear_schedule)  # the last take: it moves on, with no jump to re-noise it
    assert state.index[0] == 2
    assert (state.x[0][~KEPT] - expected[~KEPT]).abs().max() < 1e-5


def test_inpainting_with_strength_below_one_starts_from_the_noised_input(model, linear_schedule):
    counting, init = Counting(model), an_input()
    spec = SampleSpec(1, 2.0, sampler="dpmpp_2m", steps=8, seed=8, strength=0.5)
    out = sample(counting, linear_schedule, [spec], IMAGE_SHAPE, NUM_CLASSES, init_images=[init], masks=[LEFT])[0]
    assert len(counting.t) == 4 and counting.t[0][0] == timestep_subsequence(8, 1000)[4]
    assert torch.equal(out[KEPT], init[KEPT])


MIXED = [  # (spec, has an input, mask)
    (SampleSpec(0, 1.0, sampler="ddpm", steps=5, seed=1), False, None),
    (SampleSpec(1, 3.0, sampler="ddim", steps=9, eta=1.0, seed=2, strength=0.6), True, None),
    (SampleSpec(None, 1.0, sampler="heun", steps=4, seed=3, resample_steps=2), True, LEFT),
    (SampleSpec(9, 0.0, sampler="euler", steps=3, seed=4, strength=0.0), True, None),
    (SampleSpec(4, 6.0, sampler="dpmpp_2m", steps=6, seed=5, strength=0.8, resample_steps=3), True, LEFT),
    (SampleSpec(2, 1.5, sampler="ddpm", steps=7, seed=6, resample_steps=2), True, 1 - LEFT),
    (SampleSpec(3, 2.0, sampler="dpmpp_2m", steps=5, seed=7), False, None),
]


def alone(model, schedule, spec, has_init, mask):
    return run(model, schedule, [spec], [an_input() if has_init else None], [mask])[0]


def close(a, b):
    # float32 convolutions round differently per batch size: 1e-5 relative to the image's scale
    return (a - b).abs().max() < 1e-5 * max(1.0, b.abs().max().item())


def test_a_batch_mixing_generation_img2img_and_inpainting_gives_each_image_what_it_gets_alone(model, linear_schedule):
    specs = [s for s, _, _ in MIXED]
    batch = run(model, linear_schedule, specs, [an_input() if i else None for _, i, _ in MIXED], [m for *_, m in MIXED])
    for k, (spec, has_init, mask) in enumerate(MIXED):
        assert close(batch[k], alone(model, linear_schedule, spec, has_init, mask)), spec


def test_images_with_inputs_and_masks_can_join_and_leave_between_steps(model, linear_schedule):
    denoiser = GuidedDenoiser(model, NUM_CLASSES)

    def start(part):
        return SamplerState.start([s for s, _, _ in part], IMAGE_SHAPE, NUM_CLASSES, linear_schedule,
                                  init_images=[an_input() if i else None for _, i, _ in part],
                                  masks=[m for *_, m in part])

    first = start(MIXED[:4])
    for _ in range(3):
        advance(first, denoiser, linear_schedule)
    state, finished = SamplerState.concat([first, start(MIXED[4:])]), {}
    while len(state):
        advance(state, denoiser, linear_schedule)
        for i, d in enumerate(state.done):
            if d:
                finished[state.specs[i].seed] = state.x[i]
        state = state.select([i for i, d in enumerate(state.done) if not d])
    assert sorted(finished) == [s.seed for s, _, _ in MIXED]
    for spec, has_init, mask in MIXED:
        assert close(finished[spec.seed], alone(model, linear_schedule, spec, has_init, mask)), spec


@pytest.mark.parametrize("spec, inits, masks, field", [
    (SampleSpec(1), None, [LEFT], "mask"),  # a mask without an input image
    (SampleSpec(1), [an_input()], [torch.ones(2, H, W)], "mask"),
    (SampleSpec(1), [an_input()], [torch.ones(1, H, W - 1)], "mask"),
    (SampleSpec(1), [an_input()], [torch.full((1, H, W), 0.5)], "mask"),
    (SampleSpec(1), [an_input()], [LEFT, LEFT], "masks"),
    (SampleSpec(1, resample_steps=0), [an_input()], [LEFT], "resample_steps"),
    (SampleSpec(1, resample_steps=11), [an_input()], [LEFT], "resample_steps"),
    (SampleSpec(1, resample_steps=2), [an_input()], None, "resample_steps"),  # resampling needs a mask
])
def test_bad_masks_and_resampling_are_refused_naming_the_field(linear_schedule, spec, inits, masks, field):
    with pytest.raises(ValueError, match=field):
        SamplerState.start([spec], IMAGE_SHAPE, NUM_CLASSES, linear_schedule, init_images=inits, masks=masks)
