"""Sample quality in the evaluation classifier's features (evaluation.md): the Fréchet distance
between generated and real images, and the share of generated images classified as their class."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class FeatureStats:
    """Mean and covariance of a set of feature vectors (float64)."""

    mean: torch.Tensor  # [D]
    cov: torch.Tensor  # [D, D]
    n: int

    @classmethod
    def of(cls, features: torch.Tensor) -> FeatureStats:
        f = features.double()
        return cls(mean=f.mean(0), cov=torch.cov(f.T), n=f.shape[0])


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """Heusel et al. 2017, eq. 6: ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)).

    Tr((S_a S_b)^(1/2)) is the sum of the square roots of the eigenvalues of S_a^(1/2) S_b S_a^(1/2),
    which is symmetric positive semi-definite, so eigh (float64) gives it stably with no complex parts."""
    evals_a, evecs_a = torch.linalg.eigh(a.cov)
    sqrt_a = (evecs_a * evals_a.clamp_min(0).sqrt()) @ evecs_a.T
    middle = sqrt_a @ b.cov @ sqrt_a
    tr_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    diff = a.mean - b.mean
    return float(diff @ diff + a.cov.trace() + b.cov.trace() - 2 * tr_sqrt)


@torch.no_grad()
def classify(classifier: nn.Module, images: torch.Tensor, batch_size: int = 1000,
             device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(features [N, D], predicted class [N]) of images in [-1, 1], on the CPU."""
    feats, preds = [], []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(device).float().clamp(-1, 1)
        f = classifier.features(x)
        feats.append(f.float().cpu())
        preds.append(classifier.head(f).argmax(-1).cpu())
    return torch.cat(feats), torch.cat(preds)


def accuracy(predicted: torch.Tensor, wanted: torch.Tensor) -> float:
    return float((predicted == wanted).float().mean())


NOISE_LEVELS = (0, 100, 250, 500, 750, 900, 999)
"""Timesteps at which a guidance classifier's held-out accuracy is measured (0: clean images)."""


@torch.no_grad()
def noised_accuracy(classifier: nn.Module, schedule, images: torch.Tensor, labels: torch.Tensor,
                    timesteps: Iterable[int] = NOISE_LEVELS, seed: int = 0, batch_size: int = 1000,
                    device: torch.device | str = "cpu") -> dict[int, float]:
    """Accuracy of a noise-aware classifier p(y | x_t, t) (Dhariwal & Nichol 2021, sec. 4) on `images`
    in [-1, 1] noised to each t by q(x_t | x_0) (Ho et al. 2020, eq. 4); one seeded eps per image,
    the same at every t, so the levels differ only in how much of it they mix in."""
    eps = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    out = {}
    for t in timesteps:
        correct = 0
        for i in range(0, len(images), batch_size):
            x0 = images[i:i + batch_size].to(device).float()
            tt = torch.full((len(x0),), int(t), device=device, dtype=torch.long)
            x_t = schedule.q_sample(x0, tt, eps[i:i + batch_size].to(device))
            correct += int((classifier(x_t, tt).argmax(-1).cpu() == labels[i:i + batch_size]).sum())
        out[int(t)] = correct / len(images)
    return out


@dataclass
class QualityReport:
    fd: float
    accuracy: float | None  # None for unconditional samples
    n: int


def score(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor | None, reference: FeatureStats,
          batch_size: int = 1000, device: torch.device | str = "cpu") -> QualityReport:
    """FD of `images` against `reference`, and accuracy against `labels` (if given)."""
    feats, preds = classify(classifier, images, batch_size, device)
    acc = accuracy(preds, labels) if labels is not None else None
    return QualityReport(fd=frechet_distance(FeatureStats.of(feats), reference), accuracy=acc, n=len(images))


def batched(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def generate_for_evaluation(sample_batch: Callable[[list], torch.Tensor], specs: list, batch_size: int,
                            progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """All images of `specs`, `batch_size` at a time, on the CPU (clamped to [-1, 1])."""
    out = []
    for chunk in batched(specs, batch_size):
        out.append(sample_batch(chunk).float().clamp(-1, 1).cpu())
        if progress:
            progress(len(chunk))
    return torch.cat(out)


@dataclass(frozen=True)
class Setting:
    """One row of a quality table: how images are sampled."""

    sampler: str = "ddim"
    steps: int = 50
    guidance: str = "cfg"
    guidance_scale: float = 1.0
    eta: float = 0.0

    @property
    def unconditional(self) -> bool:
        # CFG at s = 0 ignores the label: its samples are scored against the whole test set, unlabelled
        return self.guidance == "cfg" and self.guidance_scale == 0


def evaluate_setting(
    sample_batch: Callable[[list], torch.Tensor],
    setting: Setting,
    num_classes: int,
    per_class: int,
    eval_classifier: nn.Module,
    reference: FeatureStats,
    batch_size: int = 500,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> dict:
    """FD and accuracy of `per_class` images of every class sampled with `setting` (seeds fixed: image
    i of class c uses seed `seed + c * per_class + i`, so a rerun gives the same figures)."""
    import time

    from diffusion.sampling import SampleSpec

    specs = [SampleSpec(c, setting.guidance_scale, guidance=setting.guidance, sampler=setting.sampler,
                        steps=setting.steps, eta=setting.eta, seed=seed + c * per_class + i)
             for c in range(num_classes) for i in range(per_class)]
    labels = torch.tensor([s.class_label for s in specs])
    t0 = time.perf_counter()
    images = generate_for_evaluation(sample_batch, specs, batch_size, progress)
    seconds = time.perf_counter() - t0
    report = score(eval_classifier, images, None if setting.unconditional else labels, reference, device=device)
    return {**setting.__dict__, "fd": round(report.fd, 4),
            "accuracy": None if report.accuracy is None else round(report.accuracy, 4),
            "n": report.n, "sampling_seconds": round(seconds, 2)}
