"""The environment deploy/k8s gives the API and the workers, checked as test_compose.py checks
docker-compose.yml's: every variable it sets is documented in .env.example and read by the code (or
used by the manifests themselves), every setting can be set, every value shown is valid. Then what
must agree with those settings: the termination graces, KEDA's cooldown, the address KEDA reads the
queue at; the images and the port are the ones the Dockerfiles make; and no secret is committed."""

from __future__ import annotations

import re
import subprocess
from urllib.parse import urlsplit

import pytest
import yaml
from deploy_support import (
    API_DOCKERFILE,
    REPO,
    WORKER_DOCKERFILE,
    env_example,
    last,
    load_compose,
    parse_dockerfile,
    settings_variables,
)
from k8s_support import (
    API,
    CONFIG_ENV,
    K8S,
    OVERLAYS,
    PASSWORD,
    REDIS,
    SECRETS_EXAMPLE,
    WORKER,
    Rendered,
    container,
    env_lines,
    env_values,
    pod_spec,
    referenced_variables,
    render_overlay,
    shell_variables,
)

DECIDED_BY_THE_MANIFESTS = {"REDIS_PASSWORD", "REDIS_URL", "WORKER_DEVICE"}
"""What a pod's own `env:` may set (it beats the ConfigMap and the Secret): the Redis URL built from
the password, and the device of each overlay. Everything else comes from config.env and secrets.env."""

_SHOWN = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$")


@pytest.fixture(scope="module")
def renders(tmp_path_factory) -> dict[str, Rendered]:
    return {name: render_overlay(tmp_path_factory.mktemp(name), name) for name in OVERLAYS}


def _config(rendered: Rendered) -> dict[str, str]:
    return rendered.generated("ConfigMap", "imagegen-config")["data"]


def _secrets_shown() -> dict[str, str]:
    """Every variable secrets.env.example shows, set or commented out."""
    return {m[1]: m[2] for line in SECRETS_EXAMPLE.read_text().splitlines() if (m := _SHOWN.match(line.strip()))}


def _setting(rendered: Rendered, name: str) -> float:
    """A numeric setting as the pods get it: the ConfigMap's value, else the code's default."""
    return float(_config(rendered).get(name, settings_variables()[name].default))


# --- the variables ------------------------------------------------------------------------------


def test_every_variable_the_manifests_set_is_documented_and_read(renders):
    documented, read = set(env_example()), set(settings_variables())
    for name, rendered in renders.items():
        auth = rendered.one("TriggerAuthentication", "imagegen-redis")
        auth_keys = {ref["key"] for ref in auth["spec"]["secretTargetRef"]}
        for workload in (API, WORKER):
            c = container(rendered.one("Deployment", workload))
            env = env_values(c)
            names = set(_config(rendered)) | set(_secrets_shown()) | set(env)
            assert names <= documented, f"{name} {workload}: not in .env.example: {sorted(names - documented)}"
            # a variable no setting reads must serve the manifests themselves: REDIS_PASSWORD goes into
            # REDIS_URL (and into KEDA's TriggerAuthentication), nothing else may be unread
            used = set().union(*(referenced_variables(v) for v in env.values() if v)) | auth_keys
            unread = names - read
            assert unread <= used, f"{name} {workload}: set but read by nothing: {sorted(unread - used)}"
        redis = rendered.get("StatefulSet", REDIS)
        if redis:
            c = container(redis)
            assert set(env_values(c)) <= documented
            assert set(env_values(c)) <= shell_variables(" ".join(c["command"])), "Redis's env is for its command"


def test_every_setting_can_be_set_and_both_pods_share_them(renders):
    """Like compose's env_file: the ConfigMap and the Secret reach both pods whole, so a line added to
    config.env or secrets.env sets any setting; the pods' own `env:` decides only what the manifests
    must. The API and the workers read the same ConfigMap and Secret, so the settings they share
    (QUEUE_NAME, RESULT_TTL, JOB_TIMEOUT...) cannot disagree."""
    for name, rendered in renders.items():
        sources = {}
        for workload in (API, WORKER):
            c = container(rendered.one("Deployment", workload))
            sources[workload] = c["envFrom"]
            assert [next(iter(s)) for s in c["envFrom"]] == ["configMapRef", "secretRef"], (name, workload)
            assert set(env_values(c)) <= DECIDED_BY_THE_MANIFESTS, (name, workload)
            # RQ names a worker hostname.pid, and a pod's hostname is its own: one name per replica
            assert "WORKER_NAME" not in set(env_values(c)) | set(_config(rendered)), (name, workload)
        assert sources[API] == sources[WORKER], name
        # what the manifests depend on is spelled out rather than left to a default they repeat
        assert {"QUEUE_NAME", "WORKER_SHUTDOWN_GRACE", "JOB_TIMEOUT"} <= set(_config(rendered)), name


def test_config_env_values_are_valid_settings(renders):
    from pydantic import ValidationError

    from contract.settings import Settings
    from worker.settings import WorkerSettings

    config = env_lines(CONFIG_ENV.read_text())
    fields = settings_variables()
    assert config and set(config) <= set(fields), f"not a setting: {sorted(set(config) - set(fields))}"
    for variable, value in config.items():
        # an empty line would be passed on as a value (.env.example says the same)
        assert value != "", f"config.env: {variable} is empty"
        cls = Settings if variable.lower() in Settings.model_fields else WorkerSettings
        try:
            cls.model_validate({variable.lower(): value})
        except ValidationError as e:
            pytest.fail(f"config.env: {variable}={value} is not a valid value: {e}")
    # kustomize reads the file as this test does
    for name, rendered in renders.items():
        assert _config(rendered) == config, name


def test_secrets_example_is_a_template_only():
    """One line set, the password, and empty: the user fills it (docs/kubernetes.md); every other
    variable is shown commented out, and all of them are documented settings."""
    lines = [line for line in SECRETS_EXAMPLE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert lines == ["REDIS_PASSWORD="]
    assert set(_secrets_shown()) == {"REDIS_PASSWORD", "API_KEYS", "WEBHOOK_SECRET", "REDIS_URL"}
    assert set(_secrets_shown()) <= set(env_example())
    assert "openssl rand -hex 32" in SECRETS_EXAMPLE.read_text()


# --- what must agree with the settings ---------------------------------------------------------------


def test_workers_get_time_to_hand_jobs_back(renders):
    """SIGTERM, then WORKER_SHUTDOWN_GRACE for the running jobs, the hand-back of the rest, and up to
    WEBHOOK_DRAIN for webhook deliveries: Kubernetes must not kill the pod before that."""
    from worker.main import WEBHOOK_DRAIN

    for name, rendered in renders.items():
        grace = _setting(rendered, "WORKER_SHUTDOWN_GRACE")
        period = pod_spec(rendered.one("Deployment", WORKER))["terminationGracePeriodSeconds"]
        assert grace < period, f"{name}: WORKER_SHUTDOWN_GRACE {grace:g} s, pod grace {period} s"
        assert grace + WEBHOOK_DRAIN < period, f"{name}: no time left for the webhook drain"


def test_the_api_gets_time_to_finish_its_requests(renders):
    """The preStop pause (endpoints forget the pod first), then uvicorn's bound on open requests."""
    from service.__main__ import GRACEFUL_SHUTDOWN_S

    for name, rendered in renders.items():
        spec = pod_spec(rendered.one("Deployment", API))
        pause = container(rendered.one("Deployment", API))["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pause + GRACEFUL_SHUTDOWN_S < spec["terminationGracePeriodSeconds"], name


def test_keda_scales_to_zero_only_after_a_job_timeout(renders):
    for name, rendered in renders.items():
        so = rendered.one("ScaledObject", WORKER)["spec"]
        assert so["cooldownPeriod"] > _setting(rendered, "JOB_TIMEOUT"), name
        # a scale-down within a batch would hand its jobs back; hold replicas longer than a job may run
        behavior = so["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
        assert behavior["stabilizationWindowSeconds"] >= _setting(rendered, "JOB_TIMEOUT"), name


def test_keda_watches_the_queue_of_every_model_the_workers_serve(renders):
    """One trigger per generator of the store baked into the images (the workers serve every one,
    WORKER_MODELS being unset), each on RQ's list of that model's queue as contract.queues names it:
    a model added to the store without its trigger would never wake a worker."""
    from rq import Queue

    from contract.queues import store_queues
    from model_store import ModelStore

    baked = ModelStore(REPO / "model_store" / "models")
    for name, rendered in renders.items():
        assert "WORKER_MODELS" not in _config(rendered), name
        lists = [t["metadata"]["listName"] for t in rendered.one("ScaledObject", WORKER)["spec"]["triggers"]]
        # RQ's list of a queue: Queue.key, its namespace prefix and the queue's name
        wanted = [Queue.redis_queue_namespace_prefix + q for q in store_queues(_config(rendered)["QUEUE_NAME"],
                                                                               baked).values()]
        assert sorted(lists) == sorted(wanted) and len(lists) == len(set(lists)), name


def test_keda_reads_the_redis_the_pods_use(renders):
    from redis import Redis

    from contract.settings import Settings

    for name, rendered in renders.items():
        for trigger in rendered.one("ScaledObject", WORKER)["spec"]["triggers"]:
            _keda_reads(name, rendered, trigger["metadata"])
        # the URL is one the settings and the client take, with the password where Redis wants it
        url = env_values(container(rendered.one("Deployment", WORKER))).get("REDIS_URL")
        if url is not None:
            expanded = url.replace("$(REDIS_PASSWORD)", PASSWORD)
            assert Settings(redis_url=expanded).redis_url == expanded
            assert Redis.from_url(expanded).connection_pool.connection_kwargs["password"] == PASSWORD


def _keda_reads(name: str, rendered, metadata: dict) -> None:
    """One trigger reads the Redis the pods use (in the cluster), or the managed one over TLS."""
    urls = {env_values(container(rendered.one("Deployment", w))).get("REDIS_URL") for w in (API, WORKER)}
    if not rendered.get("Service", REDIS):
        # the managed Redis: REDIS_URL comes from the Secret, a rediss:// URL; KEDA speaks TLS too
        assert urls == {None} and metadata["enableTLS"] == "true", name
        return
    (url,) = urls
    parts = urlsplit(url.replace("$(REDIS_PASSWORD)", PASSWORD))
    service = rendered.one("Service", REDIS)
    (port,) = service["spec"]["ports"]
    assert (parts.scheme, parts.hostname, parts.port) == ("redis", service["metadata"]["name"], port["port"])
    assert metadata["address"] == (f"{service['metadata']['name']}.{service['metadata']['namespace']}"
                                   f".svc.cluster.local:{port['port']}"), name
    assert metadata["databaseIndex"] == parts.path.lstrip("/") and metadata["enableTLS"] == "false", name


# --- the images and the port -------------------------------------------------------------------------


def _compose_images() -> dict[str, str]:
    """Image name -> the Dockerfile it is built from, as docker-compose.yml builds them."""
    services = load_compose()["services"].values()
    return {s["image"]: s["build"]["dockerfile"] for s in services if "build" in s}


def test_the_images_are_the_ones_the_dockerfiles_build(renders):
    images = _compose_images()
    assert images == {"imagegen-api": "docker/api.Dockerfile", "imagegen-worker": "docker/worker.Dockerfile"}
    for dockerfile, image in ((API_DOCKERFILE, "imagegen-api"), (WORKER_DOCKERFILE, "imagegen-worker")):
        assert f"-t {image} ." in dockerfile.read_text(), f"{dockerfile.name} no longer says it builds {image}"
    for rendered in renders.values():
        assert container(rendered.one("Deployment", API))["image"] == "imagegen-api"
        assert container(rendered.one("Deployment", WORKER))["image"] == "imagegen-worker"
        redis = rendered.get("StatefulSet", REDIS)
        if redis:
            assert container(redis)["image"] == load_compose()["services"]["redis"]["image"]


def test_the_api_listens_where_its_image_does(renders):
    """The image's CMD is the entry point (no command or args here), so the container port must be
    its --port, on every interface; the Service and the probes name that port."""
    cmd = last(parse_dockerfile(API_DOCKERFILE), "CMD").exec_form()
    listening = int(cmd[cmd.index("--port") + 1])
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    for name, rendered in renders.items():
        for workload in (API, WORKER):
            c = container(rendered.one("Deployment", workload))
            assert "command" not in c and "args" not in c, (name, workload)
        api = container(rendered.one("Deployment", API))
        ports = {p["name"]: p["containerPort"] for p in api["ports"]}
        assert ports == {"http": listening}
        (service_port,) = rendered.one("Service", API)["spec"]["ports"]
        assert ports[service_port["targetPort"]] == listening
        for probe in ("livenessProbe", "readinessProbe"):
            assert api[probe]["httpGet"]["port"] == "http", probe
        assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_the_probe_paths_are_routes_of_the_api(renders):
    from contract.settings import Settings
    from service.app import create_app

    paths = create_app(Settings(redis_url="redis://127.0.0.1:1/0")).openapi()["paths"]
    for name, rendered in renders.items():
        api = container(rendered.one("Deployment", API))
        for probe in ("livenessProbe", "readinessProbe"):
            path, _, query = api[probe]["httpGet"]["path"].partition("?")
            assert "get" in paths.get(path, {}), f"{name}: {probe} {path} is no GET route of the API"
            params = {p["name"] for p in paths[path]["get"].get("parameters", []) if p["in"] == "query"}
            assert {q.partition("=")[0] for q in query.split("&") if q} <= params, f"{name}: {probe} {query}"


# --- no secret committed -----------------------------------------------------------------------------


def _committed(under: str) -> list[str]:
    done = subprocess.run(["git", "-C", str(REPO), "ls-files", under], capture_output=True, text=True, timeout=30,
                          check=True)
    return done.stdout.split()


def test_no_secret_value_is_committed():
    files = _committed("deploy")
    assert files, "deploy/ is not committed?"
    assert "deploy/k8s/base/secrets.env" not in files
    ignored = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", "deploy/k8s/base/secrets.env"], timeout=30)
    assert ignored.returncode == 0, "deploy/k8s/base/secrets.env is not git-ignored"
    for path in files:
        text = (REPO / path).read_text()
        # no hex or base64 run long enough to be a key or an encoded value
        assert not re.search(r"[0-9a-f]{32,}|[A-Za-z0-9+/]{40,}={0,2}", text), f"{path}: looks like a secret"
        if path.endswith(".yaml"):
            for document in yaml.safe_load_all(text):
                if isinstance(document, dict):
                    assert document.get("kind") != "Secret", f"{path}: a Secret committed"
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    # the Secret comes from the git-ignored file alone: no literal, no committed file
    assert kustomization["secretGenerator"] == [{"name": "imagegen-secrets", "envs": ["secrets.env"]}]
    assert "deploy" in (REPO / ".dockerignore").read_text().splitlines(), "the build context would carry secrets.env"
