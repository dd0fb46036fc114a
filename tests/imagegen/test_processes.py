"""imagegen.processes: the process group of `imagegen up`, the benchmarks and the end-to-end tests."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from imagegen.processes import Processes, log_tail

# a child that says it is up, then ignores SIGTERM (as a worker finishing a long job would)
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
POLITE = "import time; print('up', flush=True); time.sleep(60)"


def _until(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_dead_child_is_reported_with_its_status_and_last_log_lines(tmp_path):
    group = Processes(tmp_path)
    group.start("crash", [sys.executable, "-c",
                          "print('\\n'.join(f'line {i}' for i in range(50))); raise SystemExit(3)"],
                dict(os.environ))
    group.start("alive", [sys.executable, "-c", POLITE], dict(os.environ))
    try:
        _until(lambda: group.dead() != {})
        assert group.dead() == {"crash": 3}
        with pytest.raises(RuntimeError, match=r"processes died: \{'crash': 3\}") as e:
            group.check_alive()
        report = str(e.value)
        # the last 30 lines of the log, not the first
        assert "line 49" in report and "line 20" in report and "line 19\n" not in report
        assert "--- alive (exit status None)" in report
        assert log_tail(group.log("crash"), 2) == ["line 48", "line 49"]
    finally:
        group.stop()


def test_stop_terminates_then_kills_what_outlives_the_grace(tmp_path):
    group = Processes(tmp_path, grace=1.0)
    for name, code in (("polite", POLITE), ("stubborn", STUBBORN)):
        group.start(name, [sys.executable, "-c", code], dict(os.environ), cwd=tmp_path, own_group=True)
    _until(lambda: all(log_tail(group.log(n)) == ["up"] for n in ("polite", "stubborn")))
    # own_group: each child leads a process group of its own
    assert all(os.getpgid(p.pid) == p.pid for p in group.running.values())
    killed = []
    statuses = group.stop(on_kill=killed.append)
    assert statuses == {"polite": -signal.SIGTERM, "stubborn": None} and killed == ["stubborn"]
    assert all(p.poll() is not None for p in group.running.values())


def test_an_unreadable_log_has_no_lines(tmp_path):
    assert log_tail(tmp_path / "missing.log") == []
