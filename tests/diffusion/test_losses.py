import torch
from analytic import GaussianEps

from diffusion.losses import drop_labels, eps_loss
from diffusion.schedules import NoiseSchedule


def test_label_dropout_replaces_about_p_of_the_labels_by_the_null_class():
    y = torch.randint(0, 10, (20_000,), generator=torch.Generator().manual_seed(0))
    out = drop_labels(y, 10, 0.1, torch.Generator().manual_seed(1))
    dropped = out == 10
    assert 0.09 < dropped.float().mean() < 0.11
    assert torch.equal(out[~dropped], y[~dropped])


def test_eps_loss_is_lower_for_the_exact_model_than_for_a_constant_one():
    s = NoiseSchedule()
    mu, std = torch.zeros(1, 4, 4, dtype=torch.float64), torch.full((1, 4, 4), 0.3, dtype=torch.float64)
    x0 = (mu + std * torch.randn(4096, 1, 4, 4, dtype=torch.float64)).float()
    y = torch.zeros(4096, dtype=torch.long)
    exact = eps_loss(GaussianEps(s, mu, std), s, x0, y, 10, 0.1, torch.Generator().manual_seed(0))
    zero = eps_loss(lambda x, t, y: torch.zeros_like(x), s, x0, y, 10, 0.1, torch.Generator().manual_seed(0))
    assert zero.item() > 0.95  # E||eps||^2 per pixel = 1
    assert exact.item() < 0.2
