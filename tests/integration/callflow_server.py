"""Callflow under test: the real `callflow run` command in a child process, read through its log.

Tests assert on what an operator sees: the logfmt event lines (`event=hangup call=... channel=ZERO`).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.rig.ports import ports
from tests.rig.proc import log_tail, wait_until
from tests.rig.sipping import options_ping

SDK_EVENTS = frozenset({"created", "incoming", "connecting", "connected", "hangup", "failed", "closed"})
_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_logfmt(line: str) -> dict[str, str]:
    out = {}
    for key, value in _PAIR.findall(line):
        if value.startswith('"'):
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        out[key] = value
    return out


class CallflowServer:
    def __init__(self, flow_text: str, workdir: Path, port: int, rtp_range: tuple[int, int],
                 env: dict[str, str] | None = None, extra_args: list[str] | None = None) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.flow_path = self.dir / "main.flow"
        self.flow_path.write_text(flow_text)
        self.port = port
        self.rtp_range = rtp_range
        self.log_path = self.dir / "callflow.log"
        self.env = env or {}
        self.extra_args = extra_args or []
        # each server its own control endpoint, so parallel tests never meet on the default port
        if "--control" not in self.extra_args:
            self.extra_args += ["--control", f"127.0.0.1:{ports.port()}"]
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def control(self) -> str:
        """The control endpoint's HOST:PORT (for `callflow status --control ...` and HTTP)."""
        return self.extra_args[self.extra_args.index("--control") + 1]

    @property
    def state_dir(self) -> Path:
        """Beside the script's folder, not in it (that one is watched for changes)."""
        return self.dir.with_name(self.dir.name + "-state")

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> CallflowServer:
        cmd = [sys.executable, "-m", "runtime.cli", "run", str(self.flow_path), "--listen", self.hostport,
               "--rtp-ports", f"{self.rtp_range[0]}-{self.rtp_range[1]}", *self.extra_args]
        if "--state-dir" not in self.extra_args:  # each server its own records and registrations
            cmd += ["--state-dir", str(self.state_dir)]
        env = dict(os.environ, **self.env)
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                      env=env, start_new_session=True)
        ok = wait_until(lambda: self._proc.poll() is not None or options_ping(self.port) == 200, timeout)
        if not ok or self._proc.poll() is not None:
            self.stop()
            raise AssertionError(f"callflow did not start ({shlex.join(cmd)}):\n{log_tail(self.log_path, 40)}")
        return self

    def stop(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if getattr(self, "_log", None):
            self._log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self, name: str | None = None, **match: str) -> list[dict[str, str]]:
        out = []
        for line in self.log_text().splitlines():
            if "event=" not in line:
                continue
            fields = parse_logfmt(line)
            if name is not None and fields.get("event") != name:
                continue
            if all(fields.get(k) == v for k, v in match.items()):
                out.append(fields)
        return out

    def wait_event(self, name: str, timeout: float = 10.0, since: int = 0, **match: str) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(name, **match)[since:]
            if found:
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"callflow: no event={name} {match} within {timeout:.0f} s; log tail:\n"
                             f"{log_tail(self.log_path, 40)}")

    def call_events(self, call: str) -> list[tuple[str, str | None]]:
        """The call's SDK events in order, as (event, channel) pairs (routing and log lines left out)."""
        return [(e["event"], e.get("channel")) for e in self.events(call=call) if e["event"] in SDK_EVENTS]

    def assert_alive(self) -> None:
        assert self._proc is not None and self._proc.poll() is None, (
            f"callflow died:\n{log_tail(self.log_path, 40)}")
        # logfmt carries a traceback in one quoted field; a bare one would be a crash outside logging
        tracebacks = [ln for ln in self.log_text().splitlines()
                      if ln.startswith("Traceback") or " traceback=" in ln]
        assert not tracebacks, f"callflow logged a traceback:\n{log_tail(self.log_path, 60)}"
