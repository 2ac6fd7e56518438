"""The highest offered call rate one Callflow process carries with no failed call, and its CPU share,
next to Kamailio (stateful proxy, one worker) in the same run.

The same calls as bench/calls_per_second.py (its SIPp scenarios, servers and /proc sampling): a SIPp
UAC on line `load` sends complete calls with SDP (INVITE/100/180/200/ACK/BYE/200; the RTP relay
allocates ports) through the server to a SIPp UAS on line `far`. The offered rate ramps up step by
step (--seconds each, default 10): it grows by --growth (default 1.5x) while every call of a step
completes, and once a step fails it is bisected between the last clean and the first failed rate
until the two are --resolution apart (default 10 %). A step is clean when no call failed (every call
SIPp placed completed, no retransmission timeout, no 5xx such as admission control's 503) and the
server completed at least 90 % of the offered rate over the steady window. After a failed step the
server and the UAS are restarted, so the calls a failed step left behind (their 32 s of RFC 3261
wait states, the UAS's hung calls) do not weigh on the next step.

Printed per step: the calls_per_second.py columns (placed, completed, failed, calls/s, server CPU %
of one core from /proc/PID/stat utime+stime over the steady window, calls/s per core, SIPp's and the
rest of the machine's CPU, UDP drops). Then, for each server, the highest clean offered rate with the
CPU share it needed there; Kamailio's CPU at that same offered rate (its ramp starts there); and
Kamailio's figures as a ratio to Callflow's (rate, and calls per CPU-second). Where SIPp (pinned to
the other core) uses most of its core, a clean step's rate is the generator's limit, not the
server's: the summary says so, and the figure is a lower bound.

Bounded: the whole run stops at --budget seconds (default 290); a step that would not fit is skipped.

    apt-get install -y sip-tester kamailio
    python bench/call_capacity.py        # Callflow from 200 calls/s; Kamailio from Callflow's best rate
    python bench/call_capacity.py --start 300 --seconds 8 --no-kamailio
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import calls_per_second as cps  # noqa: E402 - the bench folder is not a package

GENERATOR_BOUND = 0.90  # SIPp (UAC + UAS) above this share of its core: the generator is the limit


@dataclass
class Ramp:
    """One server's ramp: every step, the best clean one and the first rate that failed."""

    name: str
    steps: list[cps.Step] = field(default_factory=list)
    clean: cps.Step | None = None
    failed_at: int | None = None
    generator_bound: bool = False
    stopped: str = ""


def clean(step: cps.Step, seconds: float) -> bool:
    """No failed call, every call of the step placed, and the server carried 90 % of the offered rate."""
    total = max(1, int(step.rate * seconds))
    return step.failed == 0 and step.placed >= total and step.cps >= cps.MIN_ACHIEVED * step.rate


def next_rate(ramp: Ramp, rate: int, args: argparse.Namespace) -> int | None:
    """The next offered rate: grow while clean, bisect once a step failed; None when done."""
    good = ramp.clean.rate if ramp.clean is not None else None
    bad = ramp.failed_at
    if bad is None:
        return max(rate + 1, int(round(rate * args.growth / 10.0)) * 10)
    low = good if good is not None else 0
    if bad - low <= max(10, args.resolution * bad):
        return None
    return int(round((low + bad) / 2 / 10.0)) * 10 or None


def ramp(name: str, tag: str, kind: str, first: int, args: argparse.Namespace, work: Path,
         deadline: float) -> Ramp:
    result = Ramp(name)
    server = uas = None
    server_port = uac_port = 0

    def start() -> bool:
        nonlocal server, uas, server_port, uac_port
        server_port, uac_port, uas_port = cps.free_udp_port(), cps.free_udp_port(), cps.free_udp_port()
        n = len(result.steps)
        uas = cps.start_uas(work, uas_port, True, f"{tag}_{n}", timeout=int(args.budget) + 30)
        if kind == "callflow":
            server = cps.start_callflow(work, f"{tag}_{n}", server_port, uac_port, uas_port)
        else:
            server = cps.start_kamailio(work, server_port, uas_port, 1)
        if not cps.sip_ping(server_port, 15) or not server.alive():
            print(f"{name}: did not answer OPTIONS on {cps.HOST}:{server_port}; log {server.log}:")
            print(server.log.read_text(errors="replace")[-2000:])
            return False
        return True

    def stop() -> None:
        for proc in (server, uas):
            if proc is not None:
                proc.stop()

    print(f"\n{name}: from {first} calls/s, x{args.growth:g} while clean, then bisected to "
          f"{100 * args.resolution:.0f} %; {args.seconds:g} s per step, SDP offer/answer")
    print(cps.HEADER)
    print("-" * len(cps.HEADER))
    rate: int | None = first
    try:
        if not start():
            result.stopped = "server did not start"
            return result
        for _ in range(30):
            if rate is None:
                break
            if deadline - time.monotonic() < args.seconds + 10:
                result.stopped = f"budget: no time left for {rate} calls/s"
                print(f"{rate:>8}  skipped: the {args.budget:.0f} s budget is spent")
                break
            assert server is not None and uas is not None
            step = cps.run_step(work, f"{tag}_{len(result.steps)}", rate, args, server.pid, server_port, uac_port,
                                uas, True, profile=False)
            cps.settle(server.pid, 6)
            if not server.alive():
                step.note = (step.note + "; " if step.note else "") + f"SERVER EXITED (code {server.p.poll()})"
            result.steps.append(step)
            ok = clean(step, args.seconds)
            refused = responses(work / f"{tag}_{len(result.steps) - 1}_{rate}_errors.log")
            if refused:
                step.note = (step.note + "; " if step.note else "") + refused
            print(cps.row(step) + ("" if ok else "  <- not clean"))
            if ok:
                if result.clean is None or rate > result.clean.rate:
                    result.clean = step
                if step.sipp_cpu >= GENERATOR_BOUND and result.failed_at is None:
                    result.generator_bound = True
                    result.stopped = f"SIPp used {100 * step.sipp_cpu:.0f} % of its core: the generator's limit"
                    print(f"{'':>8}  stop: {result.stopped}")
                    break
            else:
                result.failed_at = rate if result.failed_at is None else min(result.failed_at, rate)
                stop()
                if not start():
                    result.stopped = "server did not restart"
                    break
            rate = next_rate(result, rate, args)
    finally:
        stop()
    return result


def responses(errors: Path) -> str:
    """The responses SIPp did not expect (admission control's 503, a 200 retransmitted after its call was
    aborted), counted per message, from its error log."""
    try:
        text = errors.read_text(errors="replace")
    except OSError:
        return ""
    counts: dict[str, int] = {}
    for status in re.findall(r"received 'SIP/2\.0 ([1-6]\d\d [^\r\n']*)", text):
        counts[status] = counts.get(status, 0) + 1
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
    return ("unexpected responses: " + ", ".join(f"{n} x {s}" for s, n in top)) if top else ""


def summary_line(r: Ramp) -> str:
    if r.clean is None:
        return f"  {r.name:<34} no clean step ({r.stopped or 'every step had failed calls'})"
    s = r.clean
    bound = "" if r.failed_at is None else f"; first failed at {r.failed_at}"
    lower = " (a lower bound: " + r.stopped + ")" if r.generator_bound else ""
    return (f"  {r.name:<34} {s.rate:>5} calls/s offered, {s.cps:.0f} completed, no failed call, at "
            f"{100 * s.cpu:.0f} % of a core = {s.per_core:.0f} calls per CPU-second{bound}{lower}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", type=int, default=200, help="Callflow's first offered rate (default 200)")
    parser.add_argument("--kamailio-start", type=int, default=1000,
                        help="Kamailio's first rate when Callflow had no clean step (default 1000; otherwise "
                             "Kamailio starts at Callflow's highest clean rate, to compare the CPU at the same load)")
    parser.add_argument("--growth", type=float, default=1.5, help="rate factor while clean (default 1.5)")
    parser.add_argument("--resolution", type=float, default=0.10,
                        help="stop bisecting when clean and failed rates are this share apart (default 0.10)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each step (default 10)")
    parser.add_argument("--budget", type=float, default=290.0, help="the whole run, seconds (default 290)")
    parser.add_argument("--no-kamailio", action="store_true", help="Callflow only")
    parser.add_argument("--pin", choices=["on", "off"], default="on" if (os.cpu_count() or 1) >= 2 else "off",
                        help="on (default with 2+ CPUs): server on CPU 0, SIPp on CPU 1")
    parser.add_argument("--work-dir", help="where SIPp and server files go (default: a new temp dir)")
    args = parser.parse_args()
    if not 1 <= args.seconds <= 30:
        parser.error("--seconds must be within 1..30")
    if not 1.1 <= args.growth <= 4:
        parser.error("--growth must be within 1.1..4")
    if not 30 <= args.budget <= 900:
        parser.error("--budget must be within 30..900 seconds")
    args.hold_ms = 0  # what run_step reads from calls_per_second's arguments

    missing = [n for n in ("sipp",) + (() if args.no_kamailio else ("kamailio",)) if shutil.which(n) is None]
    if missing:
        print(f"call_capacity: {', '.join(missing)} not installed: apt-get install -y sip-tester kamailio "
              "(or --no-kamailio)", file=sys.stderr)
        return 2
    if args.pin == "on" and shutil.which("taskset"):
        cps.PIN["server"], cps.PIN["sipp"] = ["taskset", "-c", "0"], ["taskset", "-c", "1"]
    started = time.monotonic()
    deadline = started + args.budget
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="callflow-capacity-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "uac_sdp.xml").write_text(cps.uac_xml(True))
    (work / "uas_sdp.xml").write_text(cps.uas_xml(True))
    cps._child_cpu_delta()
    commit = subprocess.run(["git", "-C", str(cps.ROOT), "describe", "--always", "--dirty"], capture_output=True,
                            text=True).stdout.strip()
    load1 = Path("/proc/loadavg").read_text().split()[0]
    print(f"call capacity: {os.cpu_count()} CPUs, load average {load1} before the run; Callflow {commit or '?'}; "
          f"budget {args.budget:.0f} s; work dir {work}")
    if cps.PIN["server"]:
        print("pinned: server on CPU 0, SIPp UAC and UAS on CPU 1 (taskset)")
    print("CPU % is of one core; 'other CPU' is what the rest of the machine used meanwhile (it skews the figures)")

    ramps = []
    # Callflow gets the larger share of the budget: its ramp is the figure this bench is for
    share = deadline if args.no_kamailio else started + 0.68 * args.budget
    ramps.append(ramp("Callflow (B2BUA + RTP relay)", "callflow", "callflow", args.start, args, work, share))
    if not args.no_kamailio:
        # Kamailio's ramp starts at Callflow's highest clean rate: its first step is the same load
        first = ramps[0].clean.rate if ramps[0].clean is not None else args.kamailio_start
        ramps.append(ramp("Kamailio (stateful proxy, 1 worker)", "kamailio", "kamailio", first, args,
                          work, deadline))

    print("\nhighest offered rate with no failed call, and the CPU share it needed:")
    for r in ramps:
        print(summary_line(r))
    if len(ramps) == 2 and ramps[0].clean is not None and ramps[1].clean is not None:
        a, b = ramps[0].clean, ramps[1].clean
        per_core = f"{b.per_core / a.per_core:.1f}x" if a.per_core else "?"
        same = next((s for s in ramps[1].steps if s.rate == a.rate and clean(s, args.seconds)), None)
        if same is not None and same.cpu > 0:
            print(f"  at the same offered rate, {a.rate} calls/s: Callflow {100 * a.cpu:.0f} % of a core, Kamailio "
                  f"{100 * same.cpu:.0f} %: Callflow needs {a.cpu / same.cpu:.1f}x the CPU")
        print(f"  Kamailio / Callflow: {b.rate / a.rate:.1f}x the rate"
              f"{' (at least: SIPp was the limit)' if ramps[1].generator_bound else ''}, {per_core} the calls per "
              "CPU-second")
    findings = cps.log_findings(work / "callflow_0.log")
    if findings:
        print("\nCallflow log warnings/errors (first server):")
        print("\n".join(findings))
    print(f"\ntotal {time.monotonic() - started:.0f} s; SIPp screens, stats and logs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
