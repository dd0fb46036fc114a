"""img2img (SDEdit): an image starts from its input noised to the step its strength selects."""

import pytest
import torch
from models import IMAGE_SHAPE, NUM_CLASSES, Counting, an_input, perturbed_model

from contract.names import SAMPLERS
from diffusion.conditioning import strength_timesteps
from diffusion.noise import ImageNoise
from diffusion.sampling import SamplerState, SampleSpec, sample
from diffusion.schedules import CLEAN, timestep_subsequence

ALL = list(SAMPLERS)


@pytest.fixture(scope="module")
def model(linear_schedule):
    return perturbed_model(linear_schedule)


def run(model, schedule, spec, init=None):
    return sample(model, schedule, [spec], IMAGE_SHAPE, NUM_CLASSES, init_images=[init])[0]


def test_strength_picks_the_tail_of_the_step_subsequence():
    full = tuple(timestep_subsequence(10, 1000))
    assert strength_timesteps(10, 1.0, 1000) == full
    assert strength_timesteps(10, 0.5, 1000) == full[5:]
    assert strength_timesteps(10, 0.0, 1000) == (CLEAN,)
    # int(steps * strength), as diffusers' img2img pipelines count: 5.5 steps run 5, 1.2 run 1
    assert strength_timesteps(10, 0.55, 1000) == full[5:]
    assert strength_timesteps(4, 0.3, 1000) == tuple(timestep_subsequence(4, 1000)[3:])


@pytest.mark.parametrize("name", ALL)
def test_strength_zero_returns_the_input_unchanged_with_no_evaluation(model, linear_schedule, name):
    counting, init = Counting(model), an_input()
    state = SamplerState.start([SampleSpec(3, 2.0, sampler=name, steps=6, seed=1, strength=0.0)], IMAGE_SHAPE,
                               NUM_CLASSES, linear_schedule, init_images=[init])
    assert state.done == [True] and state.progress(0) == (0, 0)
    out = sample(counting, linear_schedule, [SampleSpec(3, 2.0, sampler=name, steps=6, seed=1, strength=0.0)],
                 IMAGE_SHAPE, NUM_CLASSES, init_images=[init])
    assert torch.equal(out[0], init)
    assert counting.t == []


@pytest.mark.parametrize("name, eta", [(n, 0.0) for n in ALL] + [("ddim", 0.7)])
def test_strength_one_is_plain_generation_bit_for_bit(model, linear_schedule, name, eta):
    spec = SampleSpec(4, 2.5, sampler=name, steps=5, eta=eta, seed=11)
    plain = run(model, linear_schedule, spec)
    assert torch.equal(run(model, linear_schedule, spec, an_input()), plain)


def test_the_start_is_the_input_noised_with_the_first_draw_of_its_seed(linear_schedule):
    init = an_input()
    state = SamplerState.start([SampleSpec(None, steps=10, seed=5, strength=0.3)], IMAGE_SHAPE, NUM_CLASSES,
                               linear_schedule, init_images=[init])
    t0 = timestep_subsequence(10, 1000)[7]
    assert state.timesteps[0] == timestep_subsequence(10, 1000)[7:] and state.progress(0) == (0, 3)
    z = ImageNoise(5).randn(IMAGE_SHAPE)
    expected = linear_schedule.q_sample(init[None], torch.tensor([t0]), z[None])[0]
    assert (state.x[0] - expected).abs().max() < 1e-6


@pytest.mark.parametrize("name", ALL)
def test_half_strength_runs_half_the_steps_and_lands_between_input_and_generation(model, linear_schedule, name):
    counting, init, steps = Counting(model), an_input(), 8
    spec = SampleSpec(6, 2.0, sampler=name, steps=steps, seed=3, strength=0.5)
    half = sample(counting, linear_schedule, [spec], IMAGE_SHAPE, NUM_CLASSES, init_images=[init])[0]
    full = timestep_subsequence(steps, 1000)
    evaluations = [t[0] for t in counting.t]
    assert evaluations[0] == full[steps // 2]
    assert len(evaluations) == (2 * (steps // 2) - 1 if name == "heun" else steps // 2)
    plain = run(model, linear_schedule, SampleSpec(6, 2.0, sampler=name, steps=steps, seed=3))
    weak = run(model, linear_schedule, SampleSpec(6, 2.0, sampler=name, steps=steps, seed=3, strength=0.25), init)
    distance = lambda x: (x - init).pow(2).mean().sqrt().item()  # noqa: E731
    assert 0 < distance(weak) < distance(half) < distance(plain)
    assert torch.isfinite(half).all()


@pytest.mark.parametrize("bad, field", [
    (dict(strength=1.5), "strength"), (dict(strength=-0.1), "strength"), (dict(strength=float("nan")), "strength"),
])
def test_strength_out_of_range_is_refused(linear_schedule, bad, field):
    with pytest.raises(ValueError, match=field):
        SamplerState.start([SampleSpec(1, **bad)], IMAGE_SHAPE, NUM_CLASSES, linear_schedule,
                           init_images=[an_input()])


def test_bad_inputs_are_refused_naming_the_field(linear_schedule):
    def start(specs, init_images):
        return SamplerState.start(specs, IMAGE_SHAPE, NUM_CLASSES, linear_schedule, init_images=init_images)

    with pytest.raises(ValueError, match="strength"):  # strength < 1 has nothing to start from
        start([SampleSpec(1, strength=0.5)], None)
    with pytest.raises(ValueError, match="init_image"):
        start([SampleSpec(1, strength=0.5)], [torch.zeros(3, 28, 28)])
    with pytest.raises(ValueError, match="init_image"):
        start([SampleSpec(1, strength=0.5)], [torch.full(IMAGE_SHAPE, float("nan"))])
    with pytest.raises(ValueError, match="init_images"):
        start([SampleSpec(1), SampleSpec(2)], [an_input()])


@pytest.mark.parametrize("steps, strength", [(10, 0.5), (20, 0.35), (50, 0.58)])
def test_ddim_img2img_matches_diffusers_img2img_convention(linear_schedule, steps, strength):
    """diffusers' img2img pipelines (`get_timesteps`, `prepare_latents`): run the last
    int(steps * strength) of the scheduler's timesteps from scheduler.add_noise(init, z, t_start)."""
    diffusers = pytest.importorskip("diffusers")
    model, init = perturbed_model(linear_schedule), an_input()
    spec = SampleSpec(4, 1.0, sampler="ddim", steps=steps, seed=12, strength=strength)
    ours = run(model, linear_schedule, spec, init)

    sched = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                                    timestep_spacing="trailing", clip_sample=False, set_alpha_to_one=True,
                                    steps_offset=0)
    sched.set_timesteps(steps)
    t_start = steps - min(int(steps * strength), steps)
    timesteps = sched.timesteps[t_start:]
    x = sched.add_noise(init[None], ImageNoise(12).randn(IMAGE_SHAPE)[None], timesteps[:1])
    with torch.no_grad():
        for t in timesteps:
            x = sched.step(model(x, t.expand(1), torch.tensor([4])), t, x).prev_sample
    assert (ours - x[0]).abs().max() < 1e-4 * max(1.0, x.abs().max().item())
