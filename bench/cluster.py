"""Relayed media packets per CPU-second: rtpengine against Callflow's Python relay, same load, same run.

The load is bench/rtp_relay.py's, with sequence numbers moving (see `traffic`): N simultaneous G.711
calls, 20 ms packets both ways (100 packets a second per call into the relay, 100 out), sent from two
generator sockets (all callers, all callees) and spread over the 20 ms tick.
The same generator drives, one after the other:

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
With --signalling RATES it first measures complete calls per CPU-second (SIPp, bench/calls_per_second.py's
steps) of a node with the Python relay, of a node with rtpengine, and of the edge (deploy/kamailio-edge.cfg,
one worker, a SIPp UAS as its only node, not probed: SIPp answers no OPTIONS).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import selectors
import shutil
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.rtp_relay import HOST, PAYLOAD, PTIME, SLOTS, Relay, udp_socket  # noqa: E402
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
    `ask("cpu")` as bench/rtp_relay.py's relay process does, so `traffic` drives both alike."""

    def __init__(self, threads: int, workdir: Path, log_level: int = 4) -> None:
        # its ports apart from the Python relay's (40000-49999 here, 30000-39999 in calls_per_second.py), from
        # the kernel's ephemeral ports (32768+: the SIP ports of the nodes and SIPp) and from the test rig's
        self.daemon = Rtpengine(free_udp_port(), (10000, 19999), workdir / "rtpengine.log", threads=threads,
                                log_level=log_level)
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
        return {"user": user, "sys": system}  # the packets relayed are counted by the generator

    def free(self) -> None:
        for session in self.sessions:
            session.close()
        self.sessions.clear()
        self.loop.run_until_complete(asyncio.sleep(0.5))  # the deletes' replies

    def stop(self) -> None:
        self.loop.run_until_complete(self.backend.close())
        self.loop.close()
        self.daemon.stop()


RTP = struct.Struct("!BBHII")  # V=2 no padding/extension/CSRC, PT 0 (PCMU), sequence, timestamp, SSRC


def traffic(relay: object, caller: socket.socket, callee: socket.socket, ports: list[list[int]], warmup: float,
            seconds: float) -> dict[str, float]:
    """bench/rtp_relay.py's load, with each stream's sequence number and timestamp moving on every packet as
    a phone's do (rtpengine drops runs of identical packets as a loop: rtp_relay.py's generator repeats one
    packet once the relay's latch is locked). CPU is read around the measured seconds and a settling
    drain (at most 2 s) of what the relay still has queued."""
    ssrc0 = int.from_bytes(os.urandom(3), "big") << 8
    slots: list[list[tuple[socket.socket, int, tuple[str, int]]]] = [[] for _ in range(SLOTS)]
    for i, (leg0, leg1) in enumerate(ports):
        slots[i % SLOTS].append((caller, ssrc0 + 2 * i, (HOST, leg0)))
        slots[i % SLOTS].append((callee, ssrc0 + 2 * i + 1, (HOST, leg1)))
    selector = selectors.DefaultSelector()
    selector.register(caller, selectors.EVENT_READ)
    selector.register(callee, selectors.EVENT_READ)
    buf = bytearray(2048)
    received = 0
    seq = 0

    def drain_until(deadline: float) -> None:
        nonlocal received
        while (timeout := deadline - time.perf_counter()) > 0:
            for key, _ in selector.select(timeout):
                try:
                    while True:
                        key.fileobj.recv_into(buf)  # type: ignore[union-attr]
                        received += 1
                except BlockingIOError:
                    pass

    def send_for(duration: float) -> int:
        nonlocal seq
        start, sent = time.perf_counter(), 0
        for tick in range(round(duration / PTIME)):
            seq += 1
            for s, slot in enumerate(slots):
                drain_until(start + tick * PTIME + s * (PTIME / SLOTS))
                for sock, ssrc, dest in slot:
                    sock.sendto(RTP.pack(0x80, 0, seq & 0xFFFF, (160 * seq) & 0xFFFFFFFF, ssrc) + PAYLOAD, dest)
                sent += len(slot)
        return sent

    send_for(warmup)
    drain_until(time.perf_counter() + 0.1)
    received = 0
    r0, wall0 = relay.ask("cpu"), time.perf_counter()  # type: ignore[attr-defined]
    sent = send_for(seconds)
    settle = time.perf_counter() + 2.0
    while received < sent and time.perf_counter() < settle:
        drain_until(time.perf_counter() + 0.05)
    r1, wall1 = relay.ask("cpu"), time.perf_counter()  # type: ignore[attr-defined]
    selector.close()
    wall = wall1 - wall0
    return {"wall": wall, "cpu": (r1["user"] + r1["sys"] - r0["user"] - r0["sys"]) / wall, "sent": sent,
            "received": min(received, sent), "rate": sent / (wall1 - wall0)}


def measure(name: str, relay: object, n: int, caller: socket.socket, callee: socket.socket,
            warmup: float, seconds: float) -> dict[str, float]:
    ports = relay.alloc(n, caller.getsockname()[1], callee.getsockname()[1])  # type: ignore[attr-defined]
    result = traffic(relay, caller, callee, ports, warmup, seconds)
    relay.free()  # type: ignore[attr-defined]
    cpu_seconds = result["cpu"] * result["wall"]
    result["per_cpu_second"] = result["received"] / cpu_seconds if cpu_seconds else float("inf")
    result["loss"] = 1 - result["received"] / result["sent"] if result["sent"] else 0.0
    print(f"{name:>12} {n:>6} {result['sent'] / seconds:>10.0f} {result['cpu']:>8.1%} "
          f"{result['loss']:>7.2%} {result['per_cpu_second']:>14,.0f}")
    return result


class PythonRelay(Relay):
    """bench/rtp_relay.py's relay process, with the alloc/free calls this script makes."""

    def alloc(self, n: int, caller_port: int, callee_port: int) -> list[list[int]]:
        return self.ask(f"alloc {n} {caller_port} {callee_port}")  # type: ignore[return-value]

    def free(self) -> None:
        self.ask("free")


def signalling(rates: list[int], seconds: float, rtpengine: str, workdir: Path) -> None:
    """Complete calls (INVITE/100/180/200/ACK/BYE/200 with SDP, SIPp UAC -> node -> SIPp UAS) per CPU-second
    of a node with each media backend, then of the edge (deploy/kamailio-edge.cfg, its nodes list naming
    the UAS): bench/calls_per_second.py's steps, driven with a node's or the edge's command line."""
    import bench.calls_per_second as cps
    from tests.rig.edge import CONFIG

    for sdp in (True, False):
        suffix = "sdp" if sdp else "nosdp"
        (workdir / f"uac_{suffix}.xml").write_text(cps.uac_xml(sdp))
        (workdir / f"uas_{suffix}.xml").write_text(cps.uas_xml(sdp))
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        cps.PIN["server"], cps.PIN["sipp"] = ["taskset", "-c", "0"], ["taskset", "-c", "1"]
    node = cps.start_callflow

    def start_node(work: Path, tag: str, port: int, uac: int, uas: int, extra: tuple[str, ...] = ()) -> cps.Proc:
        if tag.endswith("rtpengine"):
            extra = (*extra, "--media", f"rtpengine:{rtpengine}")
        return node(work, tag, port, uac, uas, extra)

    def start_edge(work: Path, port: int, uas_port: int, workers: int) -> cps.Proc:
        nodes = work / "edge-nodes.list"
        nodes.write_text(f"1 sip:{HOST}:{uas_port}\n")
        run = work / "edge-run"
        run.mkdir(exist_ok=True)
        argv = ["kamailio", "-f", str(CONFIG), "-A", f"EDGE_LISTEN=udp:{HOST}:{port}", "-A",
                f'DISPATCHER_LIST="{nodes}"', "-A", "NODE_PROBING=0", "-DD", "-E", "-n", str(workers),
                "-m", "256", "-M", "16", "-P", str(run / "edge.pid"), "-Y", str(run)]
        return cps.Proc("kamailio", argv, work / "edge.log")

    # the edge record-routes: its UAC follows the Route set (RFC 3261 12.2.1.1) to the UAS's Contact
    edge_work = workdir / "edge"
    edge_work.mkdir(exist_ok=True)
    for sdp in (True, False):
        suffix = "sdp" if sdp else "nosdp"
        uac = cps.uac_xml(sdp).replace('<recv response="200" rtd="true"', '<recv response="200" rtd="true" rrs="true"')
        for method in ("ACK", "BYE"):
            uac = uac.replace(f"{method} sip:[service]@[remote_ip]:[remote_port] SIP/2.0",
                              f"{method} [next_url] SIP/2.0")
        (edge_work / f"uac_{suffix}.xml").write_text(uac)
        (edge_work / f"uas_{suffix}.xml").write_text(cps.uas_xml(sdp))
    cps.start_callflow, cps.start_kamailio = start_node, start_edge  # type: ignore[assignment]
    options = argparse.Namespace(seconds=seconds, hold_ms=0, profile=None, kamailio_workers=1)
    started = time.monotonic()
    results = {}
    for name, tag, kind in (("node, Python relay", "node_relay", "callflow"),
                            ("node, rtpengine", "node_rtpengine", "callflow"),
                            ("edge (1 worker), UAS behind it", "edge", "kamailio")):
        steps = cps.series(name, tag, rates if kind == "callflow" else [r * 2 for r in rates], options,
                           workdir if kind == "callflow" else edge_work, started, True, kind)
        top = cps.best(steps)
        results[name] = top.per_core if top is not None else 0.0
    print()
    for name, per_core in results.items():
        print(f"{name:>32}: {per_core:,.0f} complete calls per CPU-second (best clean step)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", default="100,300", help="comma-separated N values")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per step")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1, help="rtpengine's --num-threads")
    parser.add_argument("--rtpengine-log-level", type=int, default=4, help="rtpengine's --log-level (6: each command)")
    parser.add_argument("--signalling", metavar="RATES",
                        help="also calls per CPU-second of a node with each backend and of the edge, at these "
                             "offered calls/s (e.g. 100,300; the edge at twice each); needs SIPp (sip-tester)")
    args = parser.parse_args()
    problem = rtpengine_problem()
    if problem:
        sys.exit(f"bench/cluster.py: {problem}")

    workdir = Path(tempfile.mkdtemp(prefix="callflow-bench-cluster-"))
    python_relay = PythonRelay("uvloop")
    engine = RtpengineUnderTest(args.threads, workdir, args.rtpengine_log_level)
    caller, callee = udp_socket(), udp_socket()
    print(f"{os.cpu_count()} CPUs; {args.seconds:g} s per step; rtpengine {args.threads} thread(s), user space")
    header = f"{'relay':>12} {'calls':>6} {'pkts/s in':>10} {'cpu':>8} {'loss':>7} {'pkts/CPU-s':>14}"
    print(header)
    print("-" * len(header))
    try:
        if args.signalling:
            signalling([int(x) for x in args.signalling.split(",")], args.seconds, engine.daemon.address, workdir)
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
