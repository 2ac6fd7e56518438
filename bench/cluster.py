"""Relayed media packets per CPU-second: rtpengine against Callflow's Python relay, same load, same run.

The load is bench/rtp_relay.py's: N simultaneous G.711 calls, 20 ms packets both ways (100 packets a
second per call into the relay, 100 out), sent from two generator sockets (all callers, all callees)
and spread over the 20 ms tick. The same generator drives, one after the other:

- the Python relay (runtime.media.relay.MediaRelay in its own process, on uvloop when installed),
  its calls set up directly on the relay (bench/rtp_relay.py's relay process);
- rtpengine-daemon (Debian's, user-space forwarding: --table=-1, N threads as given), its calls set
  up over the ng protocol by Callflow's own backend (runtime.media.rtpengine: offer + answer each).

For each it reads the relay process's CPU (user + system, all threads; /proc for rtpengine, getrusage
for the Python relay) over the measured seconds and counts the packets that came back out; the figure
is packets relayed per CPU-second, and their ratio. The machine is shared: run it when quiet, and
compare the two rows of one run rather than runs.

    python bench/cluster.py                         # N = 100, 300; 10 s each; about a minute
    python bench/cluster.py --calls 200 --seconds 5 --threads 2

Needs rtpengine-daemon (`apt-get install rtpengine-daemon`, or .ci/install-peers.sh).
Not measured here yet (see docs/scaling.md): calls per CPU-second of a node with each backend, and
the edge's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rtp_relay import HOST, Relay, run_traffic, udp_socket  # noqa: E402
from runtime.media.rtpengine import RtpengineBackend  # noqa: E402
from tests.rig.rtpengine import Rtpengine, rtpengine_problem  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def proc_cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of process ``pid``, all its threads (/proc/PID/stat fields 14, 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


class RtpengineUnderTest:
    """rtpengine started for the run, with the calls set up through Callflow's ng backend; answers
    `ask("cpu")` as bench/rtp_relay.py's relay process does, so run_traffic drives both alike."""

    def __init__(self, threads: int, workdir: Path) -> None:
        self.daemon = Rtpengine(free_udp_port(), (30000, 39999), workdir / "rtpengine.log", threads=threads,
                                log_level=4)
        self.daemon.start()
        self.loop = asyncio.new_event_loop()
        self.backend = RtpengineBackend(("127.0.0.1", self.daemon.ng_port))
        self.loop.run_until_complete(self.backend.start())
        self.sessions: list = []

    def alloc(self, n: int, caller_port: int, callee_port: int) -> list[list[int]]:
        """N calls: the caller's offer and the callee's answer; returns, per call, the rtpengine port
        the caller sends to and the one the callee sends to."""
        from runtime.sip.sdp import parse_sdp

        def sdp(port: int) -> bytes:
            return (f"v=0\r\no=- 1 1 IN IP4 {HOST}\r\ns=-\r\nc=IN IP4 {HOST}\r\nt=0 0\r\n"
                    f"m=audio {port} RTP/AVP 0\r\n").encode()

        async def setup() -> list[list[int]]:
            out = []
            for i in range(n):
                session = await self.backend.allocate(f"bench-{len(self.sessions)}-{i}")
                to_callee = await session.anchor(0, sdp(caller_port))
                to_caller = await session.anchor(1, sdp(callee_port))
                self.sessions.append(session)
                out.append([parse_sdp(to_caller).media[0].port, parse_sdp(to_callee).media[0].port])
            return out

        return self.loop.run_until_complete(setup())

    def ask(self, command: str) -> dict[str, float]:
        assert command == "cpu"
        user, system = proc_cpu(self.daemon.pid or 0)
        # packets relayed are counted by the generator; a huge figure here lets run_traffic settle on it
        return {"user": user, "sys": system, "relayed": 1e18, "dropped": 0, "locked": 2 * len(self.sessions)}

    def free(self) -> None:
        for session in self.sessions:
            session.close()
        self.sessions.clear()
        self.loop.run_until_complete(asyncio.sleep(0.5))  # the deletes' replies

    def stop(self) -> None:
        self.loop.run_until_complete(self.backend.close())
        self.loop.close()
        self.daemon.stop()


def measure(name: str, relay: object, n: int, caller: socket.socket, callee: socket.socket,
            warmup: float, seconds: float) -> dict[str, float]:
    ports = relay.alloc(n, caller.getsockname()[1], callee.getsockname()[1])  # type: ignore[attr-defined]
    result = run_traffic(relay, caller, callee, ports, warmup, seconds)  # type: ignore[arg-type]
    relay.free()  # type: ignore[attr-defined]
    cpu_seconds = result["cpu"] * result["wall"]
    result["per_cpu_second"] = result["received"] / cpu_seconds if cpu_seconds else float("inf")
    result["loss"] = 1 - result["received"] / result["sent"] if result["sent"] else 0.0
    print(f"{name:>12} {n:>6} {result['sent'] / result['wall']:>10.0f} {result['cpu']:>8.1%} "
          f"{result['loss']:>7.2%} {result['per_cpu_second']:>14,.0f}")
    return result


class PythonRelay(Relay):
    """bench/rtp_relay.py's relay process, with the alloc/free calls this script makes."""

    def alloc(self, n: int, caller_port: int, callee_port: int) -> list[list[int]]:
        return self.ask(f"alloc {n} {caller_port} {callee_port}")  # type: ignore[return-value]

    def free(self) -> None:
        self.ask("free")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", default="100,300", help="comma-separated N values")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per step")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1, help="rtpengine's --num-threads")
    args = parser.parse_args()
    problem = rtpengine_problem()
    if problem:
        sys.exit(f"bench/cluster.py: {problem}")

    workdir = Path(tempfile.mkdtemp(prefix="callflow-bench-cluster-"))
    python_relay = PythonRelay("uvloop")
    engine = RtpengineUnderTest(args.threads, workdir)
    caller, callee = udp_socket(), udp_socket()
    print(f"{os.cpu_count()} CPUs; {args.seconds:g} s per step; rtpengine {args.threads} thread(s), user space")
    header = f"{'relay':>12} {'calls':>6} {'pkts/s in':>10} {'cpu':>8} {'loss':>7} {'pkts/CPU-s':>14}"
    print(header)
    print("-" * len(header))
    try:
        for n in (int(x) for x in args.calls.split(",")):
            ours = measure("python", python_relay, n, caller, callee, args.warmup, args.seconds)
            theirs = measure("rtpengine", engine, n, caller, callee, args.warmup, args.seconds)
            ratio = theirs["per_cpu_second"] / ours["per_cpu_second"] if ours["per_cpu_second"] else float("inf")
            print(f"{'':>12} {n:>6} rtpengine relays {ratio:.1f}x the packets per CPU-second of the Python relay")
    finally:
        python_relay.stop()
        engine.stop()
        caller.close()
        callee.close()


if __name__ == "__main__":
    main()
