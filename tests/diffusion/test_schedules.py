import math

import numpy as np
import pytest
import torch

from diffusion.schedules import CLEAN, NoiseSchedule, ScheduleConfig, timestep_subsequence


def test_linear_betas_run_from_1e4_to_002_over_1000_steps():
    s = NoiseSchedule(ScheduleConfig("linear"))
    assert s.num_train_steps == 1000
    assert s.betas[0].item() == pytest.approx(1e-4) and s.betas[-1].item() == pytest.approx(0.02)
    assert torch.allclose(s.alphas_cumprod, torch.cumprod(1 - s.betas, 0))


def test_cosine_alpha_bar_follows_improved_ddpm_eq_17():
    s = NoiseSchedule(ScheduleConfig("cosine"))
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 100, 500, 900):
        assert s.alphas_cumprod[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert (s.betas <= 0.999).all()


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_alpha_bar_decreases_and_the_clean_index_is_one(kind):
    s = NoiseSchedule(ScheduleConfig(kind))
    ab = s.alpha_bar(torch.arange(1000))
    assert (ab[1:] < ab[:-1]).all() and ab[-1] < 1e-4
    assert s.alpha_bar(torch.tensor([CLEAN])).item() == 1.0
    assert s.sigma(torch.tensor([CLEAN])).item() == 0.0


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="linear"):
        NoiseSchedule(ScheduleConfig("quadratic"))


def test_every_subsequence_starts_at_the_last_step_and_ends_clean():
    for steps in range(1, 1001):
        ts = timestep_subsequence(steps)
        assert len(ts) == steps + 1 and ts[0] == 999 and ts[-1] == CLEAN
        assert all(a > b for a, b in zip(ts, ts[1:]))  # strictly decreasing: no repeated timestep


def test_subsequences_are_evenly_spaced_trailing():
    assert timestep_subsequence(1) == [999, CLEAN]
    assert timestep_subsequence(4) == [999, 749, 499, 249, CLEAN]
    assert timestep_subsequence(1000)[:-1] == list(range(999, -1, -1))
    # 3 does not divide 1000: the gaps are 333 or 334, never the off-by-one t - 1000 // 3 = t - 333 everywhere
    assert timestep_subsequence(3) == [999, 666, 332, CLEAN]


@pytest.mark.parametrize("steps", [0, 1001])
def test_out_of_range_step_counts_are_refused(steps):
    with pytest.raises(ValueError, match="steps"):
        timestep_subsequence(steps)


def test_q_sample_is_eq_4():
    s = NoiseSchedule()
    x0, eps = torch.randn(2, 1, 3, 3), torch.randn(2, 1, 3, 3)
    t = torch.tensor([10, 900])
    ab = torch.from_numpy(np.cumprod(1 - np.linspace(1e-4, 0.02, 1000)))[t].float().view(-1, 1, 1, 1)
    assert torch.allclose(s.q_sample(x0, t, eps), ab.sqrt() * x0 + (1 - ab).sqrt() * eps, atol=1e-6)
