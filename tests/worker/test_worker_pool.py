"""The models of one worker within a memory budget (worker.pool), in-process with no Redis: sizes known
before a load, loads off the stepping loop, least-recently-used eviction that never touches a model
with images in flight, and the refusal of a model larger than the whole budget."""

from __future__ import annotations

import shutil

import pytest
import torch

from model_store import ModelStore
from model_store.loading import load_generator
from worker.engine import BatchEngine
from worker.models import estimated_bytes, generator_bytes
from worker.pool import RESERVE_FRACTION, ModelPool, Readiness, size_with_reserve

REQUEST = {"class_label": 3, "num_images": 1, "guidance": "cfg", "guidance_scale": 2.0, "sampler": "ddim",
           "steps": 4, "eta": 0.0, "seed": 11}


def tiny_size(root) -> int:
    return size_with_reserve(estimated_bytes(ModelStore(root), "alpha@1"))


def make_pool(root, models: float | None) -> ModelPool:
    """A pool on an empty engine whose budget holds `models` tiny models (None: no budget)."""
    budget = None if models is None else int(models * tiny_size(root))
    return ModelPool(BatchEngine({}, max_batch_images=8), ModelStore(root), "cpu", budget)


def load(pool: ModelPool, ref: str) -> None:
    """Ask for `ref` and wait for it to serve (as the worker's loop does, between steps)."""
    assert pool.prepare(ref) in (Readiness.LOADING, Readiness.READY)
    while pool.loading() is not None:
        pool.wait(0.05)
        pool.poll()
    assert ref in pool.engine.models()


def finish(engine: BatchEngine) -> dict:
    done = {}
    while engine.jobs():
        done.update(engine.step().finished)
    return done


def test_a_size_is_known_before_the_load_and_is_what_the_loaded_model_takes(models_store_root, tiny_store_root):
    cases = ((models_store_root, "alpha@1"), (models_store_root, "big@1"), (tiny_store_root, "fashion-mnist@1"))
    for root, ref in cases:
        store = ModelStore(root)
        loaded = load_generator(store, ref)
        # fashion-mnist@1 links a guidance classifier: counted with it
        assert estimated_bytes(store, ref) == generator_bytes(loaded) > 0, ref
    weights = estimated_bytes(ModelStore(models_store_root), "alpha@1")
    assert tiny_size(models_store_root) == weights + int(weights * RESERVE_FRACTION)


def test_a_load_runs_off_the_loop_while_the_running_batch_keeps_stepping(models_store_root, models_generators):
    pool = make_pool(models_store_root, None)
    load(pool, "alpha@1")
    engine = pool.engine
    engine.add("long", "alpha@1", {**REQUEST, "steps": 200})
    assert pool.prepare("beta@1") == Readiness.LOADING and pool.loading() == "beta@1"
    steps = 0
    while pool.loading() is not None:
        pool.poll()  # between two steps, as the loop does
        if pool.loading() is not None:
            assert "beta@1" not in engine.models()  # serving only once installed by the loop
            engine.step()
            steps += 1
    assert steps >= 1 and engine.progress("long")[0] == steps  # alpha's batch stepped through the load
    assert [e.kind for e in pool.events] == ["loading", "loaded", "loading", "loaded"]
    engine.add("b", "beta@1", REQUEST)
    done = finish(engine)
    alone = BatchEngine(models_generators)
    alone.add("b", "beta@1", REQUEST)
    assert torch.equal(done["b"], finish(alone)["b"])  # the loaded model is the stored one


def test_the_least_recently_used_idle_model_goes_and_one_with_images_in_flight_never(models_store_root):
    pool = make_pool(models_store_root, 2.5)  # room for two
    load(pool, "alpha@1")
    load(pool, "beta@1")
    pool.engine.add("busy", "alpha@1", {**REQUEST, "steps": 50})  # alpha: least recently used, but busy
    pool.events.clear()
    load(pool, "gamma@1")
    assert [(e.kind, e.ref) for e in pool.events] == [("evicted", "beta@1"), ("loading", "gamma@1"),
                                                      ("loaded", "gamma@1")]
    assert sorted(pool.engine.models()) == ["alpha@1", "gamma@1"]
    # both busy: no room for beta, and nothing is evicted while they run
    pool.engine.add("busy too", "gamma@1", {**REQUEST, "steps": 50})
    assert pool.prepare("beta@1") == Readiness.NO_ROOM
    assert sorted(pool.engine.models()) == ["alpha@1", "gamma@1"]
    finish(pool.engine)
    pool.prepare("gamma@1")  # used last: alpha is now the least recently used
    pool.events.clear()
    load(pool, "beta@1")
    assert pool.events[0].kind == "evicted" and pool.events[0].ref == "alpha@1"
    assert sum(pool.loaded_bytes().values()) <= pool.budget_bytes


def test_a_model_larger_than_the_whole_budget_is_refused_naming_its_size_and_the_budget(models_store_root):
    pool = make_pool(models_store_root, 1.5)
    load(pool, "alpha@1")
    assert pool.prepare("big@1") == Readiness.REFUSED
    error = pool.refusal("big@1")
    big = pool.size("big@1") / 2**20
    assert error.code == "model_too_large"
    assert "big@1" in error.message and f"{big:.1f} MiB" in error.message
    assert f"{pool.budget_bytes / 2**20:.1f} MiB (WORKER_MODEL_BUDGET_MB)" in error.message
    assert pool.engine.models() == ["alpha@1"] and pool.refusal("alpha@1") is None  # nothing evicted for it


def test_a_model_whose_load_fails_is_refused_with_why(models_store_root, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(models_store_root / "alpha", root / "alpha")
    weights = root / "alpha" / "1" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # the sha256 no longer matches
    pool = ModelPool(BatchEngine({}), ModelStore(root), "cpu", 10 * 2**20)
    assert pool.prepare("alpha@1") == Readiness.LOADING
    while pool.loading() is not None:
        pool.wait(0.05)
        pool.poll()
    assert pool.engine.models() == [] and pool.prepare("alpha@1") == Readiness.REFUSED
    error = pool.refusal("alpha@1")
    assert error.code == "model_error" and error.message.startswith("loading alpha@1 failed")
    assert "sha256" in error.message
    assert [e.kind for e in pool.events] == ["loading", "load_failed"]


def test_the_engine_adds_and_removes_models_between_steps(models_generators):
    engine = BatchEngine({})
    engine.add_model(models_generators["alpha@1"])
    engine.add("a", "alpha", REQUEST)  # a bare name: the newest version loaded
    assert engine.images_by_model() == {"alpha@1": 1}
    with pytest.raises(ValueError, match="in flight"):
        engine.remove_model("alpha@1")
    finish(engine)
    assert engine.remove_model("alpha@1") is models_generators["alpha@1"] and engine.models() == []
    with pytest.raises(ValueError, match="not loaded"):
        engine.add("b", "alpha@1", REQUEST)
