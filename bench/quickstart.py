"""Benchmark 5, the CPU quick start: the README's first command (`.venv/bin/imagegen up`, with no
REDIS_URL, so it starts its own redis-server) from a cold start (nothing of the service running), then
a 4-image request with the default settings, as the README's curl example sends it. Reports the time
from the command's start to its "imagegen is up" line, to the first PNG of that request, and the time
of the request alone (POST to the first PNG read). Then Ctrl-C (SIGINT), as a user stops it, and
checks that nothing it started is left; anything left is killed by its process id.

    python -m bench.quickstart              # writes docs/benchmarks/quickstart.json
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import render
from bench.common import PNG_MAGIC, REPO, environment, exit_on_sigterm, resolve_device, summary, write_result
from imagegen.processes import lines_of

UP_TIMEOUT_S = 300.0
REQUEST = {"class_label": "sneaker", "num_images": 4}
"""The README's first request, every other field left to its default."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.quickstart", description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=1, help="cold starts, one after another (default: 1)")
    p.add_argument("--model-store", type=Path, default=None,
                   help="MODEL_STORE for the service (default: unset, the shipped store)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                   help="`imagegen up --device` (default: not given, as in the README)")
    p.add_argument("--up-timeout", type=float, default=UP_TIMEOUT_S,
                   help=f"most seconds to the 'imagegen is up' line (default: {UP_TIMEOUT_S:g})")
    p.add_argument("--out", type=Path, default=None, help="JSON result (default: docs/benchmarks/quickstart.json)")
    p.add_argument("--md", type=Path, default=None, help="markdown table (default: the JSON's path with .md)")
    return p.parse_args(argv)


def imagegen_up() -> list[str]:
    """`.venv/bin/imagegen up` as the README says: the script beside this interpreter, else `-m imagegen`."""
    script = Path(sys.executable).with_name("imagegen")
    return [str(script), "up"] if script.exists() else [sys.executable, "-m", "imagegen", "up"]


def free_port() -> int:
    from service.redis_local import free_port as free

    return free()


def children_of(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name in parentheses may hold spaces: the parent pid is the 2nd field after it
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def one_start(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """One cold start, one request, one Ctrl-C."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["XDG_CACHE_HOME"] = str(tmp / "cache")  # its Redis data and logs, fresh for this run
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    if args.model_store is not None:
        env["MODEL_STORE"] = str(args.model_store)
    argv = [*imagegen_up(), "--port", str(port)] + (["--device", args.device] if args.device else [])
    url = f"http://127.0.0.1:{port}"
    printed: list[str] = []
    stderr_path = tmp / "up.stderr"
    t0 = time.perf_counter()
    with open(stderr_path, "wb") as stderr:
        up = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, text=True,
                              env=env, cwd=REPO)
    started: list[int] = []
    try:
        out = lines_of(up.stdout)
        deadline = time.monotonic() + args.up_timeout
        while not (printed and printed[-1].startswith("imagegen is up: ")):
            try:
                line = out.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise RuntimeError(f"`{' '.join(argv)}` printed no URL within {args.up_timeout:g} s (exit status "
                                   f"{up.poll()}); stdout {printed}; stderr {stderr_path.read_text()[-2000:]}")
            printed.append(line)
        up_s = time.perf_counter() - t0
        with httpx.Client(base_url=url, timeout=180) as http:
            t_req = time.perf_counter()
            r = http.post("/generate", params={"wait": 60}, json=REQUEST)  # the API's longest wait
            doc = r.json()
            deadline = time.monotonic() + 120
            while r.status_code in (200, 202) and doc.get("status") in ("queued", "running") \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
                doc = http.get(f"/jobs/{doc['id']}").json()
            if r.status_code not in (200, 202) or doc.get("status") != "succeeded":
                raise RuntimeError(f"the request did not succeed: {r.status_code} {json.dumps(doc)[:500]}")
            png = http.get(doc["images"][0]["url"])
            t_png = time.perf_counter()
            if not png.content.startswith(PNG_MAGIC):
                raise RuntimeError("the first image is not a PNG")
            grid = http.get(doc["grid_url"])
            t_grid = time.perf_counter()
        started = children_of(up.pid)
        up.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            exit_status = up.wait(timeout=120)
        except subprocess.TimeoutExpired:
            logs = sorted((tmp / "cache").rglob("*.log"))
            tails = "; ".join(f"{p.name}: {p.read_text(errors='replace')[-1500:]}" for p in logs)
            raise RuntimeError(f"`imagegen up` still running 120 s after SIGINT; children {children_of(up.pid)}; "
                               f"stderr {stderr_path.read_text()[-2000:]}; {tails}") from None
    finally:
        if up.poll() is None:
            started = started or children_of(up.pid)
            up.kill()
            up.wait()
        time.sleep(0.5)
        left = [pid for pid in started if alive(pid)]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    return {"up_s": up_s, "first_png_s": t_png - t0, "request_s": t_png - t_req, "grid_s": t_grid - t_req,
            "grid_bytes": len(grid.content), "request": doc["request"], "exit_status": exit_status,
            "children": len(started), "left_running": len(left), "printed": printed}


def _relative(argv: list[str]) -> list[str]:
    out = []
    for a in argv:
        try:
            out.append(str(Path(a).relative_to(REPO)))
        except ValueError:
            out.append(a)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    env = environment(resolve_device(args.device or "auto"))
    runs = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-quickstart-") as tmp:
            run = one_start(args, Path(tmp))
        runs.append(run)
        print(f"bench.quickstart: run {i + 1}: up in {run['up_s']:.1f} s, first PNG {run['first_png_s']:.1f} s after "
              f"the start, the request alone {run['request_s']:.2f} s", flush=True)
    result = {
        "benchmark": "quickstart",
        "environment": env,
        "settings": {"command": " ".join(_relative(imagegen_up())) + " --port <free port>"
                                + (f" --device {args.device}" if args.device else ""),
                     "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                     "request": REQUEST, "runs": args.runs, "model_store": str(args.model_store or "shipped"),
                     "cold_start": "nothing of the service running, a fresh XDG_CACHE_HOME (its Redis data and logs); "
                                   "the OS file cache is as the machine left it",
                     "first_png": "from starting the command to the first image's PNG read back; the request is sent "
                                  "once the command prints its URL",
                     "request_alone": "POST /generate?wait= to the first image's PNG read back"},
        "figures": {"up_s": summary([r["up_s"] for r in runs]),
                    "first_png_s": summary([r["first_png_s"] for r in runs]),
                    "request_s": summary([r["request_s"] for r in runs])},
        "runs": runs,
    }
    write_result("quickstart", result, args.out, args.md, render.quickstart, cpu_suffix=False)
    return 0 if all(r["left_running"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
