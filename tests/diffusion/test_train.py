"""Training smoke tests on a slice of the real Fashion-MNIST (installed by the test set-up)."""

import json

import pytest
import torch
from stores import fashion_mnist_or_skip

from diffusion.train import TrainConfig, train


@pytest.fixture(scope="module")
def fmnist_slice():
    return fashion_mnist_or_skip("train").subset(per_class=64, seed=0)


def losses(run_dir):
    return [json.loads(line)["loss"] for line in open(run_dir / "log.jsonl")]


def test_cpu_steps_lower_the_loss_and_resume(fmnist_slice, tmp_path):
    cfg = TrainConfig(preset="tiny", steps=120, batch_size=32, lr=1e-3, warmup_steps=20, device="cpu",
                      sample_every=0, checkpoint_every=60, log_every=20, run_dir=str(tmp_path))
    result = train(cfg, dataset=fmnist_slice)
    curve = losses(tmp_path)
    assert result.steps_done == 120 and len(curve) == 6
    # eps-MSE starts near 1 (a zero-output network) and falls well below it
    assert curve[0] > 0.5 and curve[-1] < 0.6 * curve[0], curve
    assert not any(p.requires_grad for p in result.model.parameters())

    # resuming picks up at the saved step and goes on to the new total
    resumed = train(TrainConfig(**{**cfg.to_dict(), "steps": 160}), dataset=fmnist_slice)
    assert resumed.steps_done == 160
    assert len(losses(tmp_path)) == 8
    # nothing left to do: the figures come from the log
    again = train(TrainConfig(**{**cfg.to_dict(), "steps": 160}), dataset=fmnist_slice)
    assert again.steps_done == 160 and again.final_loss == losses(tmp_path)[-1]


def test_a_resume_with_another_config_is_refused(fmnist_slice, tmp_path):
    cfg = TrainConfig(preset="tiny", steps=2, batch_size=8, device="cpu", sample_every=0, run_dir=str(tmp_path))
    train(cfg, dataset=fmnist_slice)
    with pytest.raises(ValueError, match="another config"):
        train(TrainConfig(**{**cfg.to_dict(), "lr": 1e-3}), dataset=fmnist_slice)


def test_the_guidance_classifier_learns_on_noised_images(fmnist_slice, tmp_path):
    cfg = TrainConfig(task="guidance-classifier", preset="tiny", steps=300, batch_size=64, lr=2e-3,
                      warmup_steps=10, device="cpu", log_every=100, run_dir=str(tmp_path))
    result = train(cfg, dataset=fmnist_slice)
    curve = losses(tmp_path)
    # cross-entropy starts at log(10) = 2.30 and must fall (half the timesteps are near pure noise,
    # so it cannot fall far)
    assert curve[0] > 1.9 and curve[-1] < curve[0] - 0.2, curve
    assert result.final_accuracy > 0.2
    with torch.no_grad():
        assert result.model(torch.zeros(1, 1, 28, 28), torch.tensor([0])).shape == (1, 10)


def test_sample_grids_are_written_every_n_steps(fmnist_slice, tmp_path):
    cfg = TrainConfig(preset="tiny", steps=4, batch_size=8, device="cpu", sample_every=2, sample_steps=2,
                      log_every=2, run_dir=str(tmp_path))
    train(cfg, dataset=fmnist_slice)
    assert sorted(p.name for p in tmp_path.glob("samples_*.png")) == ["samples_0000002.png", "samples_0000004.png"]


def test_init_from_and_init_state_go_together(fmnist_slice, tmp_path):
    cfg = TrainConfig(preset="tiny", steps=1, device="cpu", sample_every=0, run_dir=str(tmp_path), init_from="x@1")
    with pytest.raises(ValueError, match="give both or neither"):
        train(cfg, dataset=fmnist_slice)
    with pytest.raises(ValueError, match="give both or neither"):
        train(TrainConfig(**{**cfg.to_dict(), "init_from": ""}), dataset=fmnist_slice, init_state={})
    with pytest.raises(ValueError, match="do not fit preset 'tiny'"):
        train(cfg, dataset=fmnist_slice, init_state={"nope": torch.zeros(1)})
