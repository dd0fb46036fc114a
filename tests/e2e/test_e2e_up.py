"""The README's first command, run as a new user would, serves a PNG for a curl request.

`imagegen up` with no REDIS_URL (so it starts its own redis-server), the tiny random models as the
store, and the real `curl` binary as the user's client; then Ctrl-C (SIGINT), and nothing it started
may be left running.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from e2e_support import imagegen_command, service_env, tail

from imagegen.processes import lines_of

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

UP_TIMEOUT_S = 180.0
"""Most seconds from `imagegen up` to its URL (a private Redis, the API, a worker importing torch)."""

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def children_of(pid: int) -> dict[int, str]:
    """The processes whose parent is `pid`, with their command lines (from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        # the command name in parentheses may hold spaces: the parent pid is the 2nd field after it
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found[int(entry.name)] = cmdline
    return found


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie is gone too, only not yet reaped
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"


def port_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def curl(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([shutil.which("curl"), "-sS", "--fail-with-body", *args], capture_output=True,
                          timeout=timeout)


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs the curl binary (apt-get install -y curl)")
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the started processes through /proc")
def test_readme_first_command_serves_a_png_for_curl(tmp_path, tiny_store_root):
    from service.redis_local import free_port

    port = free_port()
    env = service_env(tiny_store_root, XDG_CACHE_HOME=str(tmp_path / "cache"))
    assert "REDIS_URL" not in env
    err = tmp_path / "up.stderr"
    with open(err, "wb") as stderr:
        up = subprocess.Popen([*imagegen_command(), "up", "--port", str(port)], stdout=subprocess.PIPE,
                              stderr=stderr, stdin=subprocess.DEVNULL, text=True, env=env, cwd=tmp_path)
    try:
        out = lines_of(up.stdout)
        printed: list[str] = []
        deadline = time.monotonic() + UP_TIMEOUT_S
        while not (printed and printed[-1].startswith("imagegen is up: ")):
            try:
                line = out.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            assert line is not None, (f"`imagegen up` printed no URL within {UP_TIMEOUT_S:g} s (exit status "
                                      f"{up.poll()})\nstdout: {printed}\nstderr: {tail(err)}\n"
                                      f"{tail(tmp_path / f'cache/imagegen/logs/{port}/worker-1.log')}")
            printed.append(line)
        url = f"http://127.0.0.1:{port}"
        assert printed[-1] == f"imagegen is up: {url}  (docs: {url}/docs)"
        redis_port = int(re.search(r"started redis-server on 127\.0\.0\.1:(\d+)", "\n".join(printed)).group(1))

        # what a user pastes: submit and wait, then download the first image
        done = curl("-X", "POST", f"{url}/generate?wait=30", "-H", "Content-Type: application/json",
                    "-d", json.dumps({"class_label": "sneaker", "num_images": 2}))
        assert done.returncode == 0, (done.stdout, done.stderr)
        job = json.loads(done.stdout)
        assert job["status"] == "succeeded", job
        image = tmp_path / "0.png"
        fetched = curl("-o", str(image), url + job["images"][0]["url"])
        assert fetched.returncode == 0, fetched.stderr
        assert image.read_bytes().startswith(PNG_MAGIC)

        started = children_of(up.pid)
        kinds = sorted("redis" if "redis-server" in c else c.split(" imagegen ")[-1].split()[0]
                       for c in started.values())
        assert kinds == ["redis", "serve", "worker"], started

        up.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            status = up.wait(timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`imagegen up` still running 90 s after SIGINT; its children: {children_of(up.pid)}\n"
                        f"stderr: {tail(err)}\nworker: {tail(tmp_path / f'cache/imagegen/logs/{port}/worker-1.log')}\n"
                        f"api: {tail(tmp_path / f'cache/imagegen/logs/{port}/api.log')}")
        assert status == 0, tail(err)
        assert [pid for pid in started if not gone(pid)] == [], started
        assert port_closed(port) and port_closed(redis_port)
        assert "imagegen up: stopping" in err.read_text()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
