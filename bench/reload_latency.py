"""How long after an edited script is saved does its new rule decide calls? (target: < 300 ms)

Starts `callflow run` on a script whose rule refuses calls with one status, then repeatedly rewrites
the rule to refuse with another, and after each save sends INVITEs (every 5 ms) until the answer
changes. The INVITEs come from an IP-authenticated line (the bench's own socket is the "provider"),
so no digest round trip is measured. Prints each latency and the median and worst.

Then saves a 20,000-rule version of the script and keeps sending INVITEs while it compiles (on the
server's worker thread): prints how long the new program took to take over and the slowest answer
to an INVITE meanwhile (the server's loop must not stall: issue 9 measured 20-27 s before).

    python bench/reload_latency.py [--rounds 15] [--big-rules 20000]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FLOW = """
line load {{
    server "127.0.0.1:{provider}"
}}
on incoming from line load to "123" reject {code} "Rule {code}"
"""


def invite(server_port: int, me: int, n: int) -> bytes:
    return (f"INVITE sip:123@127.0.0.1:{server_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};rport;branch=z9hG4bKrl{n}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:load@127.0.0.1>;tag=l{n}\r\nTo: <sip:123@127.0.0.1>\r\n"
            f"Call-ID: reload-{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:load@127.0.0.1:{me}>\r\n"
            f"Content-Length: 0\r\n\r\n").encode()


def ack(server_port: int, me: int, n: int, to_header: bytes) -> bytes:
    return (f"ACK sip:123@127.0.0.1:{server_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};rport;branch=z9hG4bKrl{n}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:load@127.0.0.1>;tag=l{n}\r\n").encode() + to_header + (
            f"\r\nCall-ID: reload-{n}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n").encode()


class Prober:
    def __init__(self, server_port: int, sock: socket.socket) -> None:
        self.port = server_port
        self.sock = sock
        self.me = sock.getsockname()[1]
        self.n = 0

    def status(self) -> int | None:
        """One INVITE; the final status it got (None if nothing within 1 s)."""
        self.n += 1
        self.sock.sendto(invite(self.port, self.me, self.n), ("127.0.0.1", self.port))
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                return None
            code = int(data.split(b" ", 2)[1])
            if code >= 200 and f"reload-{self.n}".encode() in data:
                to = next(line for line in data.split(b"\r\n") if line.lower().startswith(b"to:"))
                self.sock.sendto(ack(self.port, self.me, self.n, to), ("127.0.0.1", self.port))
                return code
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--big-rules", type=int, default=20_000)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(1.0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        server_port = s.getsockname()[1]
    work = Path(tempfile.mkdtemp(prefix="reload-bench-"))
    flow = work / "main.flow"
    flow.write_text(FLOW.format(provider=sock.getsockname()[1], code=486))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli", "run", str(flow), "--listen",
                             f"udp:127.0.0.1:{server_port}", "--rtp-ports", "37000-37099", "--log-level", "warning"],
                            env=env, stdout=subprocess.DEVNULL, stderr=open(work / "callflow.log", "wb"))
    prober = Prober(server_port, sock)
    latencies = []
    try:
        for _ in range(100):
            if prober.status() == 486:
                break
            time.sleep(0.1)
        else:
            print(f"callflow did not start; see {work / 'callflow.log'}")
            return 1
        code = 486
        for _ in range(args.rounds):
            code = 480 if code == 486 else 486
            time.sleep(0.3)  # let the previous save's events settle
            start = time.monotonic()
            flow.write_text(FLOW.format(provider=sock.getsockname()[1], code=code))
            for _ in range(400):
                if prober.status() == code:
                    break
                time.sleep(0.005)
            else:
                print(f"the new rule never took over; see {work / 'callflow.log'}")
                return 1
            latencies.append((time.monotonic() - start) * 1000)
        big = FLOW.format(provider=sock.getsockname()[1], code=403) + "".join(
            f'on incoming from line load to "9{n:07d}" reject 480\n' for n in range(args.big_rules))
        time.sleep(0.3)
        start = time.monotonic()
        flow.write_text(big)
        answers: list[float] = []
        took = None
        for _ in range(3000):  # bounded: at most 3000 INVITEs, each waits at most 1 s
            sent = time.monotonic()
            got = prober.status()
            answers.append((time.monotonic() - sent) * 1000)
            if got == 403:
                took = (time.monotonic() - start) * 1000
                break
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    print("save -> new rule in force (ms): " + ", ".join(f"{x:.0f}" for x in latencies))
    print(f"median {statistics.median(latencies):.0f} ms, worst {max(latencies):.0f} ms "
          f"over {len(latencies)} saves (target < 300 ms; includes the 100 ms debounce)")
    if took is None:
        print(f"the {args.big_rules}-rule script never took over; see {work / 'callflow.log'}")
        return 1
    print(f"{args.big_rules}-rule script: in force {took:.0f} ms after the save; {len(answers)} INVITEs answered "
          f"meanwhile, slowest {max(answers):.0f} ms, median {statistics.median(answers):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
