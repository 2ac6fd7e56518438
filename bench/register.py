"""REGISTER transactions per second with digest authentication: Callflow's registrar next to
Kamailio's, in the same run, for 1,000 and 100,000 users.

SIPp registers the users one after the other from an injection file (each registration is two
transactions: the REGISTER challenged with 401, then the one carrying the Authorization, answered
200), at stepped rates (--rates), --seconds per step. Stepping stops after a step with more than
0.1 % failed registrations or one whose achieved rate fell below 90 % of the offered rate.

Callflow runs a script of N users (`user uI password "pw-uI"`) and one IP-authenticated line whose
server is SIPp's address, only so the flood guard (200 messages/s per source) takes SIPp for a
provider and lets the load through; `--log-level warning`. Kamailio runs a minimal registrar (tm,
sl, usrloc, registrar, auth: `pv_auth_check` with the password "pw-" + user, no database) with one
worker (`-n 1`), so the per-core figures compare like with like.

Per step: offered registrations/s, placed, succeeded, failed, achieved registrations/s and REGISTER
transactions/s (twice that), the server's CPU (% of one core, /proc utime+stime of the process and
its children) and transactions/s per core. The project's target: 3,000 REGISTER transactions/s on
one core.

Needs SIPp (Debian package `sip-tester`) and Kamailio; run by hand, not by CI:

    apt-get install -y sip-tester kamailio
    python bench/register.py                           # 1,000 and 100,000 users, both servers
    python bench/register.py --users 1000 --rates 500,1000 --seconds 5 --no-kamailio
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
TARGET = 3000  # REGISTER transactions/s on one core
MAX_FAIL = 0.001
MIN_ACHIEVED = 0.90
CLK_TCK = os.sysconf("SC_CLK_TCK")

SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register with digest">
  <send retrans="500">
    <![CDATA[
REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:[field0]@[remote_ip]>;tag=[call_number]
To: <sip:[field0]@[remote_ip]>
Call-ID: [call_id]
CSeq: 1 REGISTER
Contact: <sip:[field0]@[local_ip]:[local_port]>
Max-Forwards: 70
Expires: 3600
Content-Length: 0

    ]]>
  </send>
  <recv response="401" auth="true"/>
  <send retrans="500">
    <![CDATA[
REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:[field0]@[remote_ip]>;tag=[call_number]
To: <sip:[field0]@[remote_ip]>
Call-ID: [call_id]
CSeq: 2 REGISTER
Contact: <sip:[field0]@[local_ip]:[local_port]>
[field2]
Max-Forwards: 70
Expires: 3600
Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""

KAMAILIO_CFG = """#!KAMAILIO
debug=1
log_stderror=yes
children=1
auto_aliases=no
dns=no
rev_dns=no
listen=udp:127.0.0.1:{port}
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "textops.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
modparam("usrloc", "db_mode", 0)
modparam("usrloc", "hash_size", 14)
modparam("registrar", "max_expires", 3600)
request_route {{
    if (!is_method("REGISTER")) {{ sl_send_reply("405", "Method Not Allowed"); exit; }}
    if (!has_credentials("bench")) {{ auth_challenge("bench", "1"); exit; }}
    if (!pv_auth_check("bench", "pw-$au", "0", "1")) {{ auth_challenge("bench", "1"); exit; }}
    consume_credentials();
    if (!save("location")) {{ sl_reply_error(); }}
    exit;
}}
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def cpu_ticks(pid: int) -> int:
    """utime + stime of pid and its live descendants, in clock ticks."""
    total = 0
    todo = [pid]
    seen = set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            for task in Path(f"/proc/{p}/task").iterdir():
                children = (task / "children").read_text().split()
                todo.extend(int(c) for c in children)
        except (OSError, ValueError, IndexError):
            continue
    return total


def answers_options(port: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        s.settimeout(0.2)
        me = s.getsockname()[1]
        for n in range(1000):
            if time.monotonic() > deadline:
                return False
            msg = (f"OPTIONS sip:{HOST}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {HOST}:{me};branch=z9hG4bKrb{n}\r\n"
                   f"From: <sip:bench@{HOST}>;tag=b{n}\r\nTo: <sip:{HOST}:{port}>\r\nCall-ID: rb{n}@{HOST}\r\n"
                   "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
            s.sendto(msg.encode(), (HOST, port))
            try:
                if s.recv(65535).startswith(b"SIP/2.0 "):
                    return True
            except OSError:
                time.sleep(0.1)
    return False


class Server:
    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        self.fh = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.p = subprocess.Popen(argv, stdout=self.fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self.fh.close()


@dataclass
class Step:
    rate: int
    placed: int = 0
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0
    cpu: float = 0.0

    @property
    def achieved(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def fail_ratio(self) -> float:
        return self.failed / self.placed if self.placed else 1.0

    @property
    def per_core(self) -> float:
        return 2 * self.achieved / self.cpu if self.cpu > 0.01 else 0.0


def run_step(work: Path, tag: str, rate: int, seconds: float, server: Server, port: int, sipp_port: int,
             users_csv: Path) -> Step:
    step = Step(rate)
    total = max(1, int(rate * seconds))
    stats = work / f"{tag}_{rate}.csv"
    stats.unlink(missing_ok=True)
    argv = ["sipp", f"{HOST}:{port}", "-sf", str(work / "register.xml"), "-inf", str(users_csv),
            "-i", HOST, "-p", str(sipp_port), "-t", "u1", "-r", str(rate), "-m", str(total),
            "-l", str(max(100, rate * 2)), "-recv_timeout", "5000", "-nostdin", "-bg", "-trace_stat",
            "-stf", str(stats), "-fd", "1", "-buff_size", "4194304"]
    argv = [a for a in argv if a != "-bg"]
    ticks = cpu_ticks(server.p.pid)
    started = time.monotonic()
    sipp = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                          timeout=seconds * 4 + 60, check=False)
    step.seconds = time.monotonic() - started
    step.cpu = (cpu_ticks(server.p.pid) - ticks) / CLK_TCK / step.seconds
    del sipp
    with open(stats, newline="") as fh:
        rows = list(csv.reader(fh, delimiter=";"))
    header, last = rows[0], rows[-1]
    col = {name: i for i, name in enumerate(header)}
    step.ok = int(last[col["SuccessfulCall(C)"]])
    step.failed = int(last[col["FailedCall(C)"]])
    step.placed = int(last[col["TotalCallCreated"]])
    return step


def series(name: str, server: Server, port: int, rates: list[int], seconds: float, work: Path,
           users_csv: Path, users: int) -> list[Step]:
    steps = []
    sipp_port = free_port()
    for rate in rates:
        step = run_step(work, f"{name}_{users}", rate, seconds, server, port, sipp_port, users_csv)
        steps.append(step)
        print(f"  {name:9} users={users:>6} offered={rate:>5}/s placed={step.placed:>6} ok={step.ok:>6} "
              f"failed={step.failed:>4} -> {step.achieved:7.0f} registrations/s = {2 * step.achieved:7.0f} "
              f"REGISTER transactions/s at {step.cpu * 100:5.1f} % CPU ({step.per_core:7.0f} transactions/s "
              f"per core)", flush=True)
        if step.fail_ratio > MAX_FAIL or step.achieved < MIN_ACHIEVED * rate or server.p.poll() is not None:
            break
        time.sleep(1.0)
    return steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", default="1000,100000")
    parser.add_argument("--rates", default="500,1000,1500,2000,3000")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--no-kamailio", action="store_true")
    args = parser.parse_args()
    if shutil.which("sipp") is None:
        print("needs SIPp: apt-get install -y sip-tester", file=sys.stderr)
        return 2
    kamailio = shutil.which("kamailio") or ("/usr/sbin/kamailio" if Path("/usr/sbin/kamailio").exists() else None)
    rates = [int(r) for r in args.rates.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-register-"))
    (work / "register.xml").write_text(SCENARIO)
    print(f"work dir {work}; target {TARGET} REGISTER transactions/s on one core; each registration is "
          f"2 transactions (401, then 200)")
    best: dict[str, float] = {}
    for users in (int(u) for u in args.users.split(",")):
        users_csv = work / f"users_{users}.csv"
        with open(users_csv, "w") as fh:
            fh.write("SEQUENTIAL\n")
            # SIPp expands a keyword held in a field, not a field inside a keyword
            fh.writelines(f"u{i};pw-u{i};[authentication username=u{i} password=pw-u{i}]\n" for i in range(users))
        # a folder of its own: the reloader recompiles on any file event in the script's folder, and
        # SIPp's statistics file would make it recompile 100,000 users every second
        flow = work / f"flow_{users}" / "users.flow"
        flow.parent.mkdir()
        with open(flow, "w") as fh:
            # the line only makes SIPp's address a provider's, exempt from the flood guard
            fh.write(f'line sipp {{ server "{HOST}:9" }}\non incoming from line sipp reject 403\n')
            fh.writelines(f'user u{i} password "pw-u{i}"\n' for i in range(users))
        port = free_port()
        cf = Server("callflow", [sys.executable, "-m", "runtime.cli", "run", str(flow), "--listen",
                                 f"udp:{HOST}:{port}", "--rtp-ports", "39000-39099", "--log-level", "warning"],
                    work / f"callflow_{users}.log")
        try:
            if not answers_options(port, timeout=120):
                print(f"callflow did not start; see {work}/callflow_{users}.log", file=sys.stderr)
                return 1
            time.sleep(2.0)  # the first second after start-up is still busy (the script's warnings)
            steps = series("callflow", cf, port, rates, args.seconds, work, users_csv, users)
            best[f"callflow {users}"] = max((2 * s.achieved for s in steps if s.fail_ratio <= MAX_FAIL), default=0)
        finally:
            cf.stop()
        if kamailio and not args.no_kamailio:
            kport = free_port()
            cfg = work / f"kamailio_{users}.cfg"
            cfg.write_text(KAMAILIO_CFG.format(port=kport))
            km = Server("kamailio", [kamailio, "-f", str(cfg), "-DD", "-E", "-n", "1", "-m", "512", "-M", "16",
                                     "-P", str(work / "kamailio.pid"), "-Y", str(work)], work / f"kamailio_{users}.log")
            try:
                if not answers_options(kport, timeout=15):
                    print(f"kamailio did not start; see {work}/kamailio_{users}.log", file=sys.stderr)
                else:
                    steps = series("kamailio", km, kport, rates, args.seconds, work, users_csv, users)
                    best[f"kamailio {users}"] = max((2 * s.achieved for s in steps if s.fail_ratio <= MAX_FAIL),
                                                    default=0)
            finally:
                km.stop()
    print("best REGISTER transactions/s with under 0.1 % failures: "
          + ", ".join(f"{k}: {v:.0f}" for k, v in best.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
