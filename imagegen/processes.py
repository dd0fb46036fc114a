"""Child processes with a log file each, started, watched and stopped together: the API, the workers
and the like that `imagegen up` runs, and that the benchmarks and the tests run as processes."""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

LOG_TAIL_LINES = 30
"""Lines of each log that `report` shows."""


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last `lines` lines of a log file, without their newlines ([] where it cannot be read)."""
    try:
        with open(path, errors="replace") as f:
            return [line.rstrip("\n") for line in deque(f, maxlen=lines)]
    except OSError:
        return []


def lines_of(stream: IO[str]) -> queue.Queue:
    """The lines of a child's output as they come, through a queue (so that reading them can time
    out), without their newlines; None once the stream ends."""
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


@dataclass
class Processes:
    """Named child processes, each writing stdout and stderr to `logs/<name>.log`, in start order."""

    logs: Path
    grace: float = 45.0  # seconds `stop` gives them after SIGTERM (a worker's shutdown grace is 30 s)
    running: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: dict[str, str], cwd: Path | None = None,
              own_group: bool = False) -> subprocess.Popen:
        """Start `argv` as `name`; with `own_group`, in a process group of its own, so that a Ctrl-C in
        the terminal reaches only the parent, which then stops the children in its own order."""
        with open(self.log(name), "wb") as out:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                       env=env, cwd=cwd, process_group=0 if own_group else None)
        self.running[name] = process
        return process

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def dead(self) -> dict[str, int]:
        """The exit status of each child that has exited."""
        return {n: p.returncode for n, p in self.running.items() if p.poll() is not None}

    def report(self, lines: int = LOG_TAIL_LINES) -> str:
        """Each child's exit status (None: running) and the last lines of its log, for an error message."""
        return "\n".join(f"--- {name} (exit status {p.poll()}), {self.log(name)}:\n"
                         + "\n".join(log_tail(self.log(name), lines)) for name, p in self.running.items())

    def check_alive(self) -> None:
        """RuntimeError with the report if any child has exited."""
        dead = self.dead()
        if dead:
            raise RuntimeError(f"processes died: {dead}\n{self.report()}")

    def stop(self, on_kill: Callable[[str], None] | None = None) -> dict[str, int | None]:
        """SIGTERM to all (what `docker stop` sends), then wait up to `grace` seconds for them together
        and SIGKILL what is left (`on_kill(name)` first); the exit statuses, None where killed."""
        for p in self.running.values():
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + self.grace
        statuses: dict[str, int | None] = {}
        for name, p in self.running.items():
            try:
                statuses[name] = p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                if on_kill is not None:
                    on_kill(name)
                p.kill()
                p.wait()
                statuses[name] = None
        return statuses
