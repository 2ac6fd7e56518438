"""The shipped Kamailio edge (deploy/kamailio-edge.cfg) in front of Callflow nodes, on 127.0.0.1.

The config is used as shipped: the listen address and the nodes list come in as -A defines, the list
is written into the run folder. `start` returns once the edge answers an OPTIONS for itself; start the
nodes first (the dispatcher takes every node as up until its probes say otherwise).

    edge = Edge(ports.port(), ["127.0.0.1:5071", "127.0.0.1:5072"], tmp_path / "edge").start()
    edge.hostport                 # where phones register and call
    edge.log_text()               # "edge: INVITE ... -> node sip:127.0.0.1:5071", failover lines
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .kamailio import kamailio_binary
from .proc import describe, reap_group, stop_process, wait_until
from .sipping import options_ping

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "kamailio-edge.cfg"
HOST = "127.0.0.1"


class Edge:
    def __init__(self, port: int, nodes: list[str], run_dir: Path) -> None:
        self.port = port
        self.nodes = nodes
        self.run_dir = run_dir
        self.log_path = run_dir / "edge.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def hostport(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self, timeout: float = 15.0) -> Edge:
        binary = kamailio_binary()
        assert binary is not None, "kamailio is not installed"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        nodes = self.run_dir / "nodes.list"
        nodes.write_text("".join(f"1 sip:{node}\n" for node in self.nodes))
        defines = ["-A", f"EDGE_LISTEN=udp:{HOST}:{self.port}", "-A", f'DISPATCHER_LIST="{nodes}"']
        check = subprocess.run([binary, "-c", "-f", str(CONFIG), *defines], capture_output=True, text=True,
                               timeout=30)
        if check.returncode != 0:
            raise AssertionError(f"kamailio rejected {CONFIG}:\n{check.stdout}{check.stderr}")
        cmd = [binary, "-f", str(CONFIG), *defines, "-DD", "-E", "-n", "2", "-m", "64", "-M", "8",
               "-P", str(self.run_dir / "edge.pid"), "-Y", str(self.run_dir)]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.run_dir,
                                          start_new_session=True)
        proc = self._proc
        if not wait_until(lambda: proc.poll() is not None or options_ping(self.port, HOST, timeout=0.5) == 200,
                          timeout) or proc.poll() is not None:
            self.stop()
            raise AssertionError("the edge did not answer OPTIONS" + describe("edge", self.log_path))
        return self

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc)
            reap_group(self._proc)
            self._proc = None
