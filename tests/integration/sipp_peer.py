"""SIPp as a real peer in integration tests: scripted calls (one per process unless told) from a scenario file in
tests/integration/sipp/ (SIPp's own XML), with `-key NAME VALUE` filling `[NAME]` in its messages
(keys must not shadow SIPp's own keywords such as [media_port]; they are not expanded in attributes,
so a scenario's bare <pause/> waits `pause_ms`, SIPp's -d).

    uas = SippPeer("late_offer_far_uas.xml", workdir, port, keys={"phone_port": 31002}).start()
    uac = SippPeer("late_offer_hold_uac.xml", workdir, port2, target=callflow.hostport).start()
    uac.wait(20); uas.wait(20)        # AssertionError with SIPp's error log when the scenario failed
    uas.received("ACK")               # every ACK the peer received, as parsed messages

A scenario fails (SIPp exits non-zero) when a message does not come in the order it expects, when a
`check_it` regular expression does not match, or when a retransmission times out. `-trace_msg`
keeps every message sent and received, so a test can assert on what the peer actually got.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.rig.proc import log_tail, stop_process, wait_until
from tests.rig.sipping import ensure_loopback

SCENARIOS = Path(__file__).resolve().parent / "sipp"
HOST = "127.0.0.1"
# one message of SIPp's -trace_msg log: a header line, then the message up to the separator
_ENTRY = re.compile(r"-{10,} [^\n]*\n(UDP message (?:received|sent)[^\n]*)\n\n(.*?)\n\n(?=-{10,}|\Z)", re.S)


def sipp_problem() -> str | None:
    """Why SIPp cannot be used here, or None."""
    return None if shutil.which("sipp") else "no sipp executable (Debian package sip-tester)"


@dataclass(frozen=True)
class SippMessage:
    """One logged message, read leniently (SIPp's log is for people: the test wants the start line,
    a few headers and the body, not a parser's verdict)."""

    start_line: str
    headers: dict[str, str]  # lower-case name -> first value
    body: str

    @classmethod
    def parse(cls, raw: str) -> SippMessage:
        head, _, body = raw.replace("\r\n", "\n").partition("\n\n")
        lines = head.split("\n")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        return cls(lines[0].strip(), headers, body.strip("\n"))

    @property
    def method(self) -> str | None:
        return None if self.start_line.startswith("SIP/2.0") else self.start_line.split(" ", 1)[0]

    @property
    def status(self) -> int | None:
        return int(self.start_line.split()[1]) if self.start_line.startswith("SIP/2.0") else None

    @property
    def cseq(self) -> int:
        return int(self.headers.get("cseq", "0").split()[0])

    @property
    def cseq_method(self) -> str:
        return self.headers.get("cseq", "0 ?").split()[-1]

    def media_port(self) -> int | None:
        """The port of the body's first m=audio line, or None without one."""
        match = re.search(r"^m=audio (\d+) ", self.body, re.M)
        return int(match.group(1)) if match else None


def _udp_bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return True
    return False


class SippPeer:
    """One SIPp process playing `calls` calls of a scenario (default one), as UAS (no target) or UAC
    (target given)."""

    def __init__(self, scenario: str, workdir: Path, port: int, *, target: str | None = None,
                 keys: dict[str, object] | None = None, pause_ms: int = 0, calls: int = 1,
                 auth: tuple[str, str] | None = None, timeout_s: int = 30) -> None:
        ensure_loopback(HOST)
        if target is not None:
            ensure_loopback(target.rsplit(":", 1)[0])
        self.scenario = SCENARIOS / scenario
        self.name = f"{self.scenario.stem}-{port}"
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.messages_path = self.dir / f"{self.name}_messages.log"
        self.errors_path = self.dir / f"{self.name}_errors.log"
        self.log_path = self.dir / f"{self.name}.log"
        self.argv = ["sipp", "-sf", str(self.scenario), "-i", HOST, "-p", str(port), "-m", str(calls), "-nostdin",
                     "-timeout", f"{timeout_s}s", "-recv_timeout", f"{timeout_s * 1000}",
                     "-trace_msg", "-message_file", str(self.messages_path),
                     "-trace_err", "-error_file", str(self.errors_path)]
        for name, value in (keys or {}).items():
            self.argv += ["-key", name, str(value)]
        if auth is not None:  # what [authentication] answers a digest challenge with
            self.argv += ["-au", auth[0], "-ap", auth[1]]
        if pause_ms:  # what a bare <pause/> waits
            self.argv += ["-d", str(pause_ms)]
        if target is not None:
            self.argv.append(target)
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SippPeer:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_listening(self, timeout: float = 10.0) -> None:
        """Wait until SIPp has bound its UDP port (before anything is sent to it)."""
        assert wait_until(lambda: _udp_bound(self.port), timeout), f"SIPp {self.name} did not bind its port:\n" \
            + log_tail(self.log_path)

    def wait(self, timeout: float) -> None:
        """Wait for the scenario to end; AssertionError unless it ended with every step passed."""
        assert self._proc is not None, "start() first"
        finished = wait_until(lambda: self._proc is not None and self._proc.poll() is not None, timeout)
        code = self._proc.poll()
        if not finished:
            self.stop()
        assert finished and code == 0, (
            f"SIPp {self.scenario.name} {'did not finish' if not finished else f'failed (exit {code})'}:\n"
            f"{log_tail(self.errors_path, 30)}\n---- last messages ----\n{self.messages_tail()}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            stop_process(self._proc)
        if getattr(self, "_log", None):
            self._log.close()

    def messages(self, direction: str | None = None) -> list[SippMessage]:
        """The SIP messages SIPp logged, in order; direction "received" or "sent" filters them."""
        try:
            text = self.messages_path.read_text(errors="replace")
        except OSError:
            return []
        return [SippMessage.parse(raw) for head, raw in _ENTRY.findall(text)
                if direction is None or f" {direction}" in head]

    def received(self, method: str) -> list[SippMessage]:
        """The requests of `method` the peer received, in order."""
        return [m for m in self.messages("received") if m.method == method]

    def received_responses(self, status: int, method: str) -> list[SippMessage]:
        """The responses with `status` to `method` requests the peer received, in order."""
        return [m for m in self.messages("received") if m.status == status and m.cseq_method == method]

    def messages_tail(self, chars: int = 3000) -> str:
        try:
            return self.messages_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "<no messages>"
