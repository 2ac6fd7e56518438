"""Sustained calls per second through one Callflow process, next to Kamailio on the same machine.

SIPp drives complete calls through the server under test and counts them:

    SIPp UAC (the provider, line `load`)  ->  server  ->  SIPp UAS (the far end, line `far`)
    INVITE -> 100 -> 180 -> 200 -> ACK -> hold (--hold-ms, default 0) -> BYE -> 200

Callflow runs bench/flows/load.flow: two IP-authenticated lines (no registration; a line's calls are
recognised by source IP *and* port) and `on incoming from line load accept to line far`, so every
call is a full B2BUA call, two dialogs and (with SDP) an RTP relay session of two port pairs. It runs
with `--log-level warning` so per-call logging is not what gets measured. Kamailio, the named peer,
runs a minimal stateful proxy (tm + sl + rr: record_route, t_relay to the UAS) with one UDP worker
(`-n 1`, children=1) so the per-core figure compares like with like.

The rate is stepped (--rates, --kamailio-rates), --seconds per step (`sipp -r RATE -m RATE*SECONDS
-l LIMIT`), and stepping stops after a step with more than 1 % failed calls, or one whose completed
rate fell below 90 % of the offered rate (the server saturated). Between steps the script waits until
the server is idle again. Series: Callflow with SDP bodies (media relay allocates ports), Kamailio
with the same scenario, then Callflow without SDP (signalling only; --media sdp skips it).

Per step: offered rate, calls placed, completed, failed (totals of the step); completed calls/s and
the server's CPU % over the steady window (1 s after the start to the end of the offered load, from
SIPp's per-second stats and /proc/PID/stat utime+stime samples, summed over the process and its
children: Kamailio's workers, timers and main process), so the tail of a step (a failed call waits
8 s for SIPp's receive timeout) does not drag them down; calls/s per core (completed calls/s / CPU
fraction); the kernel's receive-buffer drops on the server's and SIPp's SIP sockets; and SIPp's
own CPU % (on 2 cores the load generator competes with the server). For Callflow also the RTP
sockets it still holds once idle after the step: the relay keeps up to MAX_IDLE_LEGS legs (two
sockets each, 2,048 sockets by default) bound for the next calls, so the figure levels off there;
a figure above that cap would be a leak.

Call records and metrics (--overhead RATE, instead of the series above): two Callflow servers, one with
call records and metrics off (`--no-cdr`, `--control off`), one with them on (records written to
SQLite in the work dir's state folder; the control endpoint's /metrics scraped every second, 15 times
as often as Prometheus' default), are driven in turns at RATE with SDP (off, on, on, off, ...,
--rounds pairs), so drift in the shared machine's load hits both alike. Printed: each step, the median
calls/s per core of each, their ratio, and whether records and metrics cost under 5 % of the calls per
CPU-second. Where this build has no control endpoint, only call records are switched.

Needs SIPp (Debian package `sip-tester`, binary `sipp`) and Kamailio; run by hand, not by CI:

    apt-get install -y sip-tester kamailio
    python bench/calls_per_second.py                       # default steps, under 3 minutes
    python bench/calls_per_second.py --rates 100,200 --seconds 5 --no-kamailio
    python bench/calls_per_second.py --profile 300         # py-spy record Callflow at the 300 cps step
    python bench/calls_per_second.py --overhead 300        # call records + metrics on vs off, same run

Files (SIPp stats and screens, server logs, Kamailio config, profiles) stay in the printed work dir.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOW = ROOT / "bench" / "flows" / "load.flow"
HOST = "127.0.0.1"
# 2,500 pairs: 2 per relayed call, far above the concurrency of these steps; clear of the ranges the test
# suite binds (tests/rig/ports.py: 21000-32000; the unit tests: 36000-37799), so a bench beside a test run
# does not take a test's ports
RTP_PORTS = (50000, 54999)
TARGET = 600  # the project's target, calls/s through one process
PEERS = "Sippy (Python B2BUA) 250 calls/s at 75 % of a core; Kamailio (C proxy) 3,650 calls/s"
BUDGET = 170.0  # seconds for the whole run; steps that would not fit are skipped
CLK_TCK = os.sysconf("SC_CLK_TCK")
MAX_FAIL = 0.01
MIN_ACHIEVED = 0.90


# --- SIPp scenarios ------------------------------------------------------------------------------
# The built-in `uac`/`uas` with the SDP made optional; a 180 is optional on the UAC side. Responses
# are matched to their transaction (start_txn/response_txn): without that SIPp takes a retransmitted
# 200 OK for the INVITE (the server never saw our ACK) as the answer to the BYE and counts a call
# the server still holds as completed.

SDP = """v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
"""


def uac_xml(sdp: bool) -> str:
    body = ("Content-Type: application/sdp\n      Content-Length: [len]\n\n      " + SDP) if sdp else \
        "Content-Length: 0\n"
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="callflow bench uac ({'sdp' if sdp else 'no sdp'})">
  <send retrans="500" start_txn="invite">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Subject: Performance Test
      {body}
    ]]>
  </send>
  <recv response="100" optional="true" response_txn="invite"/>
  <recv response="180" optional="true" response_txn="invite"/>
  <recv response="183" optional="true" response_txn="invite"/>
  <recv response="200" rtd="true" response_txn="invite"/>
  <send ack_txn="invite">
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      [routes]
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <pause/>
  <send retrans="500" start_txn="bye">
    <![CDATA[
      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      [routes]
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true" response_txn="bye"/>
  <ResponseTimeRepartition value="10, 20, 50, 100, 200, 500, 1000, 2000"/>
  <CallLengthRepartition value="10, 50, 100, 500, 1000, 5000, 10000"/>
</scenario>
"""


def uas_xml(sdp: bool) -> str:
    answer = ("Content-Type: application/sdp\n      Content-Length: [len]\n\n      " + SDP) if sdp else \
        "Content-Length: 0\n"
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="callflow bench uas ({'sdp' if sdp else 'no sdp'})">
  <recv request="INVITE" crlf="true"/>
  <send>
    <![CDATA[
      SIP/2.0 180 Ringing
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      [last_Record-Route:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      [last_Record-Route:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      {answer}
    ]]>
  </send>
  <recv request="ACK" optional="true" rtd="true" crlf="true"/>
  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>
  <timewait milliseconds="2000"/>
</scenario>
"""


KAMAILIO_CFG = """#!KAMAILIO
# Minimal stateful proxy for bench/calls_per_second.py: every initial request is record-routed and
# relayed statefully to the SIPp UAS; in-dialog requests follow the route set to the same UAS.
debug=0
log_stderror=yes
children={children}
disable_tcp=yes
auto_aliases=no
listen=udp:{host}:{port}
mpath="{mpath}"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "siputils.so"
loadmodule "textops.so"

request_route {{
    if (is_method("OPTIONS") && uri==myself && !has_totag()) {{
        sl_send_reply("200", "OK");
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) t_relay_to_udp("{uas_host}", "{uas_port}");
        exit;
    }}
    if (has_totag()) {{
        loose_route();
        t_relay_to_udp("{uas_host}", "{uas_port}");
        exit;
    }}
    record_route();
    if (!t_relay_to_udp("{uas_host}", "{uas_port}")) sl_reply_error();
}}
"""


# --- processes and /proc -------------------------------------------------------------------------


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def cpu_ticks(pid: int) -> int:
    """utime + stime of pid and every live descendant, in clock ticks (0 for a process gone)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                children.setdefault(int(st[1]), []).append(int(entry))
    total, todo, seen = 0, [pid], set()
    for _ in range(10_000):
        if not todo:
            break
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        st = _stat(p)
        if st is not None:
            total += int(st[11]) + int(st[12])  # fields 14 and 15 of /proc/PID/stat
            todo.extend(children.get(p, ()))
    return total


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may hold spaces and parentheses: fields start after the last ')'
    return text[text.rindex(")") + 2:].split()


def machine_busy() -> float:
    """CPU seconds all CPUs spent busy since boot (everything but idle and iowait), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in fields[:8]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK


def udp_drops(ports: tuple[int, ...]) -> dict[int, int]:
    """The kernel's receive-buffer drop counter of the UDP sockets bound to HOST on these ports."""
    drops = dict.fromkeys(ports, 0)
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return drops
    for line in lines:
        parts = line.split()
        port = int(parts[1].rsplit(":", 1)[1], 16)
        if port in drops:
            drops[port] += int(parts[-1])
    return drops


def held_rtp_sockets(pid: int) -> int:
    """UDP sockets of pid bound in the RTP range: what the media relay still holds."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return -1
    held = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            port = int(parts[1].rsplit(":", 1)[1], 16)
            if parts[9] in inodes and RTP_PORTS[0] <= port <= RTP_PORTS[1]:
                held += 1
    return held


def sip_ping(port: int, timeout: float) -> bool:
    """Send OPTIONS until a response comes back or the time runs out."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        s.settimeout(0.2)
        me = s.getsockname()[1]
        for n in range(1000):
            if time.monotonic() > deadline:
                return False
            msg = (f"OPTIONS sip:ping@{HOST}:{port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP {HOST}:{me};branch=z9hG4bKbenchping{n}\r\n"
                   f"From: <sip:bench@{HOST}>;tag=bench{n}\r\nTo: <sip:ping@{HOST}:{port}>\r\n"
                   f"Call-ID: benchping{n}@{HOST}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                   "Content-Length: 0\r\n\r\n")
            s.sendto(msg.encode(), (HOST, port))
            try:
                if s.recv(65535).startswith(b"SIP/2.0 "):
                    return True
            except OSError:
                time.sleep(0.1)
    return False


PIN: dict[str, list[str]] = {"server": [], "sipp": []}  # taskset prefixes, set by --pin


class Proc:
    """A child process we started; stop() ends it (and only it) by its pid."""

    def __init__(self, name: str, argv: list[str], log: Path, **kw: object) -> None:
        self.name = name
        self.port = 0
        argv = PIN["sipp" if name.startswith("sipp") else "server"] + argv
        self.log = log
        self.fh = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.p = subprocess.Popen(argv, stdout=self.fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  **kw)  # type: ignore[call-overload]

    @property
    def pid(self) -> int:
        return self.p.pid

    def alive(self) -> bool:
        return self.p.poll() is None

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self.fh.close()


# --- one step ------------------------------------------------------------------------------------


@dataclass
class Step:
    rate: int
    placed: int = 0
    completed: int = 0
    failed: int = 0
    seconds: float = 0.0
    cpu: float = 0.0          # server CPU, fraction of one core
    sipp_cpu: float = 0.0     # UAC + UAS
    other_cpu: float = 0.0    # everything else on the machine, in cores
    drops_server: int = 0     # datagrams the kernel dropped on the server's SIP socket (full buffer)
    drops_sipp: int = 0       # ... on the UAC's and UAS's sockets
    held_rtp: int | None = None
    reasons: dict[str, int] = field(default_factory=dict)
    note: str = ""
    cps: float = 0.0          # completed calls/s over the steady window (whole step if no periodic stats)

    @property
    def per_core(self) -> float:
        return self.cps / self.cpu if self.cpu > 0.01 else 0.0

    @property
    def fail_ratio(self) -> float:
        return self.failed / self.placed if self.placed else 1.0


def run_step(work: Path, tag: str, rate: int, args: argparse.Namespace, server_pid: int, server_port: int,
             uac_port: int, uas: Proc, sdp: bool, profile: bool) -> Step:
    step = Step(rate)
    total = max(1, int(rate * args.seconds))
    limit = max(50, int(rate * (args.hold_ms / 1000 + 2)))  # concurrent-call cap: headroom for 2 s latency
    stats = work / f"{tag}_{rate}_stat.csv"
    screen = work / f"{tag}_{rate}_screen.log"
    for f in (stats, screen):
        f.unlink(missing_ok=True)
    argv = ["sipp", "-sf", str(work / f"uac_{'sdp' if sdp else 'nosdp'}.xml"), "-i", HOST, "-p", str(uac_port),
            "-s", "1000", f"{HOST}:{server_port}", "-r", str(rate), "-m", str(total), "-l", str(limit),
            "-d", str(args.hold_ms), "-nostdin", "-recv_timeout", "8000", "-timeout", f"{int(args.seconds) + 15}s",
            "-trace_stat", "-stf", str(stats), "-fd", "1", "-trace_screen", "-screen_file", str(screen),
            "-trace_err", "-error_file", str(work / f"{tag}_{rate}_errors.log")]
    spy = None
    if profile:
        if shutil.which("py-spy") is None:
            print("  (--profile: py-spy is not installed: pip install py-spy)")
        else:
            out = work / f"{tag}_{rate}_profile.txt"
            spy = subprocess.Popen(["py-spy", "record", "-d", str(int(args.seconds)), "-r", "200", "-p",
                                    str(server_pid), "-o", str(out), "-f", "raw"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            step.note = f"profile {out.name}"
    ports = (server_port, uac_port, uas.port)
    _child_cpu_delta()
    d0, m0 = udp_drops(ports), machine_busy()
    s0, u0, t0 = cpu_ticks(server_pid), cpu_ticks(uas.pid), time.monotonic()
    uac = subprocess.Popen(PIN["sipp"] + argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           stdin=subprocess.DEVNULL)
    samples = [(time.time(), s0)]  # (epoch, server CPU ticks), to cut the steady window out afterwards
    for _ in range(int((args.seconds + 25) / 0.25)):
        if uac.poll() is not None:
            break
        time.sleep(0.25)
        samples.append((time.time(), cpu_ticks(server_pid)))
    if uac.poll() is None:
        uac.kill()
        uac.wait(5)
        step.note = "SIPp killed (did not finish)"
    t1 = time.monotonic()
    s1, u1, m1, d1 = cpu_ticks(server_pid), cpu_ticks(uas.pid), machine_busy(), udp_drops(ports)
    step.seconds = t1 - t0
    step.cpu = (s1 - s0) / CLK_TCK / step.seconds  # whole step; _steady narrows it to the steady window
    uac_cpu = _child_cpu_delta()  # the UAC has exited and been reaped: its CPU is in our rusage
    step.sipp_cpu = ((u1 - u0) / CLK_TCK + uac_cpu) / step.seconds
    step.other_cpu = max(0.0, (m1 - m0) / step.seconds - step.cpu - step.sipp_cpu)
    step.drops_server = d1[server_port] - d0[server_port]
    step.drops_sipp = d1[uac_port] - d0[uac_port] + d1[uas.port] - d0[uas.port]
    if spy is not None:
        try:
            spy.wait(timeout=15)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait(5)
    _read_stats(stats, step, total)
    _steady(stats, step, samples, args.seconds)
    return step


def _steady(path: Path, step: Step, samples: list[tuple[float, int]], seconds: float) -> None:
    """Completed calls/s and server CPU over the steady window, from 1 s after SIPp started to the end
    of its offered load. The tail after it (a failed call waits 8 s for its receive timeout) would
    otherwise drag both figures down and hide a server that kept up."""
    rows = _stat_rows(path)
    if len(rows) < 3 or len(samples) < 3:
        return
    start = rows[0][0]
    inside = [r for r in rows if start + 1 <= r[0] <= start + seconds + 0.5]
    if len(inside) < 2:
        return
    (ta, done_a), (tb, done_b) = inside[0], inside[-1]

    def ticks_at(t: float) -> int:
        return min(samples, key=lambda s: abs(s[0] - t))[1]

    span = tb - ta
    step.cps = (done_b - done_a) / span
    step.cpu = (ticks_at(tb) - ticks_at(ta)) / CLK_TCK / span


def _stat_rows(path: Path) -> list[tuple[float, int]]:
    """(epoch of the dump, successful calls so far) for each periodic row of a SIPp stat file."""
    try:
        rows = list(csv.reader(path.open(), delimiter=";"))
    except OSError:
        return []
    if not rows:
        return []
    head = rows[0]
    try:
        when, ok = head.index("CurrentTime"), head.index("SuccessfulCall(C)")
    except ValueError:
        return []
    out = []
    for r in rows[1:]:
        try:
            out.append((float(r[when].split()[-1]), int(r[ok])))
        except (ValueError, IndexError):
            continue
    return out


_last_rusage = [0.0]


def _child_cpu_delta() -> float:
    """CPU seconds of our reaped children (the SIPp UACs) since the last call."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    now = ru.ru_utime + ru.ru_stime
    delta, _last_rusage[0] = now - _last_rusage[0], now
    return delta


def _read_stats(path: Path, step: Step, total: int) -> None:
    try:
        rows = list(csv.reader(path.open(), delimiter=";"))
    except OSError:
        rows = []
    if len(rows) < 2:
        step.failed = total
        step.placed = total
        step.note = (step.note + "; " if step.note else "") + "no SIPp statistics"
        return
    head, last = rows[0], rows[-1]

    def val(name: str) -> int:
        try:
            return int(float(last[head.index(name)]))
        except (ValueError, IndexError):
            return 0

    step.placed = val("OutgoingCall(C)")
    step.completed = val("SuccessfulCall(C)")
    step.cps = step.completed / step.seconds if step.seconds else 0.0
    step.failed = step.placed - step.completed  # failed, plus any still running when SIPp stopped
    for i, name in enumerate(head):
        if name.startswith("Failed") and name.endswith("(C)") and name != "FailedCall(C)":
            try:
                n = int(float(last[i]))
            except ValueError:
                continue
            if n:
                step.reasons[name[6:-3]] = n


def settle(pid: int, limit: float) -> None:
    """Wait until the server uses under 3 % of a core over 0.3 s (its leftover calls are done)."""
    deadline = time.monotonic() + limit
    for _ in range(1000):
        if time.monotonic() > deadline:
            return
        a = cpu_ticks(pid)
        time.sleep(0.3)
        if (cpu_ticks(pid) - a) / CLK_TCK / 0.3 < 0.03:
            return


# --- servers -------------------------------------------------------------------------------------


def start_callflow(work: Path, tag: str, port: int, uac_port: int, uas_port: int,
                   extra: tuple[str, ...] = (), entry: tuple[str, ...] = ("-m", "runtime.cli"),
                   env_extra: dict[str, str] | None = None) -> Proc:
    env = dict(os.environ, CALLFLOW_BENCH_UAC=f"{HOST}:{uac_port}", CALLFLOW_BENCH_UAS=f"{HOST}:{uas_port}",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env_extra or {}))
    # call records (on by default) go to the work dir, not to the machine's state folder
    argv = [sys.executable, *entry, "run", str(FLOW), "--listen", f"{HOST}:{port}",
            "--rtp-ports", f"{RTP_PORTS[0]}-{RTP_PORTS[1]}", "--log-level", "warning",
            "--state-dir", str(work / f"state_{tag}"), *extra]
    return Proc("callflow", argv, work / f"{tag}.log", cwd=str(ROOT), env=env)


def start_kamailio(work: Path, port: int, uas_port: int, workers: int) -> Proc:
    mpath = next((p for p in ("/usr/lib/x86_64-linux-gnu/kamailio/modules", "/usr/lib/kamailio/modules",
                              "/usr/local/lib64/kamailio/modules") if Path(p).is_dir()), "")
    cfg = work / "kamailio.cfg"
    cfg.write_text(KAMAILIO_CFG.format(children=workers, host=HOST, port=port, mpath=mpath, uas_host=HOST,
                                       uas_port=uas_port))
    run = work / "kamailio-run"
    run.mkdir(exist_ok=True)
    argv = ["kamailio", "-f", str(cfg), "-DD", "-E", "-n", str(workers), "-m", "256", "-M", "16",
            "-P", str(run / "kamailio.pid"), "-Y", str(run)]
    return Proc("kamailio", argv, work / "kamailio.log")


def start_uas(work: Path, port: int, sdp: bool, tag: str, timeout: int = 170) -> Proc:
    argv = ["sipp", "-sf", str(work / f"uas_{'sdp' if sdp else 'nosdp'}.xml"), "-i", HOST, "-p", str(port),
            "-nostdin", "-timeout", f"{timeout}s", "-trace_screen", "-screen_file", str(work / f"uas_{tag}_screen.log")]
    uas = Proc("sipp-uas", argv, work / f"uas_{tag}.log")
    uas.port = port
    return uas


# --- the series ----------------------------------------------------------------------------------


def series(name: str, tag: str, rates: list[int], args: argparse.Namespace, work: Path, started: float,
           sdp: bool, kind: str) -> list[Step]:
    server_port, uac_port, uas_port = free_udp_port(), free_udp_port(), free_udp_port()
    uas = start_uas(work, uas_port, sdp, tag)
    if kind == "callflow":
        server = start_callflow(work, tag, server_port, uac_port, uas_port)
    else:
        server = start_kamailio(work, server_port, uas_port, args.kamailio_workers)
    steps: list[Step] = []
    try:
        if not sip_ping(server_port, 15) or not server.alive():
            print(f"{name}: did not answer OPTIONS on {HOST}:{server_port}; log {server.log}:")
            print(server.log.read_text(errors="replace")[-2000:])
            return steps
        print(f"\n{name}: pid {server.pid} on {HOST}:{server_port}; SIPp UAC {HOST}:{uac_port} -> "
              f"UAS {HOST}:{uas_port}; {'SDP offer/answer' if sdp else 'no SDP'}; hold {args.hold_ms} ms")
        print(HEADER)
        print("-" * len(HEADER))
        for rate in rates:
            left = BUDGET - (time.monotonic() - started)
            if left < args.seconds + 8:
                print(f"{rate:>8}  skipped: {left:.0f} s left of the {BUDGET:.0f} s budget")
                continue
            step = run_step(work, tag, rate, args, server.pid, server_port, uac_port, uas, sdp,
                            profile=kind == "callflow" and sdp and rate == args.profile)
            settle(server.pid, 6)
            if kind == "callflow":
                step.held_rtp = held_rtp_sockets(server.pid)
            if not server.alive():
                step.note = (step.note + "; " if step.note else "") + f"SERVER EXITED (code {server.p.poll()})"
            steps.append(step)
            print(row(step))
            if not server.alive():
                break
            if step.fail_ratio > MAX_FAIL:
                print(f"{'':>8}  stop: {100 * step.fail_ratio:.1f} % of calls failed (> {100 * MAX_FAIL:.0f} %)")
                break
            if step.cps < MIN_ACHIEVED * rate:
                print(f"{'':>8}  stop: completed {step.cps:.0f} calls/s of {rate} offered (saturated)")
                break
    finally:
        server.stop()
        uas.stop()
    return steps


HEADER = (f"{'offered':>8} {'placed':>7} {'completed':>9} {'failed':>7} {'calls/s':>8} {'server CPU':>10} "
          f"{'calls/s/core':>12} {'SIPp CPU':>8} {'other CPU':>9} {'drops srv/SIPp':>14} {'RTP held':>8}  notes")


def row(s: Step) -> str:
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(s.reasons.items(), key=lambda kv: -kv[1]))
    notes = "; ".join(x for x in (reasons, s.note) if x)
    held = "" if s.held_rtp is None else str(s.held_rtp)
    return (f"{s.rate:>8} {s.placed:>7} {s.completed:>9} {s.failed:>7} {s.cps:>8.0f} {100 * s.cpu:>9.0f}% "
            f"{s.per_core:>12.0f} {100 * s.sipp_cpu:>7.0f}% {100 * s.other_cpu:>8.0f}% "
            f"{f'{s.drops_server}/{s.drops_sipp}':>14} {held:>8}  {notes}")


def best(steps: list[Step]) -> Step | None:
    clean = [s for s in steps if s.fail_ratio <= MAX_FAIL and s.cps >= MIN_ACHIEVED * s.rate]
    return max(clean, key=lambda s: s.cps) if clean else None


def log_findings(path: Path) -> list[str]:
    """Distinct warning/error lines of a server log, with counts (call ids and numbers folded)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if re.search(r"WARNING|ERROR|CRITICAL|Traceback|Error", line):
            key = re.sub(r"^\S+ \S+ ", "", line)
            key = re.sub(r"\b[0-9a-f]{16}\b|\b[0-9a-f]{8}\b|\d+", "N", key)[:160]  # call ids: 16 hex (8 before)
            counts[key] = counts.get(key, 0) + 1
    return [f"{n:>7} x {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1])[:8]]


# --- call records and metrics: on vs off -------------------------------------------------------------

MAX_OVERHEAD = 0.05  # records + metrics may cost at most this share of the calls per CPU-second


def run_options() -> str:
    return subprocess.run([sys.executable, "-m", "runtime.cli", "run", "--help"], capture_output=True, text=True,
                          cwd=str(ROOT), env=dict(os.environ, PYTHONPATH=str(ROOT))).stdout


class Scraper:
    """GETs /metrics every `period` seconds in a thread (a Prometheus server, only more eager)."""

    def __init__(self, url: str, period: float = 1.0) -> None:
        import threading

        self.url, self.period = url, period
        self.ok = self.failed = 0
        self.last_error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import urllib.request

        for _ in range(1_000_000):
            if self._stop.wait(self.period):
                return
            try:
                with urllib.request.urlopen(self.url, timeout=5) as reply:
                    reply.read()
                self.ok += 1
            except OSError as exc:
                self.failed += 1
                self.last_error = str(exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def overhead(args: argparse.Namespace, work: Path, started: float) -> int:
    rate = args.overhead
    options = run_options()
    metrics = "--control" in options
    control_port = free_udp_port()  # a free number; TCP on the same number is free on this idle host too
    configs = {
        "off": ("--no-cdr",) + (("--control", "off") if metrics else ()),
        "on": (("--control", f"{HOST}:{control_port}") if metrics else ()),
    }
    print(f"\ncall records and metrics, off vs on, {rate} calls/s with SDP, {args.rounds} rounds of "
          f"{args.seconds:g} s each: records to SQLite in the work dir; metrics: "
          + (f"/metrics on {HOST}:{control_port} scraped every 1 s" if metrics else
             "this build has no control endpoint (--control), so records only"))
    servers: dict[str, tuple[Proc, Proc, int, int]] = {}
    scraper = None
    steps: dict[str, list[Step]] = {"off": [], "on": []}
    try:
        for name, extra in configs.items():
            server_port, uac_port, uas_port = free_udp_port(), free_udp_port(), free_udp_port()
            uas = start_uas(work, uas_port, True, f"overhead_{name}")
            server = start_callflow(work, f"overhead_{name}", server_port, uac_port, uas_port, extra)
            servers[name] = (server, uas, server_port, uac_port)
            if not sip_ping(server_port, 15) or not server.alive():
                print(f"records {name}: did not answer OPTIONS; log {server.log}:")
                print(server.log.read_text(errors="replace")[-2000:])
                return 1
        if metrics:
            scraper = Scraper(f"http://{HOST}:{control_port}/metrics")
        print(f"{'records':>8} {HEADER}")
        print("-" * (len(HEADER) + 9))
        for round_ in range(args.rounds):
            for name in (("off", "on") if round_ % 2 == 0 else ("on", "off")):
                left = BUDGET * 2 - (time.monotonic() - started)
                if left < args.seconds + 8:
                    print(f"{name:>8} skipped: {left:.0f} s left of the {2 * BUDGET:.0f} s budget")
                    continue
                server, uas, server_port, uac_port = servers[name]
                step = run_step(work, f"overhead_{name}_{round_}", rate, args, server.pid, server_port, uac_port,
                                uas, True, profile=False)
                settle(server.pid, 6)
                steps[name].append(step)
                print(f"{name:>8} {row(step)}")
    finally:
        if scraper is not None:
            scraper.stop()
        for server, uas, _, _ in servers.values():
            server.stop()
            uas.stop()
    if scraper is not None:
        print(f"/metrics scrapes: {scraper.ok} answered, {scraper.failed} failed"
              + (f" (last error: {scraper.last_error})" if scraper.failed else ""))
    written = _records_written(work / "state_overhead_on" / "cdr.sqlite")
    print(f"call records written by the 'on' server: {written}")
    clean = {name: [s for s in ss if s.fail_ratio <= MAX_FAIL and s.per_core > 0] for name, ss in steps.items()}
    if not clean["off"] or not clean["on"]:
        print("no clean step on one side (failed calls or no CPU figure): no ratio")
        return 1
    off = statistics.median(s.per_core for s in clean["off"])
    on = statistics.median(s.per_core for s in clean["on"])
    cost = 1 - on / off
    print(f"calls per CPU-second (median of {len(clean['off'])}/{len(clean['on'])} clean steps): "
          f"off {off:.0f}, on {on:.0f}; on/off = {on / off:.3f}, cost {100 * cost:+.1f} % "
          f"({'within' if cost < MAX_OVERHEAD else 'OVER'} the {100 * MAX_OVERHEAD:.0f} % budget)")
    return 0


def _records_written(path: Path) -> int | str:
    import sqlite3

    try:
        with sqlite3.connect(path) as db:
            return int(db.execute("SELECT count(*) FROM call_record").fetchone()[0])
    except sqlite3.Error as exc:
        return f"unreadable ({exc})"


# --- memory: what the server keeps after many short calls, per collector setting -----------------------

# Runs `callflow run` in the server process with the collector setting under test in place of
# runtime/cli.py's _tune_gc, gc.callbacks timing every collection, and a thread that answers the
# bench's requests (a file in the control folder) with the process's figures; tracemalloc snapshots
# when CALLFLOW_BENCH_TRACEMALLOC is set. Bench-only: nothing of it ships in the server.
MEMORY_WRAPPER = r'''
import gc, json, os, sys, threading, time
from pathlib import Path

ctl = Path(os.environ["CALLFLOW_BENCH_CTL"])
variant = os.environ["CALLFLOW_BENCH_GC"]
trace = os.environ.get("CALLFLOW_BENCH_TRACEMALLOC")
if trace:
    import tracemalloc
    tracemalloc.start(int(trace))
import runtime.cli as cli
import runtime.engine as engine_module

shipped = cli._tune_gc
def before():  # what _tune_gc did until it was measured (kept to compare against)
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
def freeze_only():
    gc.collect()
    gc.freeze()
def threshold(n):
    def tune():
        gc.collect()
        gc.freeze()
        gc.set_threshold(n, 10, 10)
    return tune
if variant == "shipped":
    cli._tune_gc = shipped
elif variant == "before":
    cli._tune_gc = before
elif variant == "default":
    cli._tune_gc = lambda: None
elif variant == "freeze":
    cli._tune_gc = freeze_only
elif variant.startswith("freeze+"):
    cli._tune_gc = threshold(int(variant[7:]))
else:
    raise SystemExit(f"unknown collector setting {variant!r}")

stats = {"collections": [0, 0, 0], "pause_total": 0.0, "pause_max": 0.0, "pauses_over_50ms": 0,
         "pauses_over_100ms": 0, "collected": 0, "pauses": [], "cpu_total": 0.0, "cpu_max": 0.0,
         "cpu_max_by_generation": [0.0, 0.0, 0.0]}
began = [0.0, 0.0]
def on_gc(phase, info):
    if phase == "start":
        began[0] = time.perf_counter()
        began[1] = time.thread_time()
        return
    pause = time.perf_counter() - began[0]
    cpu = time.thread_time() - began[1]  # the pause without the time the shared machine took the core away
    g = info["generation"]
    stats["collections"][g] += 1
    stats["cpu_total"] += cpu
    stats["cpu_max"] = max(stats["cpu_max"], cpu)
    stats["cpu_max_by_generation"][g] = max(stats["cpu_max_by_generation"][g], cpu)
    stats["pause_total"] += pause
    stats["pause_max"] = max(stats["pause_max"], pause)
    stats["pauses_over_50ms"] += pause > 0.05
    stats["pauses_over_100ms"] += pause > 0.1
    stats["collected"] += info["collected"]
    if len(stats["pauses"]) < 2_000_000:
        stats["pauses"].append(round(pause * 1e6))
gc.callbacks.append(on_gc)

engines = []
original_init = engine_module.Engine.__init__
def init(self, *a, **kw):
    original_init(self, *a, **kw)
    engines.append(self)
engine_module.Engine.__init__ = init

# the other per-call tables an ended call must leave empty: the SDK's, the .flow runtime's, the CDR's
import callflow.sdk as sdk_module
import callflow.flowrun.dialplan as dialplan_module
import runtime.records.cdr as cdr_module
owners = {"sdk": [], "dialplan": [], "cdr": []}
def capture(cls, key):
    original = cls.__init__
    def wrapped(self, *a, **kw):
        original(self, *a, **kw)
        owners[key].append(self)
    cls.__init__ = wrapped
capture(sdk_module.SipServer, "sdk")
capture(dialplan_module.Dialplan, "dialplan")
capture(cdr_module.CallRecorder, "cdr")

def leftovers(e):
    """What ended calls could have left behind, table by table (all 0 once every call is over)."""
    left = {}
    for server in owners["sdk"]:
        left["sdk_futures"] = len(server._routed) + len(server._transfers)
        left["sdk_pending_incoming"] = len(server._pending_incoming)
        left["sdk_tasks"] = len(server._tasks)
    for plan in owners["dialplan"]:
        left["dialplan_call_facts"] = len(plan.records.calls)
    for cdr in owners["cdr"]:
        left["cdr_open"] = len(cdr.open) + len(cdr._writing) + len(cdr._closing) + len(cdr._cancelled)
    calls = e.calls
    if hasattr(calls, "indexed"):
        left["call_limit_index"] = calls.indexed()
    runner = e.call_runner
    left["runner_timers"] = runner._live if isinstance(getattr(runner, "_live", None), int) else 0
    left["runner_tasks"] = len(runner._tasks) + len(runner.writes)
    left["runner_timer_heap"] = len(runner._heap)  # stale entries are dropped lazily (bounded)
    media = e.media
    left["media_sessions"] = len(getattr(media, "_sessions", ()))
    left["dtmf_pumps"] = sum(len(s._pumps) for s in getattr(media, "_sessions", ()))
    left["recordings"] = sum(len(s.recordings) for s in runner.sessions.values())
    return left

def rss_kb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1

import ctypes
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]
try:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
except (OSError, AttributeError):
    libc = None

def malloc_figures(out, suffix=""):
    if libc is not None:
        m = libc.mallinfo2()
        out["malloc_in_use_kb" + suffix] = (m.uordblks + m.hblkhd) // 1024
        out["malloc_free_held_kb" + suffix] = m.fordblks // 1024

def answer(name):
    out = {k: v for k, v in stats.items() if k != "pauses"}
    malloc_figures(out)
    pauses = sorted(stats["pauses"])
    out["pause_p99_us"] = pauses[int(len(pauses) * 0.99)] if pauses else 0
    out["rss_kb"] = rss_kb()
    out["allocated_blocks"] = sys.getallocatedblocks()
    out["gc_tracked"] = len(gc.get_objects())
    out["gc_count"] = gc.get_count()
    out["frozen"] = gc.get_freeze_count()
    e = engines[0] if engines else None
    if e is not None:
        out["calls"] = len(e.calls)
        out["dialogs"] = len(e.dialogs)
        out["call_sessions"] = len(e.call_runner.sessions)
        out["server_transactions"] = len(e.layer.server)
        out["client_transactions"] = len(e.layer.client)
        out["left"] = leftovers(e)
    if name.startswith("collect"):
        t = time.perf_counter()
        gc.set_debug(gc.DEBUG_SAVEALL)  # keep what the collection finds, to say what the cycles are made of
        out["full_collection_freed"] = gc.collect()
        out["full_collection_s"] = time.perf_counter() - t
        gc.set_debug(0)
        kinds = {}
        for obj in gc.garbage:
            kind = type(obj).__module__ + "." + type(obj).__qualname__
            kinds[kind] = kinds.get(kind, 0) + 1
        out["garbage_kinds"] = sorted(kinds.items(), key=lambda kv: -kv[1])[:8]
        gc.garbage.clear()
        gc.collect()
        out["rss_after_collection_kb"] = rss_kb()
        if libc is not None:
            libc.malloc_trim(0)
            out["rss_after_trim_kb"] = rss_kb()
            malloc_figures(out, "_after_trim")
    if trace and name.split("_")[0] in ("start", "during", "after"):
        tracemalloc.take_snapshot().dump(str(ctl / f"{name}.snapshot"))
    (ctl / f"{name}.tmp").write_text(json.dumps(out))
    os.replace(ctl / f"{name}.tmp", ctl / f"{name}.json")

def serve_requests():
    for _ in range(100_000_000):
        for req in ctl.glob("*.req"):
            req.unlink()
            answer(req.stem)
        time.sleep(0.2)
threading.Thread(target=serve_requests, daemon=True).start()
sys.exit(cli.main(sys.argv[1:]))
'''


def ask(ctl: Path, name: str, timeout: float = 60) -> dict:
    """The server's figures (MEMORY_WRAPPER's answer), or {} when it does not answer in time."""
    import json

    (ctl / f"{name}.req").write_text("")
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.1) + 1):
        if (ctl / f"{name}.json").exists():
            return json.loads((ctl / f"{name}.json").read_text())
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return {}


def memory(args: argparse.Namespace, work: Path) -> int:
    """RSS and Python heap after each checkpoint of short calls, per collector setting."""
    checkpoints = args.memory
    rate = args.memory_rate
    print(f"\nmemory: {rate} calls/s with SDP, hold {args.hold_ms} ms; figures after "
          f"{', '.join(f'{n:,}' for n in checkpoints)} calls, per collector setting (runtime/cli.py _tune_gc "
          "replaced in the server process: shipped = what _tune_gc does, default = CPython's own, "
          "freeze = start-up objects frozen, freeze+N = frozen and a youngest generation of N)")
    if args.tracemalloc:
        print(f"tracemalloc on ({args.tracemalloc} frames): slower, and its own memory is in the RSS")
    head = (f"{'setting':>14} {'calls':>8} {'failed':>6} {'RSS MB':>7} {'KB/call':>8} {'blocks':>9} {'gc objs':>9} "
            f"{'malloc MB':>9} {'free MB':>7} {'gen0/1/2':>16} {'GC s':>6} {'max ms':>7} {'p99 ms':>6} {'>100ms':>6} "
            f"{'GC CPU s':>8} {'CPU max ms g0/g1/g2':>20} {'CPU':>5} {'live':>14}")
    status = 0
    for variant in args.gc:
        server_port, uac_port, uas_port = free_udp_port(), free_udp_port(), free_udp_port()
        tag = f"memory_{variant.replace('+', '_')}"
        ctl = work / f"{tag}_ctl"
        ctl.mkdir(exist_ok=True)
        for old in ctl.iterdir():
            old.unlink()
        total_seconds = int(checkpoints[-1] / rate * 1.5) + 120
        uas = start_uas(work, uas_port, True, tag, timeout=total_seconds)
        env = {"CALLFLOW_BENCH_CTL": str(ctl), "CALLFLOW_BENCH_GC": variant}
        if args.tracemalloc:
            env["CALLFLOW_BENCH_TRACEMALLOC"] = str(args.tracemalloc)
        server = start_callflow(work, tag, server_port, uac_port, uas_port, entry=("-c", MEMORY_WRAPPER),
                                env_extra=env)
        for _ in range(3):  # a free UDP port may be taken over TCP: try other ports
            if sip_ping(server_port, 20) or server.alive():
                break
            server.stop()
            server_port = free_udp_port()
            server = start_callflow(work, tag, server_port, uac_port, uas_port, entry=("-c", MEMORY_WRAPPER),
                                    env_extra=env)
        try:
            if not sip_ping(server_port, 20) or not server.alive():
                print(f"{variant}: did not answer OPTIONS; log {server.log}:")
                print(server.log.read_text(errors="replace")[-2000:])
                status = 1
                continue
            settle(server.pid, 10)
            base = ask(ctl, "start")
            print(f"\n{variant}: pid {server.pid}; at start RSS {base.get('rss_kb', 0) / 1024:.1f} MB, "
                  f"{base.get('allocated_blocks', 0):,} blocks, {base.get('frozen', 0):,} frozen objects")
            print(head)
            print("-" * len(head))
            done = placed = failed = 0
            for n in checkpoints:
                step_args = argparse.Namespace(**vars(args))
                step_args.seconds = (n - done) / rate
                # the working set under load: the same figures near the end of the offered load
                probe = threading.Timer(step_args.seconds * 0.9, (ctl / f"during_{n}.req").write_text, ("",))
                probe.start()
                step = run_step(work, f"{tag}_{n}", rate, step_args, server.pid, server_port, uac_port, uas, True,
                                profile=False)
                probe.cancel()
                settle(server.pid, 15)
                done = n
                placed += step.placed
                failed += step.failed
                fig = _quiet_figures(ctl, n)
                if not fig:
                    print(f"{variant:>14} {n:>8}  the server did not report (alive: {server.alive()})")
                    status = 1
                    break
                grown = (fig["rss_kb"] - base["rss_kb"]) / max(1, placed)
                live = f"{fig.get('calls', '?')}/{fig.get('dialogs', '?')}/{fig.get('call_sessions', '?')}/" \
                       f"{fig.get('server_transactions', 0) + fig.get('client_transactions', 0)}"
                gens = "/".join(str(x) for x in fig["collections"])
                during = ask(ctl, f"during_{n}", timeout=1)
                if during:
                    live_txns = during.get("server_transactions", 0) + during.get("client_transactions", 0)
                    print(f"{'(under load)':>14} {'':>8} {'':>6} {during['rss_kb'] / 1024:>7.1f} {'':>8} "
                          f"{during['allocated_blocks']:>9,} {during['gc_tracked']:>9,} "
                          f"{during.get('malloc_in_use_kb', 0) / 1024:>9.1f} "
                          f"{during.get('malloc_free_held_kb', 0) / 1024:>7.1f} {'':>16} {'':>6} {'':>7} {'':>6} "
                          f"{'':>6} {'':>8} {'':>20} {'':>5} {during.get('calls', '?')}/{during.get('dialogs', '?')}/"
                          f"{during.get('call_sessions', '?')}/{live_txns}")
                print(f"{variant:>14} {placed:>8} {failed:>6} {fig['rss_kb'] / 1024:>7.1f} {grown:>8.2f} "
                      f"{fig['allocated_blocks']:>9,} {fig['gc_tracked']:>9,} "
                      f"{fig.get('malloc_in_use_kb', 0) / 1024:>9.1f} {fig.get('malloc_free_held_kb', 0) / 1024:>7.1f} "
                      f"{gens:>16} {fig['pause_total']:>6.2f} "
                      f"{fig['pause_max'] * 1000:>7.1f} {fig['pause_p99_us'] / 1000:>6.1f} "
                      f"{fig['pauses_over_100ms']:>6} {fig['cpu_total']:>8.2f} "
                      f"{'/'.join(f'{x * 1000:.0f}' for x in fig['cpu_max_by_generation']):>20} "
                      f"{100 * step.cpu:>4.0f}% {live:>14}")
                left = fig.get("left") or {}
                if left:
                    print(f"{'':>14} left behind: " + ", ".join(f"{k} {v}" for k, v in left.items()))
            if args.tracemalloc:
                _tracemalloc_diff(ctl, "start", f"after_{checkpoints[0]}", checkpoints[0])
                if len(checkpoints) > 1:
                    _tracemalloc_diff(ctl, f"after_{checkpoints[0]}", f"after_{checkpoints[-1]}",
                                      checkpoints[-1] - checkpoints[0])
                _tracemalloc_top(ctl / f"during_{checkpoints[-1]}.snapshot", "held under load")
            final = ask(ctl, "collect_end", timeout=120)
            if final:
                print(f"{'':>14} then a full collection: freed {final['full_collection_freed']:,} objects in "
                      f"{final['full_collection_s'] * 1000:.0f} ms; RSS {final['rss_kb'] / 1024:.1f} -> "
                      f"{final['rss_after_collection_kb'] / 1024:.1f} MB"
                      + (f"; then malloc_trim(0): RSS {final['rss_after_trim_kb'] / 1024:.1f} MB" if
                         "rss_after_trim_kb" in final else ""))
                if final.get("garbage_kinds"):
                    print(f"{'':>14} what the cycles were made of: "
                          + ", ".join(f"{n:,} {kind}" for kind, n in final["garbage_kinds"]))
        finally:
            server.stop()
            uas.stop()
    print("\ncolumns: RSS = VmRSS after the calls and a quiet second; KB/call = RSS growth since start per call "
          "placed; blocks = sys.getallocatedblocks() (the Python heap); gc objs = objects the collector tracks; "
          "malloc MB / free MB = glibc's mallinfo2: bytes in use, and bytes freed but kept by the allocator; "
          "gen0/1/2 = collections of each generation during the run; GC s = total time in collections; max/p99 "
          "= longest and 99th-percentile collection pause (wall clock); >100ms = pauses over 100 ms; GC CPU s and "
          "CPU max = the same in the thread's CPU time, without the time the shared machine took the core away, "
          "longest per generation; CPU = server CPU in the "
          "last stretch; live = calls/dialogs/call sessions/transactions left once the transactions' RFC 3261 "
          "wait states are over (at most 40 s): 0/0/0/0 when ended calls leave nothing behind")
    return status


def _quiet_figures(ctl: Path, n: int) -> dict:
    """The server's figures once its transactions have left their RFC 3261 wait states (Timer J, D and
    K: 64*T1 = 32 s at most over UDP), so what remains is what the ended calls left behind."""
    fig: dict = {}
    for i in range(40):
        fig = ask(ctl, f"wait_{n}_{i}")
        if not fig or fig.get("server_transactions", 0) + fig.get("client_transactions", 0) == 0:
            break
        time.sleep(1.0)
    return ask(ctl, f"after_{n}") if fig else fig


def _tracemalloc_top(path: Path, what: str) -> None:
    """The allocation sites holding most memory in one snapshot."""
    import tracemalloc

    if not path.exists():
        return
    snap = tracemalloc.Snapshot.load(str(path)).filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    stats = snap.statistics("traceback")
    total = sum(s.size for s in stats)
    print(f"{'':>14} tracemalloc: {what}, {total / 1024 / 1024:.1f} MB traced; the largest allocation sites:")
    root = str(ROOT) + os.sep
    for stat in stats[:12]:
        frames = [f"{f.filename.replace(root, '')}:{f.lineno}" for f in reversed(stat.traceback)][:3]
        print(f"{'':>16} {stat.size / 1024:>9.0f} KB {stat.count:>8} blocks  {' <- '.join(frames)}")


def _tracemalloc_diff(ctl: Path, before: str, after: str, calls: int) -> None:
    """The allocation sites that grew most between two snapshots, `calls` calls apart."""
    import tracemalloc

    first, last = ctl / f"{before}.snapshot", ctl / f"{after}.snapshot"
    if not (first.exists() and last.exists()):
        return
    a = tracemalloc.Snapshot.load(str(first)).filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    b = tracemalloc.Snapshot.load(str(last)).filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    print(f"{'':>14} tracemalloc: allocation sites that grew most from {before} to {after} ({calls:,} calls)")
    root = str(ROOT) + os.sep
    for stat in b.compare_to(a, "traceback")[:12]:
        frames = [f"{f.filename.replace(root, '')}:{f.lineno}" for f in reversed(stat.traceback)][:3]
        print(f"{'':>16} {stat.size_diff / 1024:>9.0f} KB {stat.size_diff / calls:>7.1f} B/call "
              f"{stat.count_diff:>+8} blocks  {' <- '.join(frames)}")


def parse_rates(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=parse_rates, default=parse_rates("100,200,300,600,900"),
                        help="Callflow's offered rates, calls/s (default 100,200,300,600,900)")
    parser.add_argument("--kamailio-rates", type=parse_rates, default=parse_rates("600,1200,1800,3600"),
                        help="Kamailio's offered rates (default 600,1200,1800,3600)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each step (default 10)")
    parser.add_argument("--hold-ms", type=int, default=0, help="time between ACK and BYE (default 0)")
    parser.add_argument("--media", choices=["sdp", "both"], default="both",
                        help="both (default): Callflow also without SDP after the SDP series")
    parser.add_argument("--kamailio-workers", type=int, default=1, help="Kamailio UDP workers (default 1)")
    parser.add_argument("--no-kamailio", action="store_true", help="skip the Kamailio series")
    parser.add_argument("--profile", type=int, metavar="RATE",
                        help="py-spy record Callflow during its SDP step at RATE (raw stacks in the work dir)")
    parser.add_argument("--pin", choices=["on", "off"], default="on" if (os.cpu_count() or 1) >= 2 else "off",
                        help="on (default with 2+ CPUs): server on CPU 0, SIPp on CPU 1 (taskset), so the load "
                             "generator does not preempt the server on its core")
    parser.add_argument("--work-dir", help="where SIPp and server files go (default: a new temp dir)")
    parser.add_argument("--overhead", type=int, metavar="RATE",
                        help="instead of the series: call records and metrics off vs on, in turns at RATE")
    parser.add_argument("--rounds", type=int, default=3, help="--overhead: off/on pairs (default 3)")
    parser.add_argument("--memory", type=parse_rates, metavar="N,N,...", nargs="?", const=[10_000, 100_000],
                        help="instead of the series: the server's memory after N short calls (cumulative "
                             "checkpoints; default 10000,100000), per collector setting (--gc)")
    parser.add_argument("--memory-rate", type=int, default=300, help="--memory: offered calls/s (default 300)")
    parser.add_argument("--gc", type=lambda t: [x for x in t.split(",") if x], default=["shipped", "default"],
                        help="--memory: collector settings, comma-separated: shipped (runtime/cli.py _tune_gc), "
                             "default (CPython's), freeze, freeze+N, before (freeze+(50000, 20, 100), what "
                             "_tune_gc did until measured) (default shipped,default)")
    parser.add_argument("--tracemalloc", type=int, metavar="FRAMES", default=0,
                        help="--memory: trace allocations (FRAMES deep) and print the sites that grew most "
                             "between the first and the last checkpoint")
    args = parser.parse_args()
    if not 1 <= args.seconds <= 30:
        parser.error("--seconds must be within 1..30")

    if args.overhead or args.memory:
        args.no_kamailio = True
    missing = [name for name in ("sipp",) + (() if args.no_kamailio else ("kamailio",)) if shutil.which(name) is None]
    if missing:
        print(f"calls_per_second: {', '.join(missing)} not installed. Install with:\n"
              "    apt-get install -y sip-tester kamailio    # Debian's SIPp package is named sip-tester\n"
              "(or pass --no-kamailio to measure Callflow alone)", file=sys.stderr)
        return 2

    if args.pin == "on" and shutil.which("taskset"):
        PIN["server"], PIN["sipp"] = ["taskset", "-c", "0"], ["taskset", "-c", "1"]
    started = time.monotonic()
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="callflow-cps-"))
    work.mkdir(parents=True, exist_ok=True)
    for sdp in (True, False):
        suffix = "sdp" if sdp else "nosdp"
        (work / f"uac_{suffix}.xml").write_text(uac_xml(sdp))
        (work / f"uas_{suffix}.xml").write_text(uas_xml(sdp))
    _child_cpu_delta()

    sipp_version = subprocess.run(["sipp", "-v"], capture_output=True, text=True).stdout.strip().splitlines()
    commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                            text=True).stdout.strip()
    print(f"calls per second: {os.cpu_count()} CPUs; {args.seconds:g} s per step; hold {args.hold_ms} ms; "
          f"SIPp {sipp_version[0].split()[1] if sipp_version else '?'}; Callflow {commit or '?'}; work dir {work}")
    print(f"Callflow: one process, {FLOW.relative_to(ROOT)}, --log-level warning (logging cost not measured), "
          f"--rtp-ports {RTP_PORTS[0]}-{RTP_PORTS[1]}")
    if not args.no_kamailio:
        print(f"Kamailio: stateful proxy (tm, sl, rr; record_route, t_relay), {args.kamailio_workers} UDP worker "
              f"(-n {args.kamailio_workers}); CPU summed over all its processes")
    if PIN["server"]:
        print("pinned: server on CPU 0, SIPp UAC and UAS on CPU 1 (taskset; --pin off to let them float)")
    load1 = Path("/proc/loadavg").read_text().split()[0]
    print(f"machine load average (1 min) before the run: {load1}; 'other CPU' below is what the rest of the "
          "machine used during each step: figures taken beside other load understate the servers")
    print(f"stepping stops after > {100 * MAX_FAIL:.0f} % failed calls or < {100 * MIN_ACHIEVED:.0f} % of the "
          "offered rate completed; CPU % is of one core")

    if args.memory:
        status = memory(args, work)
        print(f"\ntotal {time.monotonic() - started:.0f} s; SIPp screens, stats and logs in {work}")
        return status
    if args.overhead:
        status = overhead(args, work, started)
        print(f"\ntotal {time.monotonic() - started:.0f} s; SIPp screens, stats and logs in {work}")
        return status
    results: dict[str, list[Step]] = {}
    results["Callflow, SDP (B2BUA + RTP relay)"] = series(
        "Callflow, SDP (B2BUA + RTP relay)", "callflow_sdp", args.rates, args, work, started, True, "callflow")
    if not args.no_kamailio:
        results["Kamailio, SDP (stateful proxy)"] = series(
            "Kamailio, SDP (stateful proxy)", "kamailio", args.kamailio_rates, args, work, started, True, "kamailio")
    if args.media == "both":
        results["Callflow, no SDP (signalling only)"] = series(
            "Callflow, no SDP (signalling only)", "callflow_nosdp", args.rates, args, work, started, False,
            "callflow")

    print(f"\nsummary (best step with <= {100 * MAX_FAIL:.0f} % failed and >= {100 * MIN_ACHIEVED:.0f} % of the "
          "offered rate completed):")
    for name, steps in results.items():
        b = best(steps)
        if b is None:
            print(f"  {name:<36} no clean step")
        else:
            print(f"  {name:<36} {b.cps:>6.0f} calls/s at {100 * b.cpu:.0f} % CPU = {b.per_core:.0f} calls/s per core")
    print(f"  target: Callflow >= {TARGET} calls/s through one process; reference figures: {PEERS}")
    for tag in ("callflow_sdp", "callflow_nosdp"):
        findings = log_findings(work / f"{tag}.log")
        if findings:
            print(f"\nCallflow log warnings/errors ({work / f'{tag}.log'}):")
            print("\n".join(findings))
    print(f"\ntotal {time.monotonic() - started:.0f} s; SIPp screens, stats and logs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
