"""Process helpers shared by the peers: bounded stops, log tails and clear failure messages."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

LOG_TAIL_LINES = 40


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a peer's log, for failure messages (never raises)."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<no log at {path}: {exc}>"
    rows = []
    for line in text.split("\n"):
        # baresip redraws its call status line with '\r': keep what a terminal would show last
        segments = [seg for seg in line.split("\r") if seg.strip()]
        rows.append(segments[-1] if segments else "")
    while rows and not rows[-1]:
        rows.pop()
    return "\n".join(rows[-lines:])


def describe(name: str, log: Path) -> str:
    """Failure-message suffix naming the peer and showing its log tail."""
    return f"\n---- last lines of {name} log ({log}) ----\n{log_tail(log)}\n---- end of {name} log ----"


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def stop_process(proc: subprocess.Popen[bytes], *, graceful: tuple[float, ...] = (3.0,),
                 kill_timeout: float = 5.0) -> int | None:
    """Stop a child we started: one SIGTERM per entry of `graceful` (waiting that long), then SIGKILL.

    The child runs in its own session (start_new_session=True), so the final SIGKILL goes to its
    process group: Kamailio's worker processes must not outlive a test run.
    """
    if proc.poll() is not None:
        return proc.returncode
    for wait_s in graceful:
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            break
        try:
            return proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    try:
        return proc.wait(timeout=kill_timeout)
    except subprocess.TimeoutExpired:
        return None


def reap_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL whatever is left of the child's own process group (e.g. orphaned workers)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
