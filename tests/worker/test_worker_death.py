"""A real worker process SIGKILLed mid-batch with 20 jobs in flight: a second, live worker process
finds them (its recovery pass, once the dead one has been silent for WORKER_HEARTBEAT_TTL), puts
them back on the queue and runs them; all 20 end `succeeded` with the images their seeds give. And
with two models under a budget, killed mid-load and mid-batch: no job of either is lost."""

from __future__ import annotations

import io
import signal
import time

import numpy as np
import pytest
from PIL import Image
from redis import Redis
from rq import Worker
from worker_process import png_pixels, queue_of, request, submit, wait_ended, wait_for, worker_process

from contract.jobs import RUNNING_KEY, JobStore
from contract.workers import worker_models_key
from diffusion.images import png_bytes
from worker.engine import BatchEngine

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

HEARTBEAT_TTL = "5"  # the smallest the settings allow: the dead worker is found within ~8 s

JOBS = 20

STEPS = 50


def expected_pixels(generators, reqs: list[dict]) -> list[np.ndarray]:
    """Each request's image from one in-process batch (an image depends only on its seed, whatever
    shares its batch: the batching tests check that), decoded from PNG as the worker's is."""
    engine = BatchEngine(generators)
    for i, q in enumerate(reqs):
        engine.add(str(i), q["model"], q)
    finished = {}
    while engine.jobs():
        finished.update(engine.step().finished)
    out = []
    for i in range(len(reqs)):
        with Image.open(io.BytesIO(png_bytes(finished[str(i)][0]))) as img:
            out.append(np.asarray(img).astype(np.int16))
    return out


def test_sigkill_mid_batch_every_job_runs_again_on_the_surviving_worker(redis_url, tiny_store_root, tmp_path,
                                                                         generators):
    r = Redis.from_url(redis_url)
    env = {"WORKER_HEARTBEAT_TTL": HEARTBEAT_TTL}
    reqs = [request(steps=STEPS, seed=500 + i, class_label=i % 10) for i in range(JOBS)]
    with worker_process(redis_url, tiny_store_root, tmp_path / "doomed.log", "--name", "doomed", **env) as doomed, \
            worker_process(redis_url, tiny_store_root, tmp_path / "survivor.log", "--name", "survivor",
                           **env) as survivor:
        for name, proc in (("doomed", doomed), ("survivor", survivor)):
            wait_for(lambda name=name: Worker.find_by_key(f"rq:worker:{name}", connection=r), 90, name, proc)
        # the survivor paused (its blocking dequeue lapses within IDLE_WAIT), so that the doomed worker
        # takes all 20 jobs into one batch
        survivor.send_signal(signal.SIGSTOP)
        time.sleep(2)
        ids = [submit(r, q) for q in reqs]
        wait_for(lambda: all((rec or {}).get("status") == "running" and (rec["progress"] or {}).get("step", 0) >= 1
                             for rec in JobStore(r).get_many(ids)), 60, "all 20 jobs to run", doomed)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)
        killed_at = time.monotonic()
        survivor.send_signal(signal.SIGCONT)
        records = JobStore(r).get_many(ids)
        assert all(rec["worker"] == "doomed" and rec["status"] == "running" for rec in records)
        steps_at_kill = [rec["progress"]["step"] for rec in records]
        assert max(steps_at_kill) < STEPS, "the batch ended before the kill: raise STEPS"

        wait_for(lambda: all(rec["worker"] != "doomed" for rec in JobStore(r).get_many(ids)), 60,
                 "the survivor to take the dead worker's jobs back", survivor)
        requeued_in = time.monotonic() - killed_at
        ended = wait_ended(r, ids, 180, survivor)
        recovered_in = time.monotonic() - killed_at
        # RQ's registries follow the records: the worker writes the records of one step's jobs at
        # once, then RQ's side job by job; let it finish before the survivor is killed below
        queue = queue_of(r)
        wait_for(lambda: len(queue.finished_job_registry.get_job_ids()) >= JOBS, 30, "RQ's finished registry",
                 survivor)
        log = (tmp_path / "survivor.log").read_text()
    assert [rec["status"] for rec in ended.values()] == ["succeeded"] * JOBS, log[-3000:]
    assert "recovered the jobs of dead workers doomed: 20 requeued" in log
    for job_id, want in zip(ids, expected_pixels(generators, reqs)):
        rec = ended[job_id]
        assert rec["worker"] == "survivor" and rec["attempts"] == "2" and rec["deaths"] == "1"
        assert np.abs(png_pixels(r, job_id, "0.png") - want).max() <= 1, job_id

    assert set(queue.finished_job_registry.get_job_ids()) == set(ids)
    assert queue.started_job_registry.get_job_ids() == [] and queue.failed_job_registry.get_job_ids() == []
    assert r.scard(RUNNING_KEY) == 0
    print(f"\n20 jobs of a SIGKILLed worker (killed at steps {min(steps_at_kill)}..{max(steps_at_kill)} of {STEPS}) "
          f"were requeued {requeued_in:.1f} s after the kill (WORKER_HEARTBEAT_TTL={HEARTBEAT_TTL}) and all "
          f"succeeded on the survivor {recovered_in:.1f} s after it")


def test_sigkill_mid_load_and_mid_batch_loses_no_job_of_either_model(redis_url, models_store_root, models_generators,
                                                                     tmp_path):
    """Two models under a budget: the worker is killed while alpha's job runs and big's model loads
    for the next. Alpha's job goes back to alpha's queue; big's, which waited in big's queue for its
    model, was never taken. A new worker runs both."""
    r = Redis.from_url(redis_url)
    env = {"WORKER_HEARTBEAT_TTL": HEARTBEAT_TTL, "WORKER_MODELS": "alpha@1,big@1", "WORKER_MODEL_BUDGET_MB": "64"}
    running_req = request(model="alpha@1", steps=300, seed=8)
    with worker_process(redis_url, models_store_root, tmp_path / "doomed.log", "--name", "doomed", **env) as doomed:
        running = submit(r, running_req)
        wait_for(lambda: (JobStore(r).get(running)["progress"] or {}).get("step", 0) >= 1, 90, "alpha's job", doomed)
        loading = submit(r, request(model="big@1", steps=2, seed=9))
        deadline = time.monotonic() + 60
        while r.hget(worker_models_key("doomed"), "loading") != b"big@1":  # a tight look: a load is short
            assert time.monotonic() < deadline and doomed.poll() is None, "big's load was not seen"
            time.sleep(0.002)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)
    assert JobStore(r).get(running)["status"] == "running" and JobStore(r).get(running)["worker"] == "doomed"
    assert JobStore(r).get(loading)["status"] == "queued" and queue_of(r, "big@1").job_ids == [loading]

    with worker_process(redis_url, models_store_root, tmp_path / "survivor.log", "--name", "survivor",
                        **env) as survivor:
        ended = wait_ended(r, [running, loading], 120, survivor)
        log = (tmp_path / "survivor.log").read_text()
    assert [ended[j]["status"] for j in (running, loading)] == ["succeeded"] * 2, log[-3000:]
    assert ended[running]["attempts"] == "2" and ended[running]["deaths"] == "1"
    assert ended[loading]["attempts"] == "1"  # it never ran on the dead worker
    assert np.abs(png_pixels(r, running, "0.png") - expected_pixels(models_generators, [running_req])[0]).max() <= 1
    assert r.scard(RUNNING_KEY) == 0
