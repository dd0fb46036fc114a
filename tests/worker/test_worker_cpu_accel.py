"""worker.cpu_accel: the worker's CPU fast path (the eps-model exported to ONNX, run by ONNX Runtime).
It is what a worker uses on the CPU by default; its samples match the fp32 eager engine within the
benchmark's tolerance (1e-3 at DDIM 50, on the shipped model); per-image seeds and mixed batches
hold on it; the export is cached and reused; and whatever fails leaves the model eager with one log
line. No timing here: speed is measured by bench.engine (docs/benchmarks/engine-cpu.md)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from model_store import ModelStore
from model_store.loading import load_generator
from worker.accel import AccelConfig, accel_from_settings
from worker.cpu_accel import CpuAccelConfig, OrtModel, export_key, onnx_model
from worker.engine import BatchEngine
from worker.settings import WorkerSettings

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "model_store" / "models"


def request(**overrides) -> dict:
    req = {"class_label": 2, "num_images": 3, "guidance": "cfg", "guidance_scale": 3.0, "sampler": "ddim",
           "steps": 5, "eta": 0.0, "seed": 7}
    return {**req, **overrides}


def run(engine: BatchEngine, model: str, jobs: dict[str, dict]) -> dict[str, torch.Tensor]:
    for job_id, req in jobs.items():
        engine.add(job_id, model, req)
    finished: dict[str, torch.Tensor] = {}
    while engine.jobs():
        report = engine.step()
        assert not report.failed, report.failed
        finished.update(report.finished)
    return finished


@pytest.fixture
def fast(tmp_path) -> AccelConfig:
    return AccelConfig(cpu=CpuAccelConfig(cache_dir=tmp_path / "onnx"))


def test_the_worker_runs_onnx_runtime_on_the_cpu_by_default(generators, monkeypatch, tmp_path):
    for name in ("WORKER_ACCEL", "WORKER_CPU_BACKEND", "WORKER_CPU_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORKER_CACHE_DIR", str(tmp_path / "cache"))
    accel = accel_from_settings(WorkerSettings())  # what `python -m worker` builds its engine with
    assert accel is not None and accel.cpu.backend == "onnxruntime" and accel.cpu.cache_dir == tmp_path / "cache"
    engine = BatchEngine(generators, 8, accel=accel)
    assert all(isinstance(m, OrtModel) for m in engine.networks())
    # fashion-mnist and plain: the same weights and architecture, so the same graph, exported once
    assert len(list((tmp_path / "cache").glob("*.onnx"))) == 1

    monkeypatch.setenv("WORKER_CPU_BACKEND", "eager")
    engine = BatchEngine(generators, 8, accel=accel_from_settings(WorkerSettings()))
    assert not any(isinstance(m, OrtModel) for m in engine.networks())
    monkeypatch.setenv("WORKER_ACCEL", "false")
    assert accel_from_settings(WorkerSettings()) is None


def test_the_shipped_model_samples_within_the_benchmark_tolerance_of_the_eager_engine(fast):
    """The claim of the fast path, on the model it is for: DDIM 50 with CFG, max abs difference < 1e-3."""
    store = ModelStore(SHIPPED)
    gen = load_generator(store, "fashion-mnist", with_classifier=False)
    req = request(class_label=7, num_images=4, steps=50, seed=4242)
    eager = run(BatchEngine({"fashion-mnist": gen}, 8), "fashion-mnist", {"j": req})["j"]
    engine = BatchEngine({"fashion-mnist": gen}, 8, accel=fast)
    assert isinstance(engine.networks()[0], OrtModel)
    got = run(engine, "fashion-mnist", {"j": req})["j"]
    assert (got - eager).abs().max().item() < 1e-3
    assert not torch.equal(got[0], got[1])  # four images, not one four times


def test_per_image_seeds_hold_on_the_fast_path(generators, fast):
    engine = BatchEngine(generators, 16, accel=fast)
    batch = run(engine, "fashion-mnist", {"batch": request(num_images=3, seed=10)})["batch"]
    for i in range(3):
        alone = run(engine, "fashion-mnist", {"one": request(num_images=1, seed=10 + i)})["one"]
        torch.testing.assert_close(batch[i], alone[0], rtol=1e-5, atol=1e-5)


def test_a_mixed_batch_on_the_fast_path_gives_each_job_what_it_gets_alone(generators, fast):
    jobs = {
        "ddim": request(sampler="ddim", steps=4, guidance_scale=3.0, seed=1),
        "ddpm": request(sampler="ddpm", steps=6, guidance_scale=1.0, seed=2, class_label=None),
        "dpm": request(sampler="dpmpp_2m", steps=5, guidance_scale=0.0, seed=3),
        "heun": request(sampler="heun", steps=3, guidance_scale=2.0, seed=4, num_images=2),
        "clf": request(sampler="euler", steps=4, guidance="classifier", guidance_scale=1.5, seed=5),
    }
    engine = BatchEngine(generators, 32, accel=fast)
    together = run(engine, "fashion-mnist", jobs)
    eager = BatchEngine(generators, 32)
    for name, req in jobs.items():
        alone = run(engine, "fashion-mnist", {name: req})[name]
        torch.testing.assert_close(together[name], alone, rtol=1e-5, atol=1e-5, msg=name)
        want = run(eager, "fashion-mnist", {name: req})[name]
        torch.testing.assert_close(together[name], want, rtol=1e-4, atol=1e-4, msg=name)


def test_the_export_is_cached_by_what_it_depends_on_and_reused(generators, tmp_path):
    gen = generators["fashion-mnist"]
    config = CpuAccelConfig(cache_dir=tmp_path)
    first = onnx_model(gen.model, gen.card, gen.sample_shape, gen.null_class, config)
    [path] = tmp_path.glob("*.onnx")
    assert first.source == str(path) and path.stem == export_key(gen.card)
    stamp = path.stat().st_mtime_ns
    second = onnx_model(gen.model, gen.card, gen.sample_shape, gen.null_class, config)
    assert second.source == str(path) and path.stat().st_mtime_ns == stamp  # read, not written again
    assert not list(tmp_path.glob("*.tmp"))
    other = SimpleNamespace(**{**vars(gen.card), "sha256": "0" * 64})
    assert export_key(other) != export_key(gen.card)


def test_an_unwritable_cache_exports_in_memory(generators, tmp_path):
    gen = generators["fashion-mnist"]
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    model = onnx_model(gen.model, gen.card, gen.sample_shape, gen.null_class, CpuAccelConfig(cache_dir=blocker))
    assert isinstance(model, OrtModel) and model.source == "memory"


def card(ref: str) -> SimpleNamespace:
    return SimpleNamespace(ref=ref, sha256=ref, architecture={}, schedule={}, prediction_type="epsilon")


class Untraceable(nn.Module):
    """An eps-model with an operator ONNX's exporter does not know."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x, t, y):
        return x * torch.special.bessel_j0(self.w)


class Stateful(nn.Module):
    """An eps-model whose trace cannot be right: its output depends on how often it was called, which a
    traced graph freezes."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.calls = 0

    def forward(self, x, t, y):
        self.calls += 1
        return x * self.w * self.calls


@pytest.mark.parametrize("module, why", [(Untraceable, "bessel_j0"), (Stateful, "differs from the eager one")])
def test_what_cannot_run_on_onnx_runtime_stays_eager_with_one_log_line(module, why, tmp_path, caplog):
    net = module()
    with caplog.at_level(logging.INFO, logger="worker.cpu_accel"):
        got = onnx_model(net, card(f"test-{module.__name__}@1"), (1, 4, 4), 2, CpuAccelConfig(cache_dir=tmp_path))
    assert got is net
    lines = [r for r in caplog.records if r.name == "worker.cpu_accel"]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert f"test-{module.__name__}@1" in lines[0].getMessage() and why in lines[0].getMessage()
    assert "running the model eagerly" in lines[0].getMessage()


def test_a_corrupt_cached_export_stays_eager_with_one_log_line(generators, tmp_path, caplog):
    gen = generators["plain"]
    (tmp_path / f"{export_key(gen.card)}.onnx").write_bytes(b"not an onnx graph")
    with caplog.at_level(logging.INFO, logger="worker.cpu_accel"):
        got = onnx_model(gen.model, gen.card, gen.sample_shape, gen.null_class, CpuAccelConfig(cache_dir=tmp_path))
    assert got is gen.model
    assert [r.levelno for r in caplog.records if r.name == "worker.cpu_accel"] == [logging.WARNING]


def test_the_eager_backend_and_accel_off_leave_the_model_as_it_is(generators, tmp_path):
    gen = generators["fashion-mnist"]
    eager = CpuAccelConfig(backend="eager", cache_dir=tmp_path)
    assert onnx_model(gen.model, gen.card, gen.sample_shape, gen.null_class, eager) is gen.model
    assert BatchEngine(generators, 8).networks()[0] is generators["fashion-mnist"].model
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="CPU backend"):
        CpuAccelConfig(backend="tensorrt")
