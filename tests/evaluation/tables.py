"""Hand-made quality tables for the tests of the defaults chooser, the paper comparisons and the
model-card doc: the shapes the papers report, unless a test changes them."""

from __future__ import annotations

from contract.names import SAMPLERS
from evaluation.record import QualityRecord, Row


def row(sampler: str = "ddim", steps: int = 50, scale: float = 1.0, fd: float = 10.0, accuracy: float | None = 0.9,
        guidance: str = "cfg") -> dict:
    return {"sampler": sampler, "steps": steps, "guidance": guidance, "guidance_scale": scale, "eta": 0.0,
            "fd": fd, "accuracy": accuracy, "n": 100, "sampling_seconds": 1.0}


# FD lowest at s = 1.3, accuracy rising with the scale (the CFG paper's shape)
GUIDANCE = [row(scale=0.0, fd=30.0, accuracy=None), row(scale=1.0, fd=12.0, accuracy=0.80),
            row(scale=1.1, fd=10.0, accuracy=0.84), row(scale=1.3, fd=8.0, accuracy=0.88),
            row(scale=1.5, fd=8.5, accuracy=0.91), row(scale=2.0, fd=9.0, accuracy=0.94),
            row(scale=3.0, fd=11.0, accuracy=0.97), row(scale=4.0, fd=14.0, accuracy=0.98),
            row(scale=6.0, fd=20.0, accuracy=0.99)]

# at s = 1.3: DDIM far better than DDPM at few steps, DPM-Solver++ 20 within 10% of the best
_STEPS_FD = {"ddpm": {10: 40.0, 20: 25.0, 50: 14.0, 100: 10.0, 1000: 7.5},
             "ddim": {10: 12.0, 20: 9.0, 50: 8.0, 100: 7.8},
             "dpmpp_2m": {10: 9.5, 20: 8.1, 50: 7.9, 100: 7.8},
             "euler": {10: 12.5, 20: 9.2, 50: 8.1, 100: 7.9},
             "heun": {10: 8.4, 20: 7.9, 50: 7.8, 100: 7.7}}
STEPS = [row(sampler=s, steps=k, scale=1.3, fd=fd, accuracy=0.88) for s in SAMPLERS for k, fd in _STEPS_FD[s].items()]

CLASSIFIER = [row(guidance="classifier", scale=s, fd=fd, accuracy=a)
              for s, fd, a in ((0.0, 12.0, 0.80), (1.0, 11.0, 0.85), (2.0, 10.5, 0.90), (4.0, 12.0, 0.94),
                               (8.0, 18.0, 0.97))]

FLOOR = {"fd": 2.0, "n": 10_000, "what": "training images against the test set"}


def quality(**overrides) -> dict:
    """A card `quality` with every table; a key set to None is left out."""
    q = {"guidance_sweep": GUIDANCE, "steps_sweep": STEPS, "classifier_guidance": CLASSIFIER, "floor": FLOOR,
         "model": "fashion-mnist@1", "eval_classifier": "fmnist-eval-classifier@1", "per_class": 1000,
         "reference": "fashion-mnist test split (10000 images)", "seed": 0, "device": "NVIDIA H200",
         "torch": "2.11.0", "commit": "abc123", "measured_at": "2026-11-28T12:00:00Z",
         "sampling": "worker engine: bf16 autocast, channels_last, CUDA graphs (worker.accel)"}
    q.update(overrides)
    return {k: v for k, v in q.items() if v is not None}


def spread(sd: float, fds: tuple[float, ...] = (8.0, 8.5, 7.5)) -> dict:
    """A `quality.spread` whose FD standard deviation is `sd` (the repeats' own FDs are illustrative)."""
    return {"setting": {"sampler": "dpmpp_2m", "steps": 20, "guidance": "cfg", "guidance_scale": 3.0, "eta": 0.0},
            "n": 10_000, "repeats_asked": len(fds),
            "repeats": [{"seed": 10_000 * (i + 1), "fd": fd, "accuracy": 0.9, "sampling_seconds": 10.0}
                        for i, fd in enumerate(fds)],
            "fd": {"mean": sum(fds) / len(fds), "sd": sd, "min": min(fds), "max": max(fds)},
            "accuracy": {"mean": 0.9, "sd": 0.01, "min": 0.89, "max": 0.91},
            "floor": {"n": 10_000, "seeds": [1, 2, 3], "fds": [2.0, 2.1, 1.9],
                      "fd": {"mean": 2.0, "sd": 0.1, "min": 1.9, "max": 2.1}},
            "commit": "def456", "measured_at": "2026-11-29T12:00:00Z", "device": "NVIDIA H200", "torch": "2.11.0"}


def record(q: dict) -> QualityRecord:
    """The typed record the renderers and the chooser read."""
    return QualityRecord.parse(q)


def rows(dicts: list[dict] | None) -> tuple[Row, ...]:
    """Hand-made rows as the record reads them (a malformed one is left out)."""
    return QualityRecord.parse({"guidance_sweep": dicts}).guidance_sweep
