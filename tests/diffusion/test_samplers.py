"""The suite every sampler passes (shape, determinism, batch independence, convergence)."""

import pytest
import torch
from analytic import GaussianEps
from models import IMAGE_SHAPE, NUM_CLASSES, perturbed_model

from contract.names import SAMPLERS
from diffusion.guidance import GuidedDenoiser
from diffusion.sampling import SamplerState, SampleSpec, advance, sample, specs_for_request
from diffusion.schedules import NoiseSchedule

ALL = list(SAMPLERS)


@pytest.fixture(scope="module")
def model(linear_schedule):
    return perturbed_model(linear_schedule)


def run(model, schedule, specs):
    return sample(model, schedule, specs, IMAGE_SHAPE, NUM_CLASSES)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("steps", [1, 2, 7])
def test_shape_range_and_finite(linear_schedule, name, steps):
    exact = perturbed_model(linear_schedule).exact
    x = run(exact, linear_schedule, specs_for_request(SampleSpec(3, 2.0, sampler=name, steps=steps, seed=1), 2))
    assert x.shape == (2, *IMAGE_SHAPE)
    assert torch.isfinite(x).all()
    # the Gaussian data (means in [-0.6, 0.6], std 0.3) live in about [-2, 2]; a sampler that left
    # noise behind or diverged would not
    assert x.abs().max() < 2.5


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_images_other_seed_other_images(model, linear_schedule, name):
    spec = SampleSpec(5, 3.0, sampler=name, steps=6, seed=42)
    a = run(model, linear_schedule, [spec])
    b = run(model, linear_schedule, [spec])
    c = run(model, linear_schedule, [SampleSpec(5, 3.0, sampler=name, steps=6, seed=43)])
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-2


@pytest.mark.parametrize("name", ALL)
def test_image_i_of_a_batch_equals_a_single_run_with_seed_s_plus_i(model, linear_schedule, name):
    eta = 0.5 if name == "ddim" else 0.0
    specs = specs_for_request(SampleSpec(7, 2.5, sampler=name, steps=8, eta=eta, seed=100), 4)
    batch = run(model, linear_schedule, specs)
    for i in range(4):
        alone = run(model, linear_schedule, [SampleSpec(7, 2.5, sampler=name, steps=8, eta=eta, seed=100 + i)])
        assert (batch[i] - alone[0]).abs().max() < 1e-5


def test_a_mixed_batch_gives_each_image_what_it_gets_alone(model, linear_schedule):
    """Different samplers, step counts, classes, scales and seeds in one batch, as the worker runs it."""
    specs = [
        SampleSpec(0, 1.0, sampler="ddpm", steps=5, seed=1),
        SampleSpec(1, 3.0, sampler="ddim", steps=9, eta=1.0, seed=2),
        SampleSpec(None, 1.0, sampler="dpmpp_2m", steps=4, seed=3),
        SampleSpec(9, 0.0, sampler="euler", steps=3, seed=4),
        SampleSpec(4, 6.0, sampler="heun", steps=6, seed=5),
        SampleSpec(2, 1.5, sampler="dpmpp_2m", steps=12, seed=6),
    ]
    batch = run(model, linear_schedule, specs)
    for i, spec in enumerate(specs):
        assert (batch[i] - run(model, linear_schedule, [spec])[0]).abs().max() < 1e-5, spec


def test_images_can_join_and_leave_between_steps(model, linear_schedule):
    """The worker's continuous batching: a state concatenated mid-flight with a fresh one, and
    finished images dropped, gives every image the same result as running it alone."""
    denoiser = GuidedDenoiser(model, NUM_CLASSES)
    long = SamplerState.start([SampleSpec(1, 2.0, sampler="dpmpp_2m", steps=10, seed=7),
                               SampleSpec(2, 2.0, sampler="heun", steps=5, seed=8)],
                              IMAGE_SHAPE, NUM_CLASSES, linear_schedule)
    for _ in range(3):
        advance(long, denoiser, linear_schedule)
    short = SamplerState.start([SampleSpec(3, 2.0, sampler="ddpm", steps=2, seed=9)],
                               IMAGE_SHAPE, NUM_CLASSES, linear_schedule)
    state = SamplerState.concat([long, short])
    finished = {}
    while len(state):
        advance(state, denoiser, linear_schedule)
        keep = [i for i, d in enumerate(state.done) if not d]
        for i, d in enumerate(state.done):
            if d:
                finished[state.specs[i].seed] = state.x[i]
        state = state.select(keep)
    assert sorted(finished) == [7, 8, 9]
    for spec in long.specs + short.specs:
        alone = run(model, linear_schedule, [spec])[0]
        # batches of 3, 2 and 1 images over ten steps: float32 convolutions round differently per
        # batch size, so allow 1e-5 relative to the image's scale (values reach about 2 here)
        assert (finished[spec.seed] - alone).abs().max() < 1e-5 * max(1.0, alone.abs().max().item())


def test_euler_equals_ddim_with_eta_zero(model, linear_schedule):
    """Same sigmas: Euler on the sigma-space ODE and DDIM (eta 0) are the same update (Karras et al. sec. 3)."""
    a = run(model, linear_schedule, [SampleSpec(2, 2.0, sampler="euler", steps=10, seed=3)])
    b = run(model, linear_schedule, [SampleSpec(2, 2.0, sampler="ddim", steps=10, seed=3)])
    assert (a - b).abs().max() < 1e-4


def test_heun_makes_two_evaluations_per_step_but_the_last(linear_schedule):
    calls = []

    class Counting(torch.nn.Module):
        def forward(self, x, t, y):
            calls.append(t.clone())
            return torch.zeros_like(x)

    sample(Counting(), linear_schedule, [SampleSpec(None, sampler="heun", steps=5)], (1, 2, 2), NUM_CLASSES)
    assert len(calls) == 2 * 5 - 1
    # the corrector evaluates at the next timestep of the subsequence
    assert [int(c) for c in calls[:3]] == [999, 799, 799]


def test_the_last_step_lands_on_a_clean_image(linear_schedule):
    """With an exact model for a point mass at c, every sampler must return c itself: any residual
    noise from the last step (alpha_bar_prev < 1) would show."""
    c = torch.full((1, 4, 4), 0.25, dtype=torch.float64)
    model = GaussianEps(linear_schedule, c, torch.zeros_like(c))
    for name in ALL:
        for steps in (1, 3, 50):
            x = sample(model, linear_schedule, [SampleSpec(None, sampler=name, steps=steps, seed=0)], (1, 4, 4),
                       NUM_CLASSES)
            assert (x - 0.25).abs().max() < 1e-3, (name, steps)


@pytest.mark.parametrize("bad, field", [
    (dict(steps=0), "steps"), (dict(steps=1001), "steps"), (dict(sampler="plms"), "sampler"),
    (dict(eta=0.5, sampler="euler"), "eta"), (dict(eta=1.5), "eta"), (dict(guidance_scale=-1.0), "guidance_scale"),
    (dict(class_label=10), "class_label"), (dict(seed=-1), "seed"),
    (dict(guidance="classifier", class_label=None), "class_label"), (dict(guidance="clip"), "guidance"),
])
def test_invalid_specs_are_refused_naming_the_field(linear_schedule, bad, field):
    spec = SampleSpec(**{"class_label": 1, **bad})
    with pytest.raises(ValueError, match=field):
        SamplerState.start([spec], IMAGE_SHAPE, NUM_CLASSES, linear_schedule)


# --- convergence on Gaussian data, where the exact eps is known in closed form ---------------------

MU = torch.linspace(-0.5, 0.5, 64, dtype=torch.float64).view(1, 8, 8)
STD = torch.full((1, 8, 8), 0.2, dtype=torch.float64)
N_IMAGES = 400


def moment_error(schedule: NoiseSchedule, name: str, steps: int) -> tuple[float, float, float]:
    """(mean error, std error, their root-mean-square distance) of N_IMAGES samples from the truth."""
    model = GaussianEps(schedule, MU, STD)
    specs = [SampleSpec(None, sampler=name, steps=steps, seed=i) for i in range(N_IMAGES)]
    x = sample(model, schedule, specs, (1, 8, 8), NUM_CLASSES).double()
    dm, ds = x.mean(0) - MU, x.std(0) - STD
    return dm.abs().mean().item(), ds.abs().mean().item(), (dm**2 + ds**2).mean().sqrt().item()


@pytest.mark.parametrize("name, steps",
                         [("ddpm", 1000), ("ddim", 250), ("dpmpp_2m", 100), ("euler", 250), ("heun", 100)])
def test_many_steps_recover_the_data_mean_and_variance(linear_schedule, name, steps):
    mean_err, std_err, _ = moment_error(linear_schedule, name, steps)
    # sampling error alone: std 0.2 / sqrt(400) = 0.01 per pixel for the mean, 0.007 for the std
    assert mean_err < 0.015
    assert std_err < 0.015


def test_at_20_steps_higher_order_solvers_beat_ddim_which_beats_ddpm(linear_schedule):
    err = {name: moment_error(linear_schedule, name, 20)[2] for name in ("ddpm", "ddim", "dpmpp_2m", "heun")}
    assert err["dpmpp_2m"] < err["ddim"], err
    assert err["heun"] < err["ddim"], err
    assert err["ddim"] < err["ddpm"], err


def test_dpmpp_2m_converges_at_second_order_and_ddim_at_first(linear_schedule):
    """Against the exact probability-flow ODE solution of each starting noise (std 0.5 data, where
    the final step's error is small): doubling the steps halves DDIM's error and quarters DPM-Solver++'s."""
    mu = torch.linspace(-0.5, 0.5, 16, dtype=torch.float64).view(1, 4, 4)
    model = GaussianEps(linear_schedule, mu, torch.full_like(mu, 0.5))
    x_T = torch.stack([torch.randn((1, 4, 4), generator=torch.Generator().manual_seed(i)) for i in range(50)])
    exact = model.ode_solution(x_T, 999)

    def err(name, steps):
        specs = [SampleSpec(None, sampler=name, steps=steps, seed=i) for i in range(50)]
        return (sample(model, linear_schedule, specs, (1, 4, 4), NUM_CLASSES) - exact).abs().mean().item()

    ddim_ratio = err("ddim", 10) / err("ddim", 20)
    dpm_ratio = err("dpmpp_2m", 10) / err("dpmpp_2m", 20)
    assert 1.5 < ddim_ratio < 2.5
    assert dpm_ratio > 3.5


@pytest.mark.parametrize("name", ALL)
def test_clipping_x0_keeps_every_sampler_in_the_data_range(model, linear_schedule, name):
    """The perturbed-Gaussian images reach past +-1; with clip_x0 every step's x_0 estimate is clipped,
    and every sampler's last step lands on such an estimate."""
    specs = specs_for_request(SampleSpec(3, 3.0, sampler=name, steps=6, seed=2), 3)
    free = sample(model, linear_schedule, specs, IMAGE_SHAPE, NUM_CLASSES)
    clipped = sample(model, linear_schedule, specs, IMAGE_SHAPE, NUM_CLASSES, clip_x0=True)
    assert free.abs().max() > 1.05
    assert clipped.abs().max() <= 1 + 1e-5


def test_the_x0_estimate_is_skipped_unless_an_image_tracks_it(model, linear_schedule):
    """Previews read x0; a step whose moving images do not track it skips the estimate and leaves
    the images themselves unchanged."""
    denoiser = GuidedDenoiser(model, NUM_CLASSES)
    specs = [SampleSpec(1, 2.0, sampler="ddim", steps=4, seed=3), SampleSpec(2, 2.0, sampler="heun", steps=3, seed=4)]
    tracked = SamplerState.start(specs, IMAGE_SHAPE, NUM_CLASSES, linear_schedule)
    untracked = SamplerState.start(specs, IMAGE_SHAPE, NUM_CLASSES, linear_schedule, track_x0=False)
    start_x0 = untracked.x0.clone()
    advance(tracked, denoiser, linear_schedule)
    advance(untracked, denoiser, linear_schedule)
    assert torch.equal(untracked.x0, start_x0) and not torch.equal(tracked.x0, start_x0)
    # one tracking image in the batch keeps everyone's estimate current
    mixed = SamplerState.concat([untracked, SamplerState.start(specs[:1], IMAGE_SHAPE, NUM_CLASSES, linear_schedule)])
    advance(mixed, denoiser, linear_schedule)
    assert not torch.equal(mixed.x0[:2], start_x0)
    while not all(tracked.done):
        advance(tracked, denoiser, linear_schedule)
        advance(untracked, denoiser, linear_schedule)
    assert torch.equal(tracked.x, untracked.x)
