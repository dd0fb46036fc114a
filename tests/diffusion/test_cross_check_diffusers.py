"""Our DDIM (eta 0) and DPM-Solver++(2M) against diffusers' schedulers, an independent implementation:
same random model, same initial noise, fp32, the trajectory compared after every step."""

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from models import IMAGE_SHAPE, NUM_CLASSES, perturbed_model  # noqa: E402

from diffusion.guidance import GuidedDenoiser  # noqa: E402
from diffusion.sampling import SamplerState, SampleSpec, advance  # noqa: E402
from diffusion.schedules import NoiseSchedule, ScheduleConfig  # noqa: E402

BETA_SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


def diffusers_scheduler(sampler: str, kind: str):
    common = dict(num_train_timesteps=1000, beta_schedule=BETA_SCHEDULES[kind], beta_start=1e-4, beta_end=0.02,
                  timestep_spacing="trailing", prediction_type="epsilon")
    if sampler == "ddim":
        return diffusers.DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True, steps_offset=0)
    return diffusers.DPMSolverMultistepScheduler(
        **common, algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
        lower_order_final=True, final_sigmas_type="zero", thresholding=False)


def our_trajectory(model, schedule, spec, batch, clip_x0=False):
    # identical specs give identical rows; vary the seeds so the batch is not one image repeated
    state = SamplerState.concat([SamplerState.start([SampleSpec(**{**spec.__dict__, "seed": spec.seed + i})],
                                                    IMAGE_SHAPE, NUM_CLASSES, schedule) for i in range(batch)])
    x_T = state.x.clone()
    denoiser = GuidedDenoiser(model, NUM_CLASSES, clip_x0=clip_x0)
    traj = []
    while not all(state.done):
        advance(state, denoiser, schedule)
        traj.append(state.x.clone())
    return x_T, traj, state.timesteps[0][:-1]


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m"])
@pytest.mark.parametrize("steps", [10, 20, 50])
def test_matches_diffusers_step_by_step(sampler, kind, steps):
    schedule = NoiseSchedule(ScheduleConfig(kind))
    model = perturbed_model(schedule)
    spec = SampleSpec(4, 1.0, sampler=sampler, steps=steps, seed=11)
    x_T, ours, our_timesteps = our_trajectory(model, schedule, spec, batch=2)

    sched = diffusers_scheduler(sampler, kind)
    sched.set_timesteps(steps)
    assert [int(t) for t in sched.timesteps] == our_timesteps
    x = x_T.clone()
    y = torch.full((2,), 4)
    with torch.no_grad():
        for i, t in enumerate(sched.timesteps):
            eps = model(x, t.expand(2), y)
            x = sched.step(eps, t, x).prev_sample
            # cosine's alpha_bar at t = 999 is 2.4e-9: x_0 = x / sqrt(alpha_bar) amplifies fp32 rounding
            # by 2e4 on the first step there, so compare relative to the trajectory's scale
            scale = max(1.0, x.abs().max().item())
            assert (ours[i] - x).abs().max().item() < 1e-4 * scale, f"step {i} (t={int(t)})"
    assert len(ours) == steps


@pytest.mark.parametrize("steps", [10, 50])
def test_ddim_with_clipped_x0_matches_diffusers_clip_sample(steps):
    """Clipping x_0 to [-1, 1] and re-deriving eps from it is diffusers' DDIM with clip_sample and
    use_clipped_model_output (GLIDE's convention)."""
    schedule = NoiseSchedule(ScheduleConfig("linear"))
    model = perturbed_model(schedule)
    x_T, ours, _ = our_trajectory(model, schedule, SampleSpec(2, 1.0, sampler="ddim", steps=steps, seed=5), batch=2,
                                  clip_x0=True)
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                                    timestep_spacing="trailing", clip_sample=True, clip_sample_range=1.0,
                                    set_alpha_to_one=True, steps_offset=0)
    sched.set_timesteps(steps)
    x, y = x_T.clone(), torch.full((2,), 2)
    with torch.no_grad():
        for i, t in enumerate(sched.timesteps):
            x = sched.step(model(x, t.expand(2), y), t, x, use_clipped_model_output=True).prev_sample
            assert (ours[i] - x).abs().max().item() < 1e-4, f"step {i} (t={int(t)})"
    # the perturbed Gaussian data reach past 1; clipped, the final images stay in range
    assert ours[-1].abs().max() <= 1 + 1e-6
