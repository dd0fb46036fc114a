"""docker-compose.yml and .env.example, read as Docker Compose reads them (no Docker engine here):
the services, the GPU reservation, healthchecks, persistence, what is published, the profiles, and
that every variable is documented and every documented variable is used."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
import yaml
from deploy_support import (
    COMPOSE_FILE,
    REPO,
    InterpolationError,
    active_services,
    compose_variables,
    env_example,
    environment_of,
    interpolate,
    load_compose,
    readme_blocks,
    settings_variables,
)

from service.redis_local import LocalRedis

PASSWORD = "s3cret-for-tests"
COMPOSE_URL = f"redis://:{PASSWORD}@redis:6379/0"
"""REDIS_URL the API and the workers get: the `redis` service by its name on the compose network."""

WORKERS = ("worker", "worker-cpu")

DEPLOY_DOC = REPO / "docs" / "deploy.md"


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def healthy_redis(service: dict) -> bool:
    return service.get("depends_on", {}).get("redis", {}).get("condition") == "service_healthy"


def test_the_services(services):
    assert set(services) == {"redis", "api", *WORKERS}


def test_redis_has_a_password_persistence_and_no_published_port(compose, services):
    redis = services["redis"]
    assert redis["image"] == "redis:7-alpine"
    command = interpolate(redis["command"], {"REDIS_PASSWORD": PASSWORD})
    assert command[0] == "redis-server"
    assert command[command.index("--requirepass") + 1] == PASSWORD
    assert command[command.index("--appendonly") + 1] == "yes"
    # without a password compose refuses to start, rather than run an open Redis
    with pytest.raises(InterpolationError, match="REDIS_PASSWORD"):
        interpolate(redis["command"], {})
    with pytest.raises(InterpolationError, match="REDIS_PASSWORD"):
        interpolate(redis["command"], {"REDIS_PASSWORD": ""})
    # the append-only file lives on a named volume (survives `docker compose down` and a rebuild)
    volume, _, target = redis["volumes"][0].partition(":")
    assert target == "/data" and volume in compose["volumes"]
    assert "ports" not in redis and "network_mode" not in redis
    assert all("6379" not in str(port) for s in services.values() for port in s.get("ports", []))


def test_redis_healthcheck_needs_the_password(services, tmp_path):
    """The healthcheck command itself, run against a Redis with a password: PONG with the right
    password; a wrong one (an error reply, on which redis-cli still exits 0) must be unhealthy."""
    if not (shutil.which("redis-cli") and shutil.which("sh")):
        pytest.skip("needs redis-cli (apt-get install -y redis-tools)")
    check = interpolate(services["redis"]["healthcheck"], {"REDIS_PASSWORD": PASSWORD})
    kind, command = check["test"]
    assert kind == "CMD-SHELL" and "ping" in command
    with LocalRedis(tmp_path / "redis", password=PASSWORD) as server:
        # inside the container redis-cli reaches the default port; here the server is elsewhere
        here = command.replace("redis-cli", f"redis-cli -p {server.port}", 1)
        env = {"PATH": "/usr/bin:/bin:/usr/local/bin", **environment_of(interpolate(services["redis"],
                                                                                     {"REDIS_PASSWORD": PASSWORD}))}
        assert env["REDIS_PASSWORD"] == PASSWORD
        assert subprocess.run(["sh", "-c", here], env=env, timeout=10).returncode == 0
        wrong = subprocess.run(["sh", "-c", here], env={**env, "REDIS_PASSWORD": "wrong"}, timeout=10)
        assert wrong.returncode != 0


def test_api_on_8000_after_a_healthy_redis(services):
    api = services["api"]
    assert api["build"] == {"context": ".", "dockerfile": "docker/api.Dockerfile"}
    assert interpolate(api["ports"], {}) == ["8000:8000"]
    assert interpolate(api["ports"], {"API_PORT": "9000"}) == ["9000:8000"]
    assert healthy_redis(api)
    assert interpolate(environment_of(api), {"REDIS_PASSWORD": PASSWORD})["REDIS_URL"] == COMPOSE_URL
    test = api["healthcheck"]["test"]
    assert test[0] == "CMD" and any("/healthz" in word for word in test)


def test_workers_are_scalable_and_wait_for_redis(services):
    for name in WORKERS:
        worker = services[name]
        assert worker["build"] == {"context": ".", "dockerfile": "docker/worker.Dockerfile"}, name
        assert worker["image"] == "imagegen-worker", name
        assert healthy_redis(worker), name
        # a fixed name or a published port would stop `--scale worker=N` at the second replica
        assert "container_name" not in worker and "ports" not in worker, name
        env = interpolate(environment_of(worker), {"REDIS_PASSWORD": PASSWORD})
        assert env["REDIS_URL"] == COMPOSE_URL, name
        assert worker["env_file"] == ".env", name


def test_the_gpu_worker_reserves_one_nvidia_gpu(services):
    worker = services["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    # a GPU worker that falls back to the CPU would look healthy and be a hundred times slower
    assert environment_of(worker)["WORKER_DEVICE"] == "cuda"


def test_the_cpu_worker_reserves_no_gpu(services):
    worker = services["worker-cpu"]
    assert "deploy" not in worker
    assert environment_of(worker)["WORKER_DEVICE"] == "cpu"


def test_profiles(compose):
    """`--profile gpu` on a GPU host, `--profile cpu` on a host without one; no profile: Redis and the
    API only. A service without a profile always starts, so the GPU worker must have one, or
    `--profile cpu` would try to start it on a host without the NVIDIA runtime and fail."""
    assert active_services(compose, {"gpu"}) == {"redis", "api", "worker"}
    assert active_services(compose, {"cpu"}) == {"redis", "api", "worker-cpu"}
    assert active_services(compose, set()) == {"redis", "api"}
    for name, service in compose["services"].items():
        if "deploy" in service:
            assert "cpu" not in service.get("profiles", []), name


def test_workers_get_time_to_hand_jobs_back(services):
    """Docker kills a container 10 s after SIGTERM unless told otherwise; a worker needs its
    WORKER_SHUTDOWN_GRACE (and a little more) to finish or requeue its jobs."""
    grace = settings_variables()["WORKER_SHUTDOWN_GRACE"].default
    for name in WORKERS:
        period = services[name]["stop_grace_period"]
        assert period.endswith("s") and float(period[:-1]) > grace, name


def test_every_setting_comes_from_the_env_file(services):
    for name in ("api", *WORKERS):
        assert services[name]["env_file"] == ".env", name
    # compose's own `environment:` beats the env file: only what compose must decide is set there
    for name in ("api", *WORKERS):
        assert set(environment_of(services[name])) <= {"REDIS_URL", "WORKER_DEVICE"}, name


def test_every_compose_variable_is_documented():
    used = compose_variables(COMPOSE_FILE.read_text())
    assert used, "the compose file reads no variable?"
    documented = set(env_example())
    assert used <= documented, f"used in docker-compose.yml, missing from .env.example: {used - documented}"


def test_every_documented_variable_is_used_and_every_setting_documented():
    documented = set(env_example())
    read = set(settings_variables())
    used = compose_variables(COMPOSE_FILE.read_text())
    assert documented <= used | read, f"stale in .env.example: {documented - used - read}"
    assert read <= documented, f"settings missing from .env.example: {read - documented}"


def test_env_example_values_are_valid_settings():
    """Every value shown (commented or not) is one the settings accept; the only line set in the
    file is the password compose needs, left empty for the user to fill (an empty setting would
    be passed on as a value)."""
    from pydantic import ValidationError

    from contract.settings import Settings
    from worker.settings import WorkerSettings

    entries = env_example()
    assert [e.name for e in entries.values() if not e.commented] == ["REDIS_PASSWORD"]
    assert entries["REDIS_PASSWORD"].value == ""
    fields = settings_variables()
    for entry in entries.values():
        if entry.name not in fields:
            continue
        cls = Settings if entry.name.lower() in Settings.model_fields else WorkerSettings
        try:
            cls.model_validate({entry.name.lower(): entry.value})
        except ValidationError as e:
            pytest.fail(f".env.example: {entry.name}={entry.value} is not a valid value: {e}")


def test_env_file_is_kept_out_of_the_images():
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert ".env" in ignored


def test_api_port_can_publish_on_the_loopback_only(services):
    """.env.example and docs/deploy.md offer API_PORT=127.0.0.1:8000 for a proxy on the same host."""
    assert interpolate(services["api"]["ports"], {"API_PORT": "127.0.0.1:8000"}) == ["127.0.0.1:8000:8000"]


# --- the override files docs/deploy.md gives -------------------------------------------------------


def _deploy_doc_block(language: str, contains: str) -> str:
    found = [b.text for b in readme_blocks(DEPLOY_DOC.read_text()) if b.language == language and contains in b.text]
    assert len(found) == 1, f"docs/deploy.md: want one {language} block with {contains!r}, found {len(found)}"
    return found[0]


def test_deploy_doc_overrides_fit_the_compose_file(services):
    mount = yaml.safe_load(_deploy_doc_block("yaml", "/models:ro"))["services"]
    # the API reads the cards, the workers the weights: all of them must see the one store
    assert set(mount) == {"api", *WORKERS}
    assert {tuple(s["volumes"]) for s in mount.values()} == {("/srv/imagegen/models:/models:ro",)}
    assert "MODEL_STORE" in env_example()

    pinned = yaml.safe_load(_deploy_doc_block("yaml", "device_ids"))["services"]
    for name, service in pinned.items():
        base = services["worker"]
        same = ("image", "profiles", "env_file", "environment", "depends_on", "stop_grace_period", "restart")
        assert {k: service.get(k) for k in same} == {k: base.get(k) for k in same}, name
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and "count" not in device
        assert device["device_ids"] == [name.removeprefix("worker-gpu")], name

    tls = yaml.safe_load(_deploy_doc_block("yaml", "--tls-port"))["services"]["redis"]
    base = services["redis"]["command"]
    # the TLS port comes on top of the password and the append-only file, not instead of them
    assert tls["command"][:len(base)] == base
    assert tls["ports"] == ["6380:6380"]


def test_deploy_doc_tls_recipe_serves_rediss(tmp_path):
    """The certificate commands and the Redis TLS flags of docs/deploy.md, run here (with the host
    name `localhost`), and a client connecting with the URL shape the docs give the workers."""
    if not (shutil.which("openssl") and shutil.which("bash")):
        pytest.skip("needs openssl and bash")
    from redis import Redis

    from service.redis_local import find_redis_server, free_port

    script = _deploy_doc_block("bash", "openssl req -x509").replace("redis-host", "localhost")
    made = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert made.returncode == 0, made.stderr
    command = interpolate(yaml.safe_load(_deploy_doc_block("yaml", "--tls-port"))["services"]["redis"]["command"],
                          {"REDIS_PASSWORD": PASSWORD})
    plain, tls = free_port(), free_port()
    args = [a.replace("/tls/", f"{tmp_path}/tls/") for a in command[1:]]
    args[args.index("--tls-port") + 1] = str(tls)
    server = subprocess.Popen([find_redis_server(), *args, "--port", str(plain), "--bind", "127.0.0.1",
                               "--dir", str(tmp_path), "--save", ""],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"rediss://:{PASSWORD}@localhost:{tls}/0?ssl_ca_certs={tmp_path}/tls/ca.crt"
        deadline = time.monotonic() + 15
        while True:
            try:
                assert Redis.from_url(url, socket_timeout=5).ping()
                break
            except Exception:
                if server.poll() is not None:
                    out = server.stdout.read()
                    if "tls" in out.lower() and "not" in out.lower() and "support" in out.lower():
                        pytest.skip(f"this redis-server has no TLS: {out[-300:]}")
                    pytest.fail(f"redis-server with the docs' TLS flags exited:\n{out[-2000:]}")
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        # without the password the TLS port is closed to a client all the same
        with pytest.raises(Exception, match="(?i)auth"):
            Redis.from_url(url.replace(f":{PASSWORD}@", ""), socket_timeout=5).set("k", "v")
    finally:
        server.terminate()
        server.wait(timeout=10)
