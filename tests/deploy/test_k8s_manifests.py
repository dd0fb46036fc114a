"""deploy/k8s as `kubectl kustomize` renders it, every overlay: the built-in kinds validated offline
against the Kubernetes schemas of KUBERNETES_VERSION (kubernetes-validate, strict: an unknown field
fails), KEDA's kinds against the fields KEDA documents, every name one resource gives another found
in the render, and the shape the issue asks for (replicas, GPU, Redis, the managed-Redis switch).
No cluster runs here: this is what can be known without one."""

from __future__ import annotations

import copy
import subprocess

import kubernetes_validate
import pytest
from k8s_support import (
    API,
    KUBERNETES_VERSION,
    OVERLAYS,
    REDIS,
    SECRETS_EXAMPLE,
    WORKER,
    Rendered,
    container,
    env_lines,
    env_values,
    kubectl,
    pod_spec,
    render,
    render_overlay,
    scratch_copy,
)

NAMESPACE = "imagegen"

KEDA = "keda.sh/v1alpha1"

IN_CLUSTER_REDIS = {("StatefulSet", REDIS), ("Service", REDIS), ("NetworkPolicy", REDIS)}


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request, tmp_path_factory) -> tuple[str, Rendered]:
    return request.param, render_overlay(tmp_path_factory.mktemp(request.param), request.param)


def _in_cluster_redis(name: str) -> bool:
    return not name.endswith("managed-redis")


def test_every_overlay_renders_the_whole_service(overlay):
    name, rendered = overlay
    keys = {(r["kind"], r["metadata"]["name"]) for r in rendered.resources
            if r["kind"] not in ("ConfigMap", "Secret")}
    wanted = {("Namespace", NAMESPACE), ("Deployment", API), ("Service", API), ("HorizontalPodAutoscaler", API),
              ("PodDisruptionBudget", API), ("Deployment", WORKER), ("PodDisruptionBudget", WORKER),
              ("ScaledObject", WORKER), ("TriggerAuthentication", "imagegen-redis")}
    if _in_cluster_redis(name):
        wanted |= IN_CLUSTER_REDIS
    assert keys == wanted, f"{name}: {sorted(keys ^ wanted)}"
    rendered.generated("ConfigMap", "imagegen-config")
    rendered.generated("Secret", "imagegen-secrets")


def test_nothing_renders_without_secrets_env(tmp_path):
    """As compose refuses to start without REDIS_PASSWORD: no secrets.env, no manifests at all."""
    copy_ = scratch_copy(tmp_path)
    (copy_ / "base" / "secrets.env").unlink()
    done = subprocess.run([kubectl(), "kustomize", str(copy_ / "overlays" / "gpu")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0 and "secrets.env" in done.stderr, done.stderr


def test_built_in_kinds_validate_strictly(overlay):
    name, rendered = overlay
    unknown = []
    for resource in rendered.resources:
        try:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            unknown.append(resource)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            pytest.fail(f"{name}: {Rendered.key(resource)} is not valid Kubernetes {KUBERNETES_VERSION}: "
                        f"{path}: {e.message}")
    # only KEDA's custom resources lack a bundled schema; they are checked below instead
    assert {r["apiVersion"] for r in unknown} == {KEDA}, [Rendered.key(r) for r in unknown]


# --- KEDA's kinds, against the fields KEDA documents ------------------------------------------------
# From https://keda.sh/docs/2.16/reference/scaledobject-spec/, .../scalers/redis-lists/ and
# .../concepts/authentication/ (KEDA 2.16, the release these manifests were written against).

SCALED_OBJECT_SPEC = {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
                      "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers"}
SCALE_TARGET_REF = {"apiVersion", "kind", "name", "envSourceContainerName"}
ADVANCED = {"restoreToOriginalReplicaCount", "horizontalPodAutoscalerConfig", "scalingModifiers"}
HPA_CONFIG = {"name", "behavior"}
TRIGGER = {"type", "metadata", "name", "useCachedMetrics", "authenticationRef", "metricType"}
AUTHENTICATION_REF = {"name", "kind"}
REDIS_LIST_METADATA = {"address", "host", "port", "usernameFromEnv", "passwordFromEnv", "listName", "listLength",
                       "activationListLength", "enableTLS", "unsafeSsl", "databaseIndex", "addressFromEnv",
                       "hostFromEnv", "portFromEnv"}
REDIS_AUTH_PARAMETERS = {"address", "host", "port", "username", "password", "tls", "ca", "cert", "key", "keyPassword"}
TRIGGER_AUTHENTICATION_SPEC = {"secretTargetRef", "env", "configMapTargetRef", "hashiCorpVault", "podIdentity",
                               "azureKeyVault", "awsSecretManager", "gcpSecretManager"}


def _fields(where: str, value: dict, allowed: set[str], required: set[str] = frozenset()) -> None:
    assert isinstance(value, dict), f"{where}: not a mapping"
    assert set(value) <= allowed, f"{where}: fields KEDA does not document: {sorted(set(value) - allowed)}"
    assert required <= set(value), f"{where}: lacks {sorted(required - set(value))}"


def _integer(where: str, value) -> int:
    assert isinstance(value, int) and not isinstance(value, bool) and value >= 0, f"{where}: {value!r}"
    return value


def test_the_scaled_object_uses_documented_fields(overlay):
    name, rendered = overlay
    so = rendered.one("ScaledObject", WORKER)
    assert so["apiVersion"] == KEDA
    spec = so["spec"]
    _fields("spec", spec, SCALED_OBJECT_SPEC, {"scaleTargetRef", "triggers"})
    _fields("spec.scaleTargetRef", spec["scaleTargetRef"], SCALE_TARGET_REF, {"name"})
    for field in ("pollingInterval", "cooldownPeriod", "minReplicaCount", "maxReplicaCount"):
        _integer(f"spec.{field}", spec[field])
    assert spec["minReplicaCount"] <= spec["maxReplicaCount"]
    if "fallback" in spec:
        _fields("spec.fallback", spec["fallback"], {"failureThreshold", "replicas"}, {"failureThreshold", "replicas"})
        assert spec["minReplicaCount"] <= _integer("fallback.replicas", spec["fallback"]["replicas"]) \
            <= spec["maxReplicaCount"]
    advanced = spec.get("advanced", {})
    _fields("spec.advanced", advanced, ADVANCED)
    _fields("spec.advanced.horizontalPodAutoscalerConfig", advanced.get("horizontalPodAutoscalerConfig", {}),
            HPA_CONFIG)

    # one trigger per model queue, each named apart (KEDA names the HPA's metrics after them)
    assert len({t.get("name") for t in spec["triggers"]}) == len(spec["triggers"]) >= 1
    for trigger in spec["triggers"]:
        _fields("trigger", trigger, TRIGGER, {"type", "metadata"})
        assert trigger["type"] == "redis"
        # KEDA's metadata is a map of strings: a YAML number there is refused by its CRD
        metadata = trigger["metadata"]
        assert all(isinstance(v, str) for v in metadata.values()), metadata
        _fields("trigger.metadata", metadata, REDIS_LIST_METADATA, {"listName", "listLength"})
        assert ("address" in metadata) != ({"host", "port"} <= set(metadata)), "address, or host and port"
        assert int(metadata["listLength"]) >= 1 and int(metadata["activationListLength"]) >= 0
        assert metadata["enableTLS"] in ("true", "false") and int(metadata["databaseIndex"]) >= 0
        # the password comes from the Secret, through the TriggerAuthentication, never from the metadata
        assert not {"password", "passwordFromEnv"} & set(metadata)
        _fields("trigger.authenticationRef", trigger["authenticationRef"], AUTHENTICATION_REF, {"name"})


def test_the_scaled_objects_hpa_behavior_is_one_kubernetes_accepts(overlay):
    """KEDA hands `advanced.horizontalPodAutoscalerConfig.behavior` to the HPA it makes as it is: an
    HPA with that behavior must validate."""
    _, rendered = overlay
    behavior = rendered.one("ScaledObject", WORKER)["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    hpa = copy.deepcopy(rendered.one("HorizontalPodAutoscaler", API))
    hpa["spec"]["behavior"] = behavior
    kubernetes_validate.validate(hpa, KUBERNETES_VERSION, strict=True)


def test_the_trigger_authentication_takes_the_password_from_the_secret(overlay):
    _, rendered = overlay
    auth = rendered.one("TriggerAuthentication", "imagegen-redis")
    assert auth["apiVersion"] == KEDA
    _fields("spec", auth["spec"], TRIGGER_AUTHENTICATION_SPEC, {"secretTargetRef"})
    secret = rendered.generated("Secret", "imagegen-secrets")
    for ref in auth["spec"]["secretTargetRef"]:
        _fields("secretTargetRef[]", ref, {"parameter", "name", "key"}, {"parameter", "name", "key"})
        assert ref["parameter"] in REDIS_AUTH_PARAMETERS, ref
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["data"], ref
    assert [r["parameter"] for r in auth["spec"]["secretTargetRef"]] == ["password"]


# --- names that point at other resources ---------------------------------------------------------


def test_every_resource_is_in_the_namespace(overlay):
    _, rendered = overlay
    for resource in rendered.resources:
        if resource["kind"] == "Namespace":
            assert resource["metadata"]["name"] == NAMESPACE
            # the pods below must pass the strictest Pod Security Standard, and the namespace says so
            assert resource["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        else:
            assert resource["metadata"].get("namespace") == NAMESPACE, Rendered.key(resource)


def _workloads(rendered: Rendered) -> list[dict]:
    return rendered.all("Deployment") + rendered.all("StatefulSet")


def _matches(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # matchExpressions would need more than this
    return selector["matchLabels"].items() <= labels.items()


def test_selectors_pick_their_own_pods(overlay):
    """Each workload's selector matches its template; each Service and PDB selects exactly one
    workload's pods; the NetworkPolicy guards Redis and admits the API and the workers only."""
    _, rendered = overlay
    workloads = _workloads(rendered)
    for w in workloads:
        assert _matches(w["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"]), Rendered.key(w)
    labels = {w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"] for w in workloads}

    def selected(selector: dict) -> list[str]:
        return sorted(n for n, pod in labels.items() if _matches(selector, pod))

    for service in rendered.all("Service"):
        chosen = selected({"matchLabels": service["spec"]["selector"]})
        assert chosen == [service["metadata"]["name"]], f"Service {service['metadata']['name']} selects {chosen}"
    for pdb in rendered.all("PodDisruptionBudget"):
        assert selected(pdb["spec"]["selector"]) == [pdb["metadata"]["name"]], pdb["metadata"]["name"]
    for policy in rendered.all("NetworkPolicy"):
        assert selected(policy["spec"]["podSelector"]) == [REDIS]
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        (rule,) = policy["spec"]["ingress"]
        assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]
        local = [p["podSelector"] for p in rule["from"] if "namespaceSelector" not in p]
        assert sorted(n for s in local for n in selected(s)) == [API, WORKER]
        # the one peer from elsewhere: KEDA's operator, which reads the queue's length
        (keda,) = [p for p in rule["from"] if "namespaceSelector" in p]
        assert keda == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}},
                        "podSelector": {"matchLabels": {"app": "keda-operator"}}}


def test_every_named_reference_resolves(overlay):
    name, rendered = overlay
    config = rendered.generated("ConfigMap", "imagegen-config")["metadata"]["name"]
    secret = rendered.generated("Secret", "imagegen-secrets")
    for w in _workloads(rendered):
        spec = pod_spec(w)
        claims = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
        for c in spec["containers"]:
            for source in c.get("envFrom", []):
                ref = source.get("configMapRef") or source.get("secretRef")
                assert ref["name"] in (config, secret["metadata"]["name"]), (Rendered.key(w), ref)
            for env in c.get("env", []):
                key_ref = env.get("valueFrom", {}).get("secretKeyRef")
                if key_ref:
                    assert key_ref["name"] == secret["metadata"]["name"] and key_ref["key"] in secret["data"], env
            volumes = {v["name"] for v in spec.get("volumes", [])} | claims
            for mount in c.get("volumeMounts", []):
                assert mount["name"] in volumes, (Rendered.key(w), mount)
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert rendered.get("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]), volume
    hpa = rendered.one("HorizontalPodAutoscaler", API)["spec"]["scaleTargetRef"]
    assert (hpa["kind"], hpa["name"]) == ("Deployment", API)
    so = rendered.one("ScaledObject", WORKER)["spec"]
    assert so["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    assert rendered.get("Deployment", so["scaleTargetRef"]["name"])
    assert all(rendered.get("TriggerAuthentication", t["authenticationRef"]["name"]) for t in so["triggers"])


# --- what the pods may do ---------------------------------------------------------------------------


def test_pods_run_as_non_root_with_a_read_only_root(overlay):
    """The restricted Pod Security Standard, and the rest of the issue's hardening: a read-only root
    filesystem (writable emptyDirs where the process writes), no service account token, requests and
    memory limits everywhere."""
    _, rendered = overlay
    for w in _workloads(rendered):
        where, spec = Rendered.key(w), pod_spec(w)
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["automountServiceAccountToken"] is False, where
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(spec), where
        assert not any("hostPath" in v for v in spec.get("volumes", [])), where
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["readOnlyRootFilesystem"] is True and not sc.get("privileged"), where
            assert all("hostPort" not in p for p in c.get("ports", [])), where
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), where
            assert "memory" in c["resources"]["limits"], where


# --- the shape the issue asks for -------------------------------------------------------------------


def test_replicas_are_left_to_the_autoscalers(overlay):
    """Two API replicas at least, from the HPA on CPU; the workers from KEDA, down to zero. Neither
    Deployment sets `replicas`: Kubernetes recommends leaving it out under an HPA, since every
    `kubectl apply` would otherwise reset what the autoscaler chose."""
    _, rendered = overlay
    api, worker = rendered.one("Deployment", API), rendered.one("Deployment", WORKER)
    assert "replicas" not in api["spec"] and "replicas" not in worker["spec"]
    hpa = rendered.one("HorizontalPodAutoscaler", API)["spec"]
    assert hpa["minReplicas"] == 2 and hpa["maxReplicas"] > hpa["minReplicas"]
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    # a utilization target is a share of the request: without a CPU request the HPA cannot scale
    assert "cpu" in container(api)["resources"]["requests"] and "cpu" in container(api)["resources"]["limits"]
    so = rendered.one("ScaledObject", WORKER)["spec"]
    assert so["minReplicaCount"] == 0 and so["maxReplicaCount"] >= 1
    assert rendered.one("PodDisruptionBudget", WORKER)["spec"] == {
        "maxUnavailable": 1, "selector": worker["spec"]["selector"]}


def test_only_the_gpu_workers_ask_for_a_gpu(overlay):
    name, rendered = overlay
    worker = container(rendered.one("Deployment", WORKER))
    gpu = name.startswith("gpu")
    assert env_values(worker)["WORKER_DEVICE"] == ("cuda" if gpu else "cpu")
    limits, requests = worker["resources"]["limits"], worker["resources"]["requests"]
    if gpu:
        # extended resources are whole units, asked for in limits (a request, if any, must equal it)
        assert limits["nvidia.com/gpu"] == 1 and requests.get("nvidia.com/gpu", 1) == 1
        tolerations = pod_spec(rendered.one("Deployment", WORKER))["tolerations"]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
    else:
        assert "nvidia.com/gpu" not in limits and "nvidia.com/gpu" not in requests
    for other in (r for r in _workloads(rendered) if r["metadata"]["name"] != WORKER):
        assert "nvidia.com/gpu" not in str(other), Rendered.key(other)


def test_redis_keeps_an_append_only_file_on_its_volume(overlay):
    name, rendered = overlay
    if not _in_cluster_redis(name):
        pytest.skip("a managed Redis: none runs in the cluster")
    redis = rendered.one("StatefulSet", REDIS)
    assert redis["spec"]["replicas"] == 1
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    c = container(redis)
    script = c["command"][-1]
    assert "--appendonly yes" in script and "--dir /data" in script and "--requirepass" in script
    assert {"name": claim["metadata"]["name"], "mountPath": "/data"} in c["volumeMounts"]
    assert c["env"] == [{"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {
        "name": rendered.generated("Secret", "imagegen-secrets")["metadata"]["name"], "key": "REDIS_PASSWORD"}}}]


def test_nothing_is_published_outside_the_cluster(overlay):
    _, rendered = overlay
    for service in rendered.all("Service"):
        spec = service["spec"]
        assert spec["type"] == "ClusterIP", Rendered.key(service)
        assert not {"externalIPs", "loadBalancerIP", "externalName"} & set(spec)
        assert all("nodePort" not in p for p in spec["ports"])
    assert not rendered.all("Ingress")


def test_the_managed_redis_switch(tmp_path):
    """overlays/gpu-managed-redis: no Redis in the cluster, REDIS_URL whole from the Secret (rediss://,
    as secrets.env.example shows it), KEDA reading the queue over TLS; everything else as the gpu
    overlay renders it."""
    gpu = render_overlay(tmp_path / "gpu", "gpu")
    managed = render_overlay(tmp_path / "managed", "gpu-managed-redis")
    keys = {Rendered.key(r) for r in managed.resources}
    assert {Rendered.key(r) for r in gpu.resources} - keys == {f"{k}/{n}" for k, n in IN_CLUSTER_REDIS}
    for name in (API, WORKER):
        env = env_values(container(managed.one("Deployment", name)))
        assert not {"REDIS_URL", "REDIS_PASSWORD"} & set(env), name
        assert container(managed.one("Deployment", name))["envFrom"] == \
            container(gpu.one("Deployment", name))["envFrom"]
    triggers, in_cluster = ([t["metadata"] for t in r.one("ScaledObject", WORKER)["spec"]["triggers"]]
                            for r in (managed, gpu))
    assert len(triggers) == len(in_cluster)  # every model queue's trigger is switched, none dropped
    for trigger, own in zip(triggers, in_cluster):
        assert trigger["enableTLS"] == "true" and own["enableTLS"] == "false"
        assert trigger["address"] != own["address"] and ".svc." not in trigger["address"]
        assert {k: v for k, v in trigger.items() if k not in ("address", "enableTLS")} == \
            {k: v for k, v in own.items() if k not in ("address", "enableTLS")}
    assert len({t["address"] for t in triggers}) == 1
    shown = [line for line in SECRETS_EXAMPLE.read_text().splitlines() if "REDIS_URL=" in line]
    assert len(shown) == 1 and shown[0].startswith("# REDIS_URL=rediss://"), shown


def test_queue_name_and_namespace_follow_the_base(tmp_path):
    """The triggers' lists and Redis address are copied from the base's QUEUE_NAME and namespace, so
    that changing either there keeps KEDA watching the lists the pods fill. (Within the base: the
    copy runs where the base is built, so config.env says to change QUEUE_NAME there, not in an
    overlay.)"""
    k8s = scratch_copy(tmp_path)
    config = k8s / "base" / "config.env"
    config.write_text(config.read_text().replace("\nQUEUE_NAME=imagegen\n", "\nQUEUE_NAME=renders\n"))
    kustomization = k8s / "base" / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace("\nnamespace: imagegen\n", "\nnamespace: images-prod\n"))
    (k8s / "base" / "namespace.yaml").write_text(
        (k8s / "base" / "namespace.yaml").read_text().replace("name: imagegen\n", "name: images-prod\n"))
    for overlay in OVERLAYS:
        rendered = render(k8s / "overlays" / overlay)
        triggers = [t["metadata"] for t in rendered.one("ScaledObject", WORKER)["spec"]["triggers"]]
        assert [m["listName"] for m in triggers] == ["rq:queue:renders:fashion-mnist@2",
                                                    "rq:queue:renders:fashion-mnist@1"], overlay
        assert rendered.generated("ConfigMap", "imagegen-config")["data"]["QUEUE_NAME"] == "renders"
        assert {r["metadata"].get("namespace") for r in rendered.resources} == {None, "images-prod"}
        if _in_cluster_redis(overlay):
            assert {m["address"] for m in triggers} == {"redis.images-prod.svc.cluster.local:6379"}


def test_the_model_store_volume_component(tmp_path):
    """components/model-store-pvc: one claim, read-only, mounted at /models on the API (the cards) and
    the workers (the weights) alike, and MODEL_STORE pointing there."""
    k8s = scratch_copy(tmp_path)
    mine = k8s / "overlays" / "mine"
    mine.mkdir()
    (mine / "kustomization.yaml").write_text("resources: [../gpu]\ncomponents: [../../components/model-store-pvc]\n")
    rendered = render(mine)
    claim = rendered.one("PersistentVolumeClaim", "imagegen-models")
    assert claim["metadata"]["namespace"] == NAMESPACE and claim["spec"]["accessModes"] == ["ReadOnlyMany"]
    kubernetes_validate.validate(claim, KUBERNETES_VERSION, strict=True)
    assert rendered.generated("ConfigMap", "imagegen-config")["data"]["MODEL_STORE"] == "/models"
    for name in (API, WORKER):
        w = rendered.one("Deployment", name)
        kubernetes_validate.validate(w, KUBERNETES_VERSION, strict=True)
        (volume,) = [v for v in pod_spec(w)["volumes"] if "persistentVolumeClaim" in v]
        assert volume["persistentVolumeClaim"] == {"claimName": "imagegen-models", "readOnly": True}
        assert {"name": volume["name"], "mountPath": "/models", "readOnly": True} in container(w)["volumeMounts"]
    assert env_lines((k8s / "base" / "config.env").read_text()).get("MODEL_STORE") is None, \
        "the base serves the store baked into the images"
