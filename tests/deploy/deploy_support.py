"""Helpers of the deployment tests: the compose file, `.env.example`, the Dockerfiles and the README
read as a Docker engine, Docker Compose and a newcomer's shell would read them, plus the processes
that stand in for the containers. (Not in conftest.py, so that the test modules can import it by
name, as tests/e2e does with e2e_support.)

No Docker engine runs here: what compose and Docker would do is reproduced in the few places it
matters (variable interpolation, profiles, the instruction syntax), and kept small.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shlex
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from imagegen.processes import Processes  # noqa: F401 - the tests' process group

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
API_DOCKERFILE = REPO / "docker" / "api.Dockerfile"
WORKER_DOCKERFILE = REPO / "docker" / "worker.Dockerfile"
README = REPO / "README.md"

# --- pyproject ---------------------------------------------------------------------------------


def pyproject() -> dict[str, Any]:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_closure(requirements: list[str]) -> set[str]:
    """Normalized names of the distributions that `pip install <requirements>` puts in an empty
    environment, as far as this environment's installed metadata says (markers evaluated here)."""
    from packaging.requirements import Requirement

    seen: set[tuple[str, str]] = set()
    names: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = normalize(req.name)
        wanted = [(name, extra) for extra in ("", *sorted(req.extras)) if (name, extra) not in seen]
        if not wanted:
            continue
        seen.update(wanted)
        names.add(name)
        try:
            requires = importlib.metadata.requires(req.name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here, so nothing here can import it either
        for text in requires:
            dep = Requirement(text)
            if dep.marker is None or any(dep.marker.evaluate({"extra": extra}) for _, extra in wanted):
                todo.append(dep)
    return names


# --- compose -----------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}"
                       r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*)|(?P<escaped>\$))")


def load_compose() -> dict[str, Any]:
    """docker-compose.yml as YAML (merge keys `<<` resolved, variables left as written)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


def compose_variables(text: str) -> set[str]:
    """The names of the variables a compose file interpolates (`${X}`, `${X:-d}`, `$X`; not `$$X`)."""
    return {m.group("braced") or m.group("bare") for m in _VARIABLE.finditer(text) if not m.group("escaped")}


class InterpolationError(ValueError):
    """A `${X:?message}` whose variable is unset or empty: compose refuses to start with `message`."""


def interpolate(value: Any, variables: dict[str, str]) -> Any:
    """`value` (a string, or lists and mappings of them) with compose's interpolation applied."""
    if isinstance(value, dict):
        return {k: interpolate(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, variables) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match) -> str:
        if m.group("escaped"):
            return "$"
        name = m.group("braced") or m.group("bare")
        op, arg = m.group("op") or "", m.group("arg") or ""
        current = variables.get(name)
        present = current is not None and (current != "" or not op.startswith(":"))
        if op.endswith("-"):
            return current if present else arg
        if op.endswith("?"):
            if not present:
                raise InterpolationError(f"{name}: {arg}")
            return current
        if op.endswith("+"):
            return arg if present else ""
        return current or ""

    return _VARIABLE.sub(one, value)


def active_services(compose: dict[str, Any], profiles: set[str]) -> set[str]:
    """The services `docker compose --profile P... up` starts: those without a profile, and those
    with one of `profiles`."""
    return {name for name, service in compose["services"].items()
            if not service.get("profiles") or set(service["profiles"]) & profiles}


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's `environment:`, in either of its two spellings."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


# --- .env.example ------------------------------------------------------------------------------

_ENV_LINE = re.compile(r"^(?P<comment>#\s*)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


@dataclass(frozen=True)
class EnvEntry:
    """One variable of `.env.example`: set (a line compose passes on) or shown commented out."""

    name: str
    value: str
    commented: bool


def env_example() -> dict[str, EnvEntry]:
    """The variables `.env.example` documents, by name."""
    entries = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = _ENV_LINE.match(line.strip())
        if m:
            entries[m["name"]] = EnvEntry(m["name"], m["value"], bool(m["comment"]))
    return entries


def settings_variables() -> dict[str, Any]:
    """Every environment variable the API's Settings and the workers' WorkerSettings read, with the
    field it fills."""
    from contract.settings import Settings
    from worker.settings import WorkerSettings

    found = {}
    for cls in (Settings, WorkerSettings):
        prefix = cls.model_config.get("env_prefix", "")
        for name, info in cls.model_fields.items():
            found[(prefix + (info.alias or name)).upper()] = info
    return found


# --- Dockerfiles -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: its keyword (upper case), its argument text, its first line."""

    keyword: str
    args: str
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of a CMD/ENTRYPOINT/RUN in exec form, else None (shell form)."""
        text = self.args
        if self.keyword == "HEALTHCHECK":
            text = text.split("CMD", 1)[1] if "CMD" in text else ""
        try:
            value = json.loads(text.strip())
        except ValueError:
            return None
        return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def parse_dockerfile(path: Path) -> list[Instruction]:
    """The instructions of a Dockerfile: comments dropped, `\\` continuations joined."""
    instructions, buffer, start = [], "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if buffer and line.startswith("#"):
            continue  # a comment line inside a continued instruction is dropped by Docker too
        if not buffer:
            start = number
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        buffer += line
        keyword, _, args = buffer.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
        buffer = ""
    assert not buffer, f"{path}: the last instruction ends in a continuation"
    return instructions


def env_of(instructions: list[Instruction]) -> dict[str, str]:
    """The variables the image's ENV instructions set (`ENV A=1 B=2` form)."""
    env = {}
    for ins in instructions:
        if ins.keyword == "ENV":
            for word in shlex.split(ins.args):
                name, _, value = word.partition("=")
                env[name] = value
    return env


def last(instructions: list[Instruction], keyword: str) -> Instruction | None:
    """The instruction that wins (Docker keeps the last CMD, USER, HEALTHCHECK...)."""
    found = [i for i in instructions if i.keyword == keyword]
    return found[-1] if found else None


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


# --- the README --------------------------------------------------------------------------------

_FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```\s*$", re.S | re.M)


@dataclass(frozen=True)
class CodeBlock:
    """A fenced block of the README: its info string's words, its text, its section and line."""

    info: tuple[str, ...]
    text: str
    section: str
    line: int

    @property
    def language(self) -> str:
        return self.info[0] if self.info else ""


def readme_sections(text: str | None = None) -> list[str]:
    """The `## ` headings, in order."""
    text = README.read_text() if text is None else text
    return [line[3:].strip() for line in text.splitlines() if line.startswith("## ")]


def readme_blocks(text: str | None = None) -> list[CodeBlock]:
    text = README.read_text() if text is None else text
    blocks = []
    for m in _FENCE.finditer(text):
        before = text[:m.start()]
        headings = [line[3:].strip() for line in before.splitlines() if line.startswith("## ")]
        blocks.append(CodeBlock(tuple(m["info"].split()), m["body"], headings[-1] if headings else "",
                                before.count("\n") + 1))
    return blocks


def block_in_section(section: str, language: str) -> CodeBlock:
    """The one block of `language` in the README section `section`."""
    found = [b for b in readme_blocks() if b.section == section and b.language == language]
    assert len(found) == 1, f"README section {section!r}: want one {language} block, found {len(found)}"
    return found[0]


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a shell block, as words: continuations joined, comments dropped, split
    at `&&`, `||`, `;` and `|` (a newcomer pastes the block; each of these runs on its own)."""
    commands: list[list[str]] = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        current: list[str] = []
        for token in lexer:
            if token in (";", "&&", "||", "|", "&"):
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(token)
        if current:
            commands.append(current)
    return commands


# --- processes that stand in for containers ----------------------------------------------------

STOP_TIMEOUT_S = 60.0
"""Most seconds a process gets to exit after SIGTERM (a worker's shutdown grace is 30 s)."""


def wait_for(url: str, processes: Processes, timeout: float, ok: tuple[int, ...] = (200,)) -> httpx.Response:
    """The first answer of GET `url` with a status in `ok`; fails with the logs if a process dies or
    time runs out."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        processes.check_alive()
        try:
            r = httpx.get(url, timeout=5)
            if r.status_code in ok:
                return r
            last = f"{r.status_code} {r.text}"
        except httpx.TransportError as e:
            last = repr(e)
        time.sleep(0.25)
    pytest.fail(f"GET {url}: no {ok} after {timeout:g} s (last: {last})\n{processes.report()}")
