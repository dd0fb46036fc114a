"""docs/kubernetes.md as a platform engineer follows it: its runnable block run as written, every
other shell command checked against the rendered manifests (no cluster runs here), its overlay
examples rendered, and the numbers it quotes read from the manifests they describe."""

from __future__ import annotations

import base64
import re
import shlex
import shutil
import subprocess

import pytest
from deploy_support import REPO, CodeBlock, readme_blocks, shell_commands
from k8s_support import (
    API,
    K8S,
    KUBERNETES_VERSION,
    WORKER,
    Rendered,
    container,
    pod_spec,
    render,
    render_overlay,
    scratch_copy,
)

DOC = REPO / "docs" / "kubernetes.md"

NAMESPACE = "imagegen"


def _blocks(language: str) -> list[CodeBlock]:
    return [b for b in readme_blocks(DOC.read_text()) if b.language == language]


@pytest.fixture(scope="module")
def gpu(tmp_path_factory) -> Rendered:
    return render_overlay(tmp_path_factory.mktemp("gpu"), "gpu")


def test_the_runnable_block_makes_a_secret_that_renders(tmp_path):
    """The doc's first step, pasted in a checkout that has no secrets.env: a random hex password,
    which the rendered Secret then carries."""
    (block,) = [b for b in _blocks("bash") if "runnable" in b.info]
    checkout = tmp_path / "checkout"
    shutil.copytree(K8S, checkout / "deploy" / "k8s", ignore=shutil.ignore_patterns("secrets.env"))
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.text], cwd=checkout, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, f"{block.text}\n{done.stderr}"
    made = (checkout / "deploy" / "k8s" / "base" / "secrets.env").read_text()
    (password,) = re.findall(r"^REDIS_PASSWORD=(.*)$", made, re.M)
    assert re.fullmatch(r"[0-9a-f]{64}", password), password
    secret = render(checkout / "deploy" / "k8s" / "overlays" / "gpu").generated("Secret", "imagegen-secrets")
    assert base64.b64decode(secret["data"]["REDIS_PASSWORD"]).decode() == password


def _api_get_paths() -> set[str]:
    from contract.settings import Settings
    from service.app import create_app

    paths = create_app(Settings(redis_url="redis://127.0.0.1:1/0")).openapi()["paths"]
    return {path for path, methods in paths.items() if "get" in methods}


def _check_kubectl(words: list[str], rendered: Rendered, tmp_path) -> str:
    words = words[1:]
    namespace = None
    if words[:1] == ["-n"]:
        namespace, words = words[1], words[2:]
    verb, rest = words[0], words[1:]
    if verb in ("apply", "delete", "kustomize"):
        path = rest[rest.index("-k") + 1] if "-k" in rest else rest[0]
        assert path.startswith("deploy/k8s/overlays/") and (REPO / path).is_dir(), path
        render(scratch_copy(tmp_path / path.replace("/", "_")) / path.removeprefix("deploy/k8s/"))
        return f"kubectl {verb}: {path} renders"
    assert namespace == NAMESPACE, f"kubectl {verb} without -n {NAMESPACE}"
    if verb == "get" and rest == ["pods"]:
        return "kubectl get pods"
    if verb in ("get", "describe"):
        kind, name = rest
        if kind == "hpa":
            # the HPA KEDA makes for a ScaledObject: keda-hpa-<its name>, unless it names another
            so = rendered.one("ScaledObject", name.removeprefix("keda-hpa-"))
            assert "name" not in so["spec"].get("advanced", {}).get("horizontalPodAutoscalerConfig", {})
            return "kubectl get hpa: KEDA's HPA of the ScaledObject"
        kinds = {"scaledobject": "ScaledObject", "deploy": "Deployment", "svc": "Service"}
        rendered.one(kinds[kind], name)
        return f"kubectl {verb}: {kind}/{name} is rendered"
    if verb == "logs":
        kind, _, name = rest[0].partition("/")
        assert kind == "deploy"
        rendered.one("Deployment", name)
        return "kubectl logs: a rendered Deployment"
    if verb == "port-forward":
        kind, _, name = rest[0].partition("/")
        assert kind == "svc"
        local, _, remote = rest[1].partition(":")
        (port,) = rendered.one("Service", name)["spec"]["ports"]
        assert int(remote or local) == port["port"], rest
        return "kubectl port-forward: the Service's port"
    raise AssertionError(f"kubectl {verb}: this test does not know how to check it")


def test_every_shell_command_is_checked(gpu, tmp_path):
    paths = _api_get_paths()
    checked = []
    for block in _blocks("bash"):
        for words in shell_commands(block.text):
            line = shlex.join(words)
            if "runnable" in block.info:
                checked.append(f"{line}: run by test_the_runnable_block_makes_a_secret_that_renders")
            elif words[0] == "kubectl":
                checked.append(_check_kubectl(words, gpu, tmp_path))
            elif words[0] == "curl":
                (url,) = [w for w in words if w.startswith("http")]
                assert url.startswith("http://127.0.0.1:8000/"), "through the port-forward of the doc"
                assert url.removeprefix("http://127.0.0.1:8000") in paths, url
                checked.append(f"{line}: a GET route of the API")
            else:
                pytest.fail(f"docs/kubernetes.md line {block.line}: `{line}`: this test cannot check it")
    assert len(checked) >= 10, checked


def test_the_overlay_examples_render(tmp_path):
    examples = [b for b in _blocks("yaml") if "resources:" in b.text]
    assert len(examples) == 2
    k8s = scratch_copy(tmp_path)
    for number, block in enumerate(examples):
        mine = k8s / "overlays" / f"example-{number}"
        mine.mkdir()
        (mine / "kustomization.yaml").write_text(block.text)
        rendered = render(mine)
        images = {container(rendered.one("Deployment", name))["image"] for name in (API, WORKER)}
        if "images:" in block.text:
            assert images == {"registry.example.com/imagegen-api:1", "registry.example.com/imagegen-worker:1"}
        else:
            assert rendered.get("PersistentVolumeClaim", "imagegen-models")
            assert images == {"imagegen-api", "imagegen-worker"}


def test_the_numbers_quoted_are_the_manifests(gpu):
    """The doc explains the scaling with the manifests' own values: they must not drift apart."""
    text = " ".join(DOC.read_text().split())
    so = gpu.one("ScaledObject", WORKER)["spec"]
    metadata = so["triggers"][0]["metadata"]
    assert all(t["metadata"]["listLength"] == metadata["listLength"] for t in so["triggers"])
    hpa = gpu.one("HorizontalPodAutoscaler", API)["spec"]
    scale_down = so["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    quoted = [
        *(f"`{t['metadata']['listName']}`" for t in so["triggers"]),
        f'`listLength: "{metadata["listLength"]}"`',
        f'`activationListLength: "{metadata["activationListLength"]}"`',
        f"every {so['pollingInterval']} s (`pollingInterval`)",
        f"at most {so['maxReplicaCount']} (`maxReplicaCount`",
        f"`cooldownPeriod: {so['cooldownPeriod']}`",
        f"`stabilizationWindowSeconds: {scale_down['stabilizationWindowSeconds']}`",
        f"{hpa['minReplicas']} to {hpa['maxReplicas']} replicas, at "
        f"{hpa['metrics'][0]['resource']['target']['averageUtilization']}% of the CPU request",
        f"the pod's grace is {pod_spec(gpu.one('Deployment', WORKER))['terminationGracePeriodSeconds']} s",
        f"keeps one worker after {so['fallback']['failureThreshold']} failed reads (`fallback`)",
        f"against the {KUBERNETES_VERSION} schemas",
        f"Kubernetes {KUBERNETES_VERSION} schemas",
    ]
    assert so["fallback"]["replicas"] == 1  # "keeps one worker"
    missing = [q for q in quoted if q not in text]
    assert not missing, f"docs/kubernetes.md no longer says: {missing}"
    readiness = container(gpu.one("Deployment", API))["readinessProbe"]["httpGet"]["path"]
    assert readiness == "/readyz?workers=0"
    assert f"**Readiness is `{readiness}`, not `/readyz`.**" in text


def test_the_cold_start_figure_says_where_and_when():
    """A measured figure names its machine, date and commit; the commit must be one of this history."""
    section = DOC.read_text().split("### Cold start", 1)[1].split("\n## ", 1)[0]
    (row,) = [line for line in section.splitlines() if line.startswith("| launch of")]
    assert "CPU" in row and re.search(r"\b20\d\d-\d\d-\d\d\b", row), row
    (commit,) = re.findall(r"commit ([0-9a-f]{7,40})\b", row)
    exists = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{commit}^{{commit}}"], timeout=30)
    assert exists.returncode == 0, f"commit {commit} is not in this repository's history"
    assert "That is a CPU figure" in section


def test_the_doc_says_no_cluster_ran():
    text = " ".join(DOC.read_text().split())
    assert "**No cluster ran where these manifests were written.**" in text
    assert "No cluster, no KEDA and no Docker engine ran here." in text
