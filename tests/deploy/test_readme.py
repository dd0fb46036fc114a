"""The README, as a newcomer follows it: the sections in the issue's order, every shell command in it
checked, the cheap ones run as written.

The convention for its fenced shell blocks:

- ```` ```bash runnable ````: needs no GPU, no Docker, no running service and no long training. This
  test runs the block as written with bash, in a scratch copy of the checkout (symlinks to the
  repository's files, so that what it writes lands in the scratch folder), with MODEL_STORE set to
  the tiny random store so that generating takes seconds; then checks what the block should have
  produced (RESULTS below: a runnable block without an entry there fails).
- ```` ```bash ````: needs a GPU, Docker, a running service or hours. Each of its commands is
  checked without running it: an imagegen command line is parsed by that command's own parser and
  its flags looked up in its --help; a docker command against docker-compose.yml and the
  Dockerfiles; a curl URL against the API's routes; a script or a file it names against the
  repository. The ones another test runs are listed in COVERED_ELSEWHERE with that test.

A command of a kind this test cannot check fails it: nothing in the README goes unchecked.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from deploy_support import (
    README,
    REPO,
    CodeBlock,
    active_services,
    env_example,
    interpolate,
    load_compose,
    readme_blocks,
    readme_sections,
    settings_variables,
    shell_commands,
)

SHELLS = ("bash", "sh", "shell")

ISSUE_ORDER = [
    "The two commands", "A first request", "The API at a glance", "Samplers and guidance",
    "Deploy on a GPU host with compose", "Scale out", "Configuration",
    "Train your own model on your own data", "Benchmarks", "Layout",
]
"""The sections issue 5 asks for, in its order (other sections may sit between them)."""

COVERED_ELSEWHERE: dict[str, tuple[str, str]] = {
    "imagegen up": ("tests/e2e/test_e2e_up.py", '"up", "--port"'),
    "bash scripts/test.sh": ("scripts/test.sh", "python -m pytest"),
    "bash scripts/setup.sh": ("scripts/test.sh", "bash scripts/setup.sh"),
    "section: A first request": ("tests/deploy/test_dockerfiles.py", 'block_in_section("A first request", "bash")'),
    "section: Image to image, inpainting and previews": ("tests/e2e/test_e2e_image_inputs.py",
                                                         '"\\n## Image to image, inpainting and previews\\n"'),
}
"""Commands (and a whole section) another test runs, rather than this one again: what -> (the file
that runs it, a string of that file that shows it does). `imagegen up` starts Redis, the API and a
worker (minutes here); scripts/test.sh is the suite's own command and runs setup.sh first; the first
request needs the service, which test_dockerfiles starts as the images start it."""


def _scratch_checkout(root: Path) -> Path:
    """A folder that looks like the checkout (symlinks to its entries) and keeps what is written in
    it: `.env`, `out/`... land here, never in the repository."""
    root.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in (".env", "out", "runs", ".git", ".pytest_cache", "__pycache__"):
            (root / entry.name).symlink_to(entry)
    return root


def _env_file(path: Path) -> dict[str, str]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def _check_env_file(checkout: Path, out: str) -> None:
    env = _env_file(checkout / ".env")
    assert re.fullmatch(r"[0-9a-f]{64}", env["REDIS_PASSWORD"]), env
    compose = load_compose()
    # compose can now start: every ${...} resolves, the password reaches Redis and the URL
    redis = interpolate(compose["services"]["redis"]["command"], env)
    assert env["REDIS_PASSWORD"] in redis
    assert env["REDIS_PASSWORD"] in interpolate(compose["services"]["api"]["environment"]["REDIS_URL"], env)


def _check_generated(checkout: Path, out: str) -> None:
    assert "fashion-mnist" in out  # `imagegen models` listed the store
    boots = checkout / "out" / "boots"
    assert sorted(p.name for p in boots.glob("*.png")) == ["0.png", "1.png", "2.png", "3.png", "grid.png"]


def _check_train_help(checkout: Path, out: str) -> None:
    assert "--export-name" in out and "--data" in out


RESULTS: dict[str, Callable[[Path, str], None]] = {
    "Deploy on a GPU host with compose": _check_env_file,
    "Generating without a server": _check_generated,
    "Train your own model on your own data": _check_train_help,
}
"""What each section's runnable block must leave behind (the checkout, the block's output)."""


def _shell_blocks() -> list[CodeBlock]:
    return [b for b in readme_blocks() if b.language in SHELLS]


def _runnable() -> list[CodeBlock]:
    return [b for b in _shell_blocks() if "runnable" in b.info[1:]]


def test_sections_in_the_issue_order():
    sections = readme_sections()
    missing = [s for s in ISSUE_ORDER if s not in sections]
    assert not missing, f"README lacks sections {missing}"
    positions = [sections.index(s) for s in ISSUE_ORDER]
    assert positions == sorted(positions), f"out of order: {sections}"


def test_a_sample_grid_tops_the_readme():
    text = README.read_text()
    assert text.index("![Samples, one row per class](docs/images/sample-grid.png)") < text.index("\n## ")


def test_every_shell_block_is_marked():
    for block in _shell_blocks():
        assert set(block.info[1:]) <= {"runnable"}, f"README line {block.line}: unknown marker {block.info}"
    assert _runnable(), "no runnable block: the README's commands would go untried"


@pytest.mark.parametrize("block", _runnable(), ids=lambda b: f"line{b.line}")
def test_runnable_block_runs_as_written(block, tmp_path, tiny_store_root):
    assert block.section in RESULTS, f"README line {block.line}: say in RESULTS what this block must produce"
    checkout = _scratch_checkout(tmp_path / "checkout")
    env = {k: v for k, v in os.environ.items() if k not in settings_variables()}
    env.update(MODEL_STORE=str(tiny_store_root), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.text], cwd=checkout, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"README line {block.line}:\n{block.text}\n{done.stdout}\n{done.stderr}"
    RESULTS[block.section](checkout, done.stdout)


# --- every command, checked without running it --------------------------------------------------


def _documented_variables() -> set[str]:
    return set(env_example()) | set(settings_variables())


def _api_routes() -> dict[str, set[str]]:
    """The API's paths as regular expressions, with their methods (from its OpenAPI schema)."""
    from contract.settings import Settings
    from service.app import create_app

    schema = create_app(Settings(redis_url="redis://127.0.0.1:1/0")).openapi()
    return {"^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$": {m.upper() for m in methods}
            for path, methods in schema["paths"].items()}


def _check_imagegen(words: list[str], prog: str = "imagegen") -> str:
    """`imagegen CMD ...` (or, with `prog` `python -m evaluation`, that program's commands): the
    command exists, and its flags are in its --help."""
    from imagegen.cli import COMMANDS, build_parser

    commands = COMMANDS
    if prog != "imagegen":
        from evaluation.__main__ import COMMANDS as commands
    command = words[1]
    assert command in commands, f"`{prog} {command}`: no such command"
    parser, subparsers = build_parser(only=[command], commands=commands, prog=prog)
    help_text = subparsers[command].format_help()
    for word in words[2:]:
        if word.startswith("-"):
            flag = word.split("=", 1)[0]
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text), \
                f"`{prog} {command}` has no {flag} (see {prog} {command} --help)"
    if "--help" not in words and "-h" not in words:
        parser.parse_args(words[1:])  # a missing required flag or a bad value raises UsageError
    return f"{prog} {command}: flags in its --help"


def _check_curl(words: list[str], routes: dict[str, set[str]], covered: bool) -> str:
    method = words[words.index("-X") + 1] if "-X" in words else "GET"
    urls = [w for w in words if w.startswith("http")]
    assert urls, f"curl without a URL: {words}"
    for url in urls:
        path = re.sub(r"^https?://[^/$]+", "", url).split("?")[0]
        if "$" in path:
            assert covered, f"{url}: a URL built at run time must be in a block another test runs"
            continue
        matching = [methods for pattern, methods in routes.items() if re.match(pattern, path)]
        assert matching, f"{url}: the API has no route {path}"
        assert any(method in m for m in matching), f"{url}: the API has no {method} {path}"
    return "curl: routes of the API"


_DOCKER_RUN_VALUE_FLAGS = {"-e", "--env", "--env-file", "--gpus", "--restart", "-v", "--volume", "--name", "-p",
                           "--network", "--stop-timeout"}


def _check_docker(words: list[str]) -> str:
    compose = load_compose()
    images = {s["image"]: s["build"]["dockerfile"] for s in compose["services"].values() if "build" in s}
    if words[1] == "compose":
        profiles, rest, i = set(), [], 2
        while i < len(words):
            if words[i] == "--profile":
                profiles.add(words[i + 1])
                i += 2
            else:
                rest.append(words[i])
                i += 1
        known = {p for s in compose["services"].values() for p in s.get("profiles", [])}
        assert profiles <= known, f"no such compose profile: {profiles - known}"
        assert rest[0] in {"up", "down", "ps", "logs", "build", "pull", "restart", "stop", "config"}, rest
        for flag, value in zip(rest, rest[1:]):
            if flag == "--scale":
                service = value.split("=")[0]
                assert service in active_services(compose, profiles), \
                    f"--scale {value}: {service} does not start under profiles {profiles}"
        return "docker compose: profiles and services of docker-compose.yml"
    if words[1] == "build":
        dockerfile, tag = words[words.index("-f") + 1], words[words.index("-t") + 1]
        assert (REPO / dockerfile).exists(), dockerfile
        assert images.get(tag) == dockerfile, f"{tag} is built from {images.get(tag)} in docker-compose.yml"
        return "docker build: the Dockerfile compose builds that image from"
    if words[1] == "run":
        i, image = 2, None
        while i < len(words):
            if words[i] in _DOCKER_RUN_VALUE_FLAGS:
                value = words[i + 1]
                if words[i] in ("-e", "--env"):
                    assert value.split("=")[0] in _documented_variables(), f"-e {value}: not a setting"
                if words[i] == "--env-file":
                    assert value == ".env", value
                i += 2
            elif words[i].startswith("-"):
                i += 1
            else:
                image = words[i]
                break
        assert image in images, f"docker run {image}: compose builds {sorted(images)}"
        return "docker run: an image compose builds, documented settings"
    raise AssertionError(f"docker {words[1]}: this test does not know how to check it")


def _check(words: list[str], block: CodeBlock, routes: dict[str, set[str]]) -> str:
    """How `words` was checked, or an AssertionError saying why it is wrong or uncheckable."""
    section_covered = f"section: {block.section}" in COVERED_ELSEWHERE
    runnable = "runnable" in block.info
    # leading assignments: settings of the command (they must be documented) or a shell variable
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        name, _, value = words[0].partition("=")
        if value.startswith("$("):
            inner = [value[2:], *words[1:]]
            inner[-1] = inner[-1].removesuffix(")")
            return _check(inner, block, routes)
        assert name in _documented_variables(), f"{name}= is not a documented setting"
        words = words[1:]
    program = words[0]
    if "/" in program:
        assert (REPO / program).exists(), f"{program}: no such file (after scripts/setup.sh)"
    name = Path(program).name
    if name == "imagegen":
        return _check_imagegen(words)
    if name in ("python", "python3") and words[1:3] == ["-m", "evaluation"]:
        return _check_imagegen(words[2:], prog="python -m evaluation")
    if name == "curl":
        return _check_curl(words, routes, section_covered)
    if name == "docker":
        return _check_docker(words)
    if name == "bash":
        script = REPO / words[1]
        assert script.is_file(), f"bash {words[1]}: no such script"
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, f"{script}: syntax error"
        return "bash: the script exists and parses"
    if name == "cp":
        assert (REPO / words[1]).exists(), f"cp {words[1]}: no such file"
        return "cp: the source exists"
    if name == "python3" and words[1] == "-c":
        compile(words[2], "<README>", "exec")
        assert section_covered, "inline Python outside a block that a test runs"
        return "python3 -c: compiles; run with its block"
    if runnable:
        return f"{name}: run with its block"
    if section_covered:
        return f"{name}: run with its section by {COVERED_ELSEWHERE['section: ' + block.section][0]}"
    raise AssertionError(f"README line {block.line}: `{shlex.join(words)}`: this test cannot check it; "
                         "make the block runnable, or teach this test to check it")


def test_every_shell_command_is_checked():
    routes = _api_routes()
    checked = []
    for block in _shell_blocks():
        for words in shell_commands(block.text):
            try:
                checked.append((block.line, shlex.join(words), _check(words, block, routes)))
            except Exception as e:  # noqa: BLE001 - say which README line, whatever went wrong
                pytest.fail(f"README line {block.line}: `{shlex.join(words)}`: {type(e).__name__}: {e}")
    assert len(checked) >= 10, checked


def test_commands_covered_elsewhere_are_run_there():
    text = README.read_text()
    for command, (path, evidence) in COVERED_ELSEWHERE.items():
        if command.startswith("section: "):
            assert f"## {command.removeprefix('section: ')}\n" in text, command
        else:
            assert command in text, f"COVERED_ELSEWHERE lists {command!r}, which the README no longer has"
        assert evidence in (REPO / path).read_text(), f"{path} no longer runs {command!r}"


# --- configuration and links ----------------------------------------------------------------------


def _configuration_section() -> str:
    text = README.read_text()
    start = text.index("\n## Configuration\n")
    return text[start:text.index("\n## ", start + 1)]


def _variables_read_in_the_code() -> set[str]:
    found = set()
    for package in ("diffusion", "model_store", "imagegen", "service", "worker"):
        for path in (REPO / package).rglob("*.py"):
            found |= set(re.findall(r"""(?:environ\.get|environ\[|getenv)\(?\s*["']([A-Z][A-Z0-9_]*)["']""",
                                    path.read_text()))
    return found


def test_configuration_lists_every_variable_with_its_default():
    table = _configuration_section()
    rows = {}
    for line in table.splitlines():
        if line.startswith("| `"):
            for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", line.split("|")[1]):
                rows[name] = line
    wanted = _documented_variables() | _variables_read_in_the_code()
    assert wanted <= set(rows), f"README Configuration lacks {sorted(wanted - set(rows))}"
    for name, info in settings_variables().items():
        default = info.default
        if isinstance(default, bool) or default in (None, ""):
            continue
        # ints as written (1048576, not 1.04858e+06); floats without trailing zeros (5.0 -> 5)
        shown = f"{default:g}" if isinstance(default, float) else str(default)
        assert f"`{shown}`" in rows[name].split("|")[2], f"{name}: README says {rows[name]!r}, the code {default!r}"


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(line.lstrip("#")) for line in path.read_text().splitlines() if line.startswith("#")}


@pytest.mark.parametrize("document", ["README.md", "docs/deploy.md", "docs/kubernetes.md"])
def test_local_links_resolve(document):
    path = REPO / document
    for target in re.findall(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)", path.read_text()):
        if re.match(r"^[a-z]+://", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        assert linked.exists(), f"{document}: link to {target}: no such file"
        if anchor:
            assert anchor in _anchors(linked), f"{document}: link to {target}: no such heading"


def test_the_quality_summary_is_the_shipped_cards():
    from evaluation.readme import README_BEGIN, README_END, readme_quality
    from model_store import ModelStore

    text = README.read_text()
    block = text.split(README_BEGIN, 1)[1].split(README_END, 1)[0].strip()
    assert text.index(README_BEGIN) > text.index("## Samplers and guidance")
    assert block == readme_quality(ModelStore().resolve("fashion-mnist")).strip()
