"""`imagegen up`: the whole service on one machine, in the foreground.

Redis (REDIS_URL when set, else a private `redis-server` started here), the API (`imagegen serve`) and
N workers (`imagegen worker`) as child processes with one environment; waits until `/readyz` says
ready, prints the URL and a curl example, and stays up until Ctrl-C or SIGTERM, then stops the API
and the workers, and Redis last (a stopping worker hands its running jobs back to it). If a child
dies, everything stops and its last log lines are printed. Children's output goes to log files
under the cache folder, one folder per port, so that two `up` on one machine keep theirs apart.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from contract.errors import UsageError
from imagegen.device import DEVICES
from imagegen.processes import Processes, log_tail
from imagegen.serve_cmd import DEFAULT_HOST, DEFAULT_PORT, check_port

READY_TIMEOUT_S = 180.0
"""Default wait for `/readyz`: a worker on a busy CPU machine needs a while to import torch and load."""

STOP_GRACE_S = 45.0
"""Seconds a child has to exit after SIGTERM before it is killed (a worker's default shutdown grace
to finish running jobs is 30 s)."""

LOG_TAIL_LINES = 20
"""Lines of a dead child's log printed before `up` exits."""

PROG = "imagegen up"

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Signals that stop `up` (and are ignored while it stops)."""


class Stop(Exception):
    """SIGTERM or SIGHUP arrived: stop like Ctrl-C does."""


class StartError(Exception):
    """Something `up` starts did not start; the message says what and why."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `imagegen up`."""
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address the API listens on; 0.0.0.0 for every interface (default: {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"API port, 1..65535 (default: {DEFAULT_PORT})")
    p.add_argument("--device", choices=list(DEVICES), default="auto",
                   help="where the workers run the models; auto picks cuda when available (default: auto)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes, 1..64 (default: 1)")
    p.add_argument("--ready-timeout", type=float, default=READY_TIMEOUT_S, metavar="S",
                   help=f"seconds to wait for the service to be ready (default: {READY_TIMEOUT_S:g})")


def cache_dir() -> Path:
    """Where `up` keeps its Redis folder and the children's logs: $XDG_CACHE_HOME/imagegen, else
    ~/.cache/imagegen."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "imagegen"


def public_url(host: str, port: int) -> str:
    """The URL a person on this machine opens: a wildcard address is reached over loopback."""
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind((host, port))
        except OSError as e:
            raise UsageError(f"--port {port}: cannot listen on {host}:{port} ({e.strerror}); "
                             "pick another with --port") from None


def _stop_children(children: Processes) -> None:
    """SIGTERM all, wait up to STOP_GRACE_S for them together, then SIGKILL what is left."""
    children.stop(on_kill=lambda name: print(
        f"{PROG}: {name} did not stop within {STOP_GRACE_S:g} s; killing it", file=sys.stderr))


class ChildDied(Exception):
    """A child exited while `up` was running."""

    def __init__(self, children: Processes, name: str, status: int) -> None:
        self.children, self.name, self.status = children, name, status

    @classmethod
    def check(cls, children: Processes) -> None:
        """Raise for the first child that has exited, if any."""
        for name, status in children.dead().items():
            raise cls(children, name, status)

    def report(self) -> None:
        log = self.children.log(self.name)
        print(f"{PROG}: error: {self.name} exited with status {self.status}; last lines of {log}:", file=sys.stderr)
        for line in log_tail(log, LOG_TAIL_LINES):
            print(f"  {line}", file=sys.stderr)


def _wait_ready(url: str, children: Processes, timeout: float) -> dict[str, Any]:
    """`/readyz`'s document once it answers 200; ChildDied if a child exits first; TimeoutError
    naming what is not ready once `timeout` passes."""
    import httpx

    deadline = time.monotonic() + timeout
    why = "the API did not answer"
    with httpx.Client(base_url=url, timeout=5.0) as http:
        while True:
            ChildDied.check(children)
            try:
                r = http.get("/readyz")
                if r.status_code == 200:
                    return r.json()
                why = _not_ready_reason(r)
            except httpx.TransportError as e:
                why = f"the API at {url} did not answer ({type(e).__name__})"
            if time.monotonic() > deadline:
                raise TimeoutError(f"not ready after {timeout:g} s: {why}")
            time.sleep(0.25)


def _not_ready_reason(response: Any) -> str:
    try:
        doc = response.json()
        return f"/readyz says: {doc.get('detail') or doc}"
    except ValueError:
        return f"/readyz answered {response.status_code}"


def _example_class(url: str) -> str | int:
    """A class name of the default model for the curl example ("sneaker" with Fashion-MNIST)."""
    from imagegen.client import Client

    try:
        with Client(url, timeout=5.0) as api:
            models = [m for m in api.models() if isinstance(m, dict) and m.get("kind", "generator") == "generator"]
    except Exception:  # noqa: BLE001 - the example is a courtesy: never fail `up` over it
        return 0
    models.sort(key=lambda m: not m.get("default"))
    names = [str(n).lower() for n in (models[0].get("class_names") or [])] if models else []
    return "sneaker" if "sneaker" in names else (names[0] if names else 0)


def curl_example(url: str, class_label: str | int) -> str:
    """Two ready-to-paste commands: submit and wait, then download the grid."""
    body = json.dumps({"class_label": class_label, "num_images": 4})
    return "\n".join([
        f"  curl -s -X POST '{url}/generate?wait=30' -H 'Content-Type: application/json' -d {shlex.quote(body)}",
        f"  curl -s -o grid.png {url}/jobs/<id from the answer>/grid.png",
    ])


def _on_signal(signum: int, frame: Any) -> None:
    raise Stop(signal.Signals(signum).name)


@contextmanager
def _signal_handlers() -> Iterator[None]:
    """Puts the handlers of STOP_SIGNALS back as they were on the way out."""
    saved = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def _start_redis(stack: ExitStack) -> str:
    """REDIS_URL, or the URL of a private redis-server that `stack` stops."""
    url = os.environ.get("REDIS_URL")
    if url:
        print(f"{PROG}: using REDIS_URL={url}", flush=True)
        return url
    from service.redis_local import LocalRedis, RedisNotFound

    data = cache_dir() / "redis"
    # the server inherits a blocked SIGINT, so that a Ctrl-C in the terminal (sent to the whole
    # foreground group) leaves it running until the workers have handed their jobs back to it
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        server = stack.enter_context(LocalRedis(data))
    except RedisNotFound as e:
        raise StartError(str(e)) from None
    except RuntimeError as e:  # it did not start: its log, named in the message, says why
        raise StartError(str(e)) from None
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    print(f"{PROG}: started redis-server on 127.0.0.1:{server.port} (data and log in {data})", flush=True)
    return server.url


def worker_threads(workers: int, cores: int | None = None) -> dict[str, str]:
    """The thread counts of `workers` worker processes sharing this machine's cores, where the
    environment sets none: each gets its share (torch's OpenMP threads and ONNX Runtime's), so that
    N workers do not run N x cores threads on the cores. One worker keeps the defaults (every core)."""
    cores = cores or os.cpu_count() or 1
    if workers <= 1:
        return {}
    share = str(max(1, cores // workers))
    return {name: os.environ.get(name, share) for name in ("OMP_NUM_THREADS", "WORKER_CPU_THREADS")}


def _run(args: argparse.Namespace, stack: ExitStack) -> int:
    url = public_url(args.host, args.port)
    redis_url = _start_redis(stack)
    logs = cache_dir() / "logs" / str(args.port)
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1", **worker_threads(args.workers)}
    imagegen = [sys.executable, "-m", "imagegen"]
    children = Processes(logs, grace=STOP_GRACE_S)
    # the stack stops the children before Redis, which it entered first; each child has a process
    # group of its own, so that a Ctrl-C in the terminal reaches only `up`, which stops them in order
    stack.callback(_stop_children, children)
    children.start("api", [*imagegen, "serve", "--host", args.host, "--port", str(args.port)], env, own_group=True)
    for i in range(1, args.workers + 1):
        children.start(f"worker-{i}", [*imagegen, "worker", "--device", args.device], env, own_group=True)
    print(f"{PROG}: started the API and {args.workers} worker(s); logs in {logs}", flush=True)

    try:
        _wait_ready(url, children, args.ready_timeout)
    except TimeoutError as e:
        print(f"{PROG}: error: {e} (logs in {logs})", file=sys.stderr)
        return 1
    print(f"imagegen is up: {url}  (docs: {url}/docs)", flush=True)
    print(f"try it:\n{curl_example(url, _example_class(url))}\nCtrl-C stops everything.", flush=True)
    while True:
        ChildDied.check(children)
        time.sleep(0.5)


def run(args: argparse.Namespace) -> int:
    """Start everything, stay in the foreground, stop everything on Ctrl-C, SIGTERM or a death."""
    check_port(args.port)
    if not 1 <= args.workers <= 64:
        raise UsageError(f"--workers must be between 1 and 64 (got {args.workers})")
    if args.ready_timeout <= 0:
        raise UsageError(f"--ready-timeout must be > 0 (got {args.ready_timeout:g})")
    _check_port_free(args.host, args.port)
    with _signal_handlers(), ExitStack() as stack:
        # SIGTERM (a service manager) and SIGHUP (a closed terminal) stop `up` as Ctrl-C does; SIGINT
        # gets the same handler explicitly, since Python installs none when it starts with SIGINT
        # ignored (as a shell without job control starts a command run with `&`)
        for s in STOP_SIGNALS:
            signal.signal(s, _on_signal)
        try:
            return _run(args, stack)
        except ChildDied as e:
            e.report()
            return 1
        except StartError as e:
            print(f"{PROG}: error: {e}", file=sys.stderr)
            return 1
        except (KeyboardInterrupt, Stop):
            print(f"{PROG}: stopping", file=sys.stderr, flush=True)
            return 0
        finally:
            # nothing may interrupt the stopping that the stack does next: a second Ctrl-C would
            # leave children and Redis behind
            for s in STOP_SIGNALS:
                signal.signal(s, signal.SIG_IGN)
