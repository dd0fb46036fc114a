"""Classifier-free guidance and classifier guidance, checked against exact models."""

import pytest
import torch
from analytic import GaussianMixture, MixtureClassifier, MixtureEps
from models import IMAGE_SHAPE, NUM_CLASSES, perturbed_model

from diffusion.guidance import Conditioning, GuidedDenoiser
from diffusion.sampling import SampleSpec, sample


def cond(y, s, classifier=False):
    n = len(y)
    return Conditioning(torch.tensor(y), torch.tensor(s, dtype=torch.float32), torch.tensor([classifier] * n))


class RowCounter(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.rows = inner, []

    def forward(self, x, t, y):
        self.rows.append(x.shape[0])
        return self.inner(x, t, y)


@pytest.fixture(scope="module")
def model(linear_schedule):
    return perturbed_model(linear_schedule)


def test_scale_one_is_the_conditional_prediction_and_zero_the_unconditional(model):
    x = torch.randn(3, *IMAGE_SHAPE, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([900, 500, 20])
    y = torch.tensor([1, 5, 9])
    d = GuidedDenoiser(model, NUM_CLASSES)
    with torch.no_grad():
        assert torch.equal(d(x, t, cond([1, 5, 9], [1.0] * 3)).eps, model(x, t, y))
        assert torch.equal(d(x, t, cond([1, 5, 9], [0.0] * 3)).eps, model(x, t, torch.full((3,), NUM_CLASSES)))
        eps_c, eps_u = model(x, t, y), model(x, t, torch.full((3,), NUM_CLASSES))
        guided = d(x, t, cond([1, 5, 9], [3.0] * 3)).eps
    assert torch.allclose(guided, eps_u + 3.0 * (eps_c - eps_u), atol=1e-6)


def test_one_forward_pass_doubling_only_the_rows_that_need_both(model):
    counting = RowCounter(model)
    d = GuidedDenoiser(counting, NUM_CLASSES)
    x, t = torch.randn(5, *IMAGE_SHAPE), torch.full((5,), 500)
    d(x, t, cond([0, 1, 2, 3, 4], [1.0, 0.0, 1.0, 0.0, 1.0]))
    d(x, t, cond([0, 1, 2, 3, NUM_CLASSES], [3.0, 3.0, 1.0, 0.0, 3.0]))
    # no doubling where every s is 0 or 1; two rows doubled (the null-class row needs one pass)
    assert counting.rows == [5, 7]


def test_a_batch_mixing_scales_equals_each_scale_run_alone(model, linear_schedule):
    scales = [0.0, 1.0, 1.5, 3.0, 6.0]
    specs = [SampleSpec(4, s, sampler="dpmpp_2m", steps=6, seed=10 + i) for i, s in enumerate(scales)]
    batch = sample(model, linear_schedule, specs, IMAGE_SHAPE, NUM_CLASSES)
    for i, spec in enumerate(specs):
        alone = sample(model, linear_schedule, [spec], IMAGE_SHAPE, NUM_CLASSES)
        assert (batch[i] - alone[0]).abs().max() < 1e-5


# --- classifier guidance on a two-class Gaussian mixture --------------------------------------------

SHAPE = (1, 4, 4)


@pytest.fixture(scope="module")
def mixture(linear_schedule):
    mu = torch.stack([torch.full(SHAPE, -0.3), torch.full(SHAPE, 0.3)])
    return GaussianMixture(linear_schedule, mu, std=0.4)


def test_the_classifier_gradient_is_s_times_grad_log_p(mixture):
    d = GuidedDenoiser(MixtureEps(mixture), null_class=2, classifier=MixtureClassifier(mixture))
    x = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([300, 700])
    out = d(x, t, cond([0, 1], [2.0, 0.5], classifier=True))
    # grad log p(y | x_t) = grad log p(x_t | y) - grad log p(x_t) = -(eps_c - eps_u) / sqrt(1 - ab)
    ab = mixture.schedule.alpha_bar(t, torch.float64).view(-1, 1, 1, 1)
    eps_c = mixture.eps(x, t, torch.tensor([0, 1]))
    eps_u = mixture.eps(x, t, torch.tensor([2, 2]))
    expected = -(eps_c - eps_u).double() / (1 - ab).sqrt() * torch.tensor([2.0, 0.5]).view(-1, 1, 1, 1)
    assert torch.allclose(out.grad.double(), expected, atol=1e-4)
    # the conditional prediction is left as it is; the sampler applies the shift
    assert torch.allclose(out.eps, eps_c, atol=1e-6)


@pytest.mark.parametrize("sampler", ["ddim", "euler", "heun", "dpmpp_2m"])
def test_classifier_guidance_at_s_equals_cfg_at_1_plus_s_with_exact_models(mixture, linear_schedule, sampler):
    """With exact models, eps_c - sqrt(1 - ab) s grad log p(y | x_t) = eps_u + (1 + s)(eps_c - eps_u):
    ADM's score shift on the conditional model is CFG at scale 1 + s, image for image."""
    model, clf = MixtureEps(mixture), MixtureClassifier(mixture)
    for s in (0.0, 2.0):
        a = sample(model, linear_schedule, [SampleSpec(1, s, guidance="classifier", sampler=sampler, steps=15, seed=3)],
                   SHAPE, 2, classifier=clf)
        b = sample(model, linear_schedule, [SampleSpec(1, 1 + s, sampler=sampler, steps=15, seed=3)], SHAPE, 2)
        assert (a - b).abs().max() < 1e-4, s


def test_ddpm_classifier_guidance_shifts_the_mean_towards_the_class(linear_schedule):
    # overlapping classes, so that unguided samples are often closer to the other class
    mixture = GaussianMixture(linear_schedule, torch.stack([torch.full(SHAPE, -0.1), torch.full(SHAPE, 0.1)]), 0.5)
    model, clf = MixtureEps(mixture), MixtureClassifier(mixture)

    def mean_log_p(scale):
        specs = [SampleSpec(1, scale, guidance="classifier", sampler="ddpm", steps=50, seed=i) for i in range(200)]
        x = sample(model, linear_schedule, specs, SHAPE, 2, classifier=clf)
        return torch.log_softmax(mixture.logits(x, torch.full((200,), -1)), 1)[:, 1].mean().item()

    unguided, guided = mean_log_p(0.0), mean_log_p(4.0)
    assert guided > unguided + 0.05


def test_cfg_and_classifier_rows_share_one_batch(mixture, linear_schedule):
    model, clf = MixtureEps(mixture), MixtureClassifier(mixture)
    specs = [SampleSpec(0, 2.0, guidance="classifier", sampler="ddim", steps=10, seed=1),
             SampleSpec(1, 3.0, sampler="ddim", steps=10, seed=2),
             SampleSpec(1, 1.0, guidance="classifier", sampler="ddpm", steps=10, seed=3)]
    batch = sample(model, linear_schedule, specs, SHAPE, 2, classifier=clf)
    for i, spec in enumerate(specs):
        alone = sample(model, linear_schedule, [spec], SHAPE, 2, classifier=clf)
        assert (batch[i] - alone[0]).abs().max() < 1e-5


def test_classifier_guidance_without_a_classifier_is_refused(model, linear_schedule):
    with pytest.raises(ValueError, match="classifier"):
        sample(model, linear_schedule, [SampleSpec(1, 1.0, guidance="classifier", steps=2)], IMAGE_SHAPE, NUM_CLASSES)
