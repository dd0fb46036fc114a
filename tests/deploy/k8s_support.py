"""Helpers of the Kubernetes tests: deploy/k8s rendered as `kubectl kustomize` (and so `kubectl apply
-k`) renders it, and the rendered resources looked up by kind and name.

No cluster runs here. Each render happens in a scratch copy of deploy/k8s that holds a secrets.env
(the checkout never does: it is git-ignored, and the base refuses to render without it), so that
the tests write nothing into the repository.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_support import REPO

K8S = REPO / "deploy" / "k8s"
SECRETS_EXAMPLE = K8S / "base" / "secrets.env.example"
CONFIG_ENV = K8S / "base" / "config.env"

OVERLAYS = ("gpu", "cpu", "gpu-managed-redis")
"""Every overlay deploy/k8s ships; each must render."""

KUBERNETES_VERSION = "1.32"
"""The Kubernetes release whose schemas the built-in kinds are validated against (docs/kubernetes.md)."""

PASSWORD = "k8s-test-password"

API, WORKER, REDIS = "imagegen-api", "imagegen-worker", "redis"


def kubectl() -> str:
    """kubectl's path; a skip where it is missing, a failure where scripts/test.sh says it must be there."""
    found = shutil.which("kubectl")
    if found:
        return found
    why = "kubectl (with its built-in kustomize) is not installed"
    if os.environ.get("REQUIRE_KUBECTL"):
        pytest.fail(f"REQUIRE_KUBECTL is set, but {why}", pytrace=False)
    pytest.skip(why)


def env_lines(text: str) -> dict[str, str]:
    """The NAME=value lines of an env file, as kustomize's generators read them (comments skipped)."""
    lines = [line.strip() for line in text.splitlines()]
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def scratch_copy(root: Path, secrets: dict[str, str] | None = None) -> Path:
    """deploy/k8s copied under `root`, with base/secrets.env made as docs/kubernetes.md says (the
    example with REDIS_PASSWORD set), or from `secrets`; returns the copy's deploy/k8s."""
    copy = root / "deploy" / "k8s"
    shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("secrets.env"))
    if secrets is None:
        text = SECRETS_EXAMPLE.read_text().replace("\nREDIS_PASSWORD=\n", f"\nREDIS_PASSWORD={PASSWORD}\n")
    else:
        text = "".join(f"{k}={v}\n" for k, v in secrets.items())
    (copy / "base" / "secrets.env").write_text(text)
    return copy


@dataclass(frozen=True)
class Rendered:
    """The resources one kustomization renders to."""

    resources: list[dict[str, Any]]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.resources if r["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        found = [r for r in self.all(kind) if r["metadata"]["name"] == name]
        assert len(found) <= 1, f"{len(found)} {kind}/{name}"
        return found[0] if found else None

    def one(self, kind: str, name: str) -> dict[str, Any]:
        found = self.get(kind, name)
        assert found is not None, f"no {kind}/{name} in {[self.key(r) for r in self.resources]}"
        return found

    def generated(self, kind: str, name: str) -> dict[str, Any]:
        """The ConfigMap or Secret a generator made as `name` (kustomize appends a content hash)."""
        found = [r for r in self.all(kind) if re.fullmatch(rf"{re.escape(name)}-[a-z0-9]{{10}}", r["metadata"]["name"])]
        assert len(found) == 1, f"want one generated {kind} {name}-<hash>, found {len(found)}"
        return found[0]

    @staticmethod
    def key(resource: dict[str, Any]) -> str:
        return f"{resource['kind']}/{resource['metadata']['name']}"


def render(directory: Path) -> Rendered:
    """`kubectl kustomize directory`, parsed; fails with kustomize's own message."""
    done = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"kubectl kustomize {directory}:\n{done.stderr}"
    return Rendered([r for r in yaml.safe_load_all(done.stdout) if r])


def render_overlay(root: Path, overlay: str) -> Rendered:
    return render(scratch_copy(root) / "overlays" / overlay)


# --- inside the rendered resources -------------------------------------------------------------


def pod_spec(resource: dict[str, Any]) -> dict[str, Any]:
    return resource["spec"]["template"]["spec"]


def container(resource: dict[str, Any]) -> dict[str, Any]:
    """The one container of a workload (each of ours has one)."""
    (only,) = pod_spec(resource)["containers"]
    return only


def env_values(c: dict[str, Any]) -> dict[str, str | None]:
    """A container's `env:` by name: the literal value, or None for one taken from a Secret or ConfigMap."""
    return {e["name"]: e.get("value") for e in c.get("env") or []}


def referenced_variables(text: str) -> set[str]:
    """The $(NAME) references Kubernetes expands in an env value, a command or args."""
    return set(re.findall(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)", text))


def shell_variables(text: str) -> set[str]:
    """The $NAME and ${NAME} a shell command reads."""
    return set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text))
