"""A throwaway rtpengine (Debian's `rtpengine-daemon`, Sipwise's media relay) on 127.0.0.1: user-space
forwarding only (--table=-1: no kernel module), its ng control protocol on a free UDP port, its media
ports in a range of its own, no config file, logging to its own file. Started and stopped by the test.

    relay = Rtpengine(ng_port=ports.port(), media_ports=ports.rtp_range(40), log=tmp_path / "rtpengine.log")
    relay.start()                 # returns once it answers an ng ping
    relay.address                 # "127.0.0.1:PORT", for `callflow run --media rtpengine:ADDRESS`
    relay.stop()
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

from .proc import describe, stop_process, wait_until

HOST = "127.0.0.1"


def rtpengine_binary() -> str | None:
    """The daemon (RIG_RTPENGINE overrides the one on PATH), or None."""
    override = os.environ.get("RIG_RTPENGINE")
    if override:
        return override if os.access(override, os.X_OK) else None
    return shutil.which("rtpengine")


def rtpengine_problem() -> str | None:
    if rtpengine_binary() is None:
        return "no rtpengine executable (Debian package rtpengine-daemon)"
    try:
        import bencodepy  # noqa: F401
    except ImportError:
        return "bencode.py is not installed (pip install -e .)"
    return None


def ng_ping(port: int, timeout: float = 0.3) -> bool:
    """Whether an rtpengine answers an ng `ping` on HOST:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        cookie = os.urandom(4).hex().encode()
        try:
            sock.sendto(cookie + b" d7:command4:pinge", (HOST, port))
            data = sock.recv(4096)
        except OSError:
            return False
    return data.startswith(cookie + b" ") and b"pong" in data


class Rtpengine:
    def __init__(self, ng_port: int, media_ports: tuple[int, int], log: Path, threads: int = 1,
                 log_level: int = 6) -> None:
        self.ng_port = ng_port
        self.log_level = log_level
        self.media_ports = media_ports
        self.log = log
        self.threads = threads
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.ng_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def command(self) -> list[str]:
        binary = rtpengine_binary()
        assert binary is not None, rtpengine_problem()
        return [binary, "--config-file=none", "--foreground", "--log-stderr", f"--log-level={self.log_level}",
                "--table=-1", f"--interface={HOST}", f"--listen-ng={HOST}:{self.ng_port}",
                f"--port-min={self.media_ports[0]}", f"--port-max={self.media_ports[1]}",
                f"--num-threads={self.threads}", "--delete-delay=0", "--timeout=60"]

    def start(self, timeout: float = 10.0) -> Rtpengine:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "wb")  # noqa: SIM115 - the child holds it; closed with the process
        try:
            self._proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            out.close()
        proc = self._proc
        if not wait_until(lambda: proc.poll() is not None or ng_ping(self.ng_port), timeout) \
                or proc.poll() is not None:
            self.stop()
            raise AssertionError("rtpengine did not start" + describe("rtpengine", self.log))
        return self

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
            self._proc = None
