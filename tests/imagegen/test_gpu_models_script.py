"""scripts/gpu_models.sh, the one script a GPU session runs on the device: its smoke mode does the whole
pipeline on the CPU at tiny sizes (preflight, train the generator, evaluate with a time budget, write the card,
render the doc, pack what comes back), and `unpack` puts the packed files where they belong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from stores import fashion_mnist_or_skip

from model_store import ModelStore
from model_store.loading import load_generator

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu_models.sh"
DEVICE_IMAGE = Path(__file__).parent / "device_image"  # its sitecustomize blocks what the device lacks

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SHIPPED = ModelStore(REPO / "model_store" / "models")
GEN = SHIPPED.resolve("fashion-mnist").version + 1
"""The generator version the pipeline exports: the next after the shipped one."""
GCLF = SHIPPED.resolve("fashion-mnist-guidance-classifier").version
"""The guidance classifier it links: the shipped one, kept (GCLF_MINUTES=0, the GPU run's default too)."""


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    fashion_mnist_or_skip("test")
    tmp = tmp_path_factory.mktemp("gpu")
    # nothing importable but what the GPU machine's image holds and the wheels the run carries there
    env = {**os.environ, "GPU_WORK": str(tmp / "work"), "OUT": str(tmp / "out"), "PYTHON": sys.executable,
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(DEVICE_IMAGE)}
    done = subprocess.run(["bash", str(SCRIPT), "smoke"], capture_output=True, text=True, env=env, timeout=540)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    return tmp


def test_what_comes_back_fits_the_device_limits(smoke):
    files = [p for p in (smoke / "out").rglob("*") if p.is_file()]
    names = sorted(p.name for p in files)
    assert names == ["docs.tar.gz", "gpu_models.log", f"model-fashion-mnist-{GEN}.tar", "preflight.json",
                     "results.json", "runs.tar.gz"]
    assert len(files) <= 8 and all(p.stat().st_size < 16 * 2**20 for p in files)
    assert all(p.parent == smoke / "out" for p in files)


def test_the_device_image_blocker_refuses_what_the_device_lacks():
    """The smoke above runs under it: a package the device lacks would fail it, as it would the GPU run."""
    env = {**os.environ, "PYTHONPATH": f"{DEVICE_IMAGE}:{REPO}"}
    code = "import worker.engine, evaluation.sampling, torch, pydantic, matplotlib\nimport fastapi"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1 and "No module named 'fastapi'" in done.stderr, done.stderr


def test_the_preflight_ran_first_and_the_evaluation_took_what_the_deadline_left(smoke):
    preflight = json.loads((smoke / "out" / "preflight.json").read_text())
    assert preflight["ok"] is True and preflight["device"] == "cpu"
    # on the CPU the CUDA checks are skipped, the rest ran
    assert all("skipped" in preflight[k] for k in ("graphs", "layout", "compile"))
    assert preflight["engine"]["ok"] and preflight["evaluation"]["ok"] and preflight["renderer"]["ok"]
    assert set(preflight["engine"]) >= {"ddim", "ddpm", "classifier"}
    assert preflight["compile"]["use"] is False  # never on the CPU: the generator trains with --no-compile
    log = (smoke / "out" / "gpu_models.log").read_text()
    assert log.index("preflight: scripts/gpu_preflight.py") < log.index("generator (tiny)")
    assert f"linked to fashion-mnist-guidance-classifier@{GCLF}, --no-compile" in log and "pipeline: deadline" in log
    assert "guidance classifier:" not in log  # kept, not trained
    # the fast path's tests ran in the pipeline (their CUDA ones skipped here) and passed
    assert "tests: tests/worker/test_worker_accel.py" in log and "GPU tests failed" not in log
    assert "skipped" in log and " passed" in log
    # the smoke's EVAL_MINUTES (0.75) is less than what the deadline leaves, so it is the bound
    assert "at most 0.75 min (the deadline leaves" in log


def test_unpacked_models_load_with_their_quality_card_and_doc(smoke, tmp_path):
    done = subprocess.run(["bash", str(SCRIPT), "unpack", str(smoke / "out")], capture_output=True, text=True,
                          env={**os.environ, "UNPACK_ROOT": str(tmp_path)}, timeout=60)
    assert done.returncode == 0, done.stderr
    store = ModelStore(tmp_path / "model_store" / "models")
    assert [c.ref for c in store.list()] == [f"fashion-mnist@{GEN}"]
    card = store.resolve("fashion-mnist")
    assert card.links == {"guidance_classifier": f"fashion-mnist-guidance-classifier@{GCLF}"}
    # exported from a copy without git: the stamped commit, not "unknown"
    assert card.training["commit"] not in ("", "unknown") and card.training["preset"] == "tiny"
    q = card.quality
    assert q["floor"]["n"] == 10_000 and q["per_class"] == 2 and q["device"] == "cpu"
    assert q["guidance_sweep"] and q["commit"] == card.training["commit"]
    # the budget (45 s) cannot hold every table on this CPU: what it left out is listed
    measured = sum(len(q.get(k, [])) for k in ("guidance_sweep", "steps_sweep", "classifier_guidance"))
    assert measured + len(q.get("not_measured", [])) == 9 + 21 + 5
    results = json.loads((tmp_path / "runs" / "gpu" / "results.json").read_text())
    assert results["guidance_sweep"] == q["guidance_sweep"]
    if "defaults_choice" in q:
        assert card.defaults == {k: q["defaults_choice"][k] for k in ("sampler", "steps", "guidance_scale", "guidance")}
    load_generator(store, card.ref, with_classifier=False)  # sha256 checked (its classifier is the repo store's)
    doc = (tmp_path / "docs" / "model-card.md").read_text()
    assert f"# Model card: `fashion-mnist@{GEN}`" in doc and "Measured on cpu" in doc
    for png in ("model-card-grid.png", "model-card-tradeoff.png"):
        assert f"](images/{png})" in doc and (tmp_path / "docs" / "images" / png).exists()
