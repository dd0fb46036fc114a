import pytest
import torch

from diffusion.eval_classifier import EVAL_CLASSIFIER_PRESETS, EvalClassifier, augment
from diffusion.evaluation import FeatureStats, accuracy, classify, frechet_distance, score


def stats(mean, std, n=20_000, seed=0):
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, len(mean), generator=g, dtype=torch.float64)
    return FeatureStats.of(torch.tensor(mean) + torch.tensor(std) * noise)


def test_fd_of_a_set_with_itself_is_zero():
    a = stats([0.0, 1.0, 2.0], [1.0, 0.5, 2.0])
    assert abs(frechet_distance(a, a)) < 1e-8


def test_fd_of_diagonal_gaussians_has_its_closed_form():
    """For diagonal covariances, FD = ||mu_a - mu_b||^2 + sum_i (sigma_a,i - sigma_b,i)^2."""
    f64 = torch.float64
    a = FeatureStats(torch.tensor([0.0, 1.0], dtype=f64), torch.diag(torch.tensor([1.0, 4.0], dtype=f64)), 1)
    b = FeatureStats(torch.tensor([1.0, 3.0], dtype=f64), torch.diag(torch.tensor([9.0, 1.0], dtype=f64)), 1)
    assert frechet_distance(a, b) == pytest.approx(1 + 4 + (1 - 3) ** 2 + (2 - 1) ** 2, rel=1e-9)
    assert frechet_distance(b, a) == pytest.approx(frechet_distance(a, b), rel=1e-9)


def test_fd_with_correlated_covariances_matches_the_matrix_square_root():
    g = torch.Generator().manual_seed(3)
    m = torch.randn(4, 4, generator=g, dtype=torch.float64)
    ca, cb = m @ m.T + torch.eye(4, dtype=torch.float64), torch.eye(4, dtype=torch.float64) * 2
    a = FeatureStats(torch.zeros(4, dtype=torch.float64), ca, 1)
    b = FeatureStats(torch.ones(4, dtype=torch.float64), cb, 1)
    # with S_b = 2I, (S_a S_b)^(1/2) = sqrt(2) S_a^(1/2), whose trace is sqrt(2) * sum sqrt(eig(S_a))
    expected = 4 + ca.trace() + cb.trace() - 2 * 2**0.5 * torch.linalg.eigvalsh(ca).sqrt().sum()
    assert frechet_distance(a, b) == pytest.approx(float(expected), rel=1e-9)


def test_accuracy_counts_matches():
    assert accuracy(torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 0, 4])) == 0.75


def test_the_classifier_gives_features_and_logits():
    cfg = EVAL_CLASSIFIER_PRESETS["fmnist"]
    model = EvalClassifier(cfg).eval()
    x = torch.rand(5, 1, 28, 28) * 2 - 1
    feats, preds = classify(model, x, batch_size=2)
    assert feats.shape == (5, cfg.feature_dim) and cfg.feature_dim >= 128
    assert preds.shape == (5,) and preds.max() < cfg.num_classes
    report = score(model, x, torch.zeros(5, dtype=torch.long), FeatureStats.of(torch.randn(50, cfg.feature_dim)))
    assert report.n == 5 and 0 <= report.accuracy <= 1 and report.fd > 0


def test_augment_shifts_by_at_most_two_pixels_and_pads_with_background():
    x = -torch.ones(64, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 1.0  # a bright square
    out = augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert torch.equal(out.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)))  # the square never leaves the frame
    lit = out[:, 0] > 0
    rows = lit.any(2).float().argmax(1)
    assert set(rows.tolist()) <= set(range(8, 13)) and len(set(rows.tolist())) > 1


class _SignOfMean(torch.nn.Module):
    """Class 1 where the noised image's mean is positive, else 0; records the timesteps it saw."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, t):
        self.seen.append(t.clone())
        positive = (x.mean(dim=(1, 2, 3)) > 0).float()
        return torch.stack([1 - positive, positive], dim=1)


def test_noised_accuracy_falls_from_clean_to_pure_noise_and_is_seeded():
    from diffusion.evaluation import noised_accuracy
    from diffusion.schedules import NoiseSchedule

    images = torch.cat([torch.full((100, 1, 28, 28), 1.0), torch.full((100, 1, 28, 28), -1.0)])
    labels = torch.cat([torch.ones(100, dtype=torch.long), torch.zeros(100, dtype=torch.long)])
    clf = _SignOfMean()
    acc = noised_accuracy(clf, NoiseSchedule(), images, labels, timesteps=(0, 500, 999), batch_size=64)
    assert list(acc) == [0, 500, 999]
    assert acc[0] == 1.0 and acc[999] < 0.8  # at t = 999 the signal is about 0.6% of x_t
    assert acc[0] >= acc[500] >= acc[999]
    # the classifier is told the level it sees, batch by batch
    assert [int(t[0]) for t in clf.seen] == [0] * 4 + [500] * 4 + [999] * 4 and all((t == t[0]).all() for t in clf.seen)
    assert noised_accuracy(clf, NoiseSchedule(), images, labels, timesteps=(999,), seed=0)[999] == acc[999]
