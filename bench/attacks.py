"""Attack a running Callflow as SIPVicious-style attackers would, and print what held (issue 9).

Starts `python -m runtime.cli run FLOW --listen 127.0.0.1:PORT ...` as a child process (a throwaway
state folder, no control endpoint) with a line `itsp` pointing at a scripted provider on
127.0.0.20, and runs each attack against it from loopback addresses standing in for the parties:

    127.0.0.10  alice's phone (a scripted phone doing digest with qop properly)
    127.0.0.11  bob's phone          127.0.0.13  carol's phone (the lock-out victim)
    127.0.0.20  the provider (scripted UAS; its media on the same address)
    127.0.0.21  an address the line `trust`s       127.0.0.66  the attacker
    127.0.0.99  a victim of amplification (the attacker "spoofs" its address by binding it)
    127.0.0.100-132, 127.0.2.x ...  the attacker's many sources

Every 127.0.0.0/8 address is local on Linux, so binding one is what spoofing it looks like to the
server; where the attacker must *not* see the answers (spoofed packets in attack 3) the bench sends
raw IP datagrams with a forged source instead (needs root; skipped without it).

Attacks, each printing its figure (see the brief in issue 9's "Done means"):

 1. RTP bleed: spray the relay's port range from a stranger during ringing (early media flowing)
    and after the answer; packets forged from the phone's (1c) or the provider's (1e) address, another
    port, locking the latch first; a previous caller still sending after a new call took its ports.
 2. Replayed credentials: a captured Proxy-Authorization (qop=auth, and a legacy-digest user's
    answer without qop) replayed from other hosts, to other numbers, and from the phone's address.
 3. Password guessing over 33 sources interleaved with the attacker's own logins; whether the
    victim's phone is locked out (by 10 spoofed packets, and by the guessing itself).
 4. REGISTER flood by one authenticated user (2,000 REGISTERs, large contacts; then large
    headers), and unauthenticated OPTIONS with large headers: server RSS, bindings held.
 5. Connection flood: up to 20,000 idle TCP connections from many sources: server descriptors,
    whether new calls (UDP, and TCP from a fresh source) are still served.
 6. Hostile dialled number / caller name against backtracking-prone rule patterns: time to answer.
 7. Amplification: bytes out / bytes in towards a spoofed source, for several request kinds.
 8. Line to line: a call from the line (as one spoofed packet from the provider's address would
    be) hitting a rule without `from` that targets the line; TCP from the provider's addresses;
    the flood guard's exemption for them.
 9. Fingerprinting: Server / User-Agent headers naming the software.
    The flood and connection attacks also report a bystander's experience (an OPTIONS ping, a new call).
10. Concurrent calls held by one user; and by INVITEs from the provider's address (10b).
11. Header injection: %0D%0A in a dialled number or a provider caller's From user.
12. The control endpoint (loopback, no token by default) reached from a hostile web page.

    python bench/attacks.py [--only 1,2,...] [--connections 20000] [--registers 2000] [--calls 40] [--keep]

It runs for about four minutes (the amplification count waits out RFC 3261's 32 s Timer H).
Prints a table at the end: attack, figure, expected, held yes/no.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import secrets
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.sip.digest import DigestClient, parse_challenge  # noqa: E402
from runtime.sip.message import Request, Response, parse_message  # noqa: E402
from tests.rig.ports import ports  # noqa: E402
from tests.rig.sipping import options_ping  # noqa: E402

SERVER = "127.0.0.1"
ALICE, BOB, CAROL, ALICE2 = "127.0.0.10", "127.0.0.11", "127.0.0.13", "127.0.0.12"
PROVIDER, TRUSTED, ATTACKER, VICTIM = "127.0.0.20", "127.0.0.21", "127.0.0.66", "127.0.0.99"
PASSWORDS = {"alice": "Alice-pw-2026!x", "bob": "Bob-pw-2026!xy", "carol": "Carol-pw-2026!x",
             "mallory": "Mallory-pw-2026!", "dave": "Dave-pw-2026!xy"}

FLOW = """\
user alice   password "{alice}"
user bob     password "{bob}"
user carol   password "{carol}"
user mallory password "{mallory}"
user dave    password "{dave}" legacy-digest

line itsp {{
    server "{provider}:{provider_port}"
    trust  "{trusted}"
}}

on incoming from user any to prefix "+1555" accept to line itsp
# attack 8: a rule without `from` that targets a line (meant for phones calling out)
on incoming to prefix "+1999" accept to line itsp
# attack 6: patterns a backtracking engine takes minutes over
on incoming from line itsp to /^([0-9]+)+$/ reject 404 "Hostile number matched"
on incoming from line itsp when caller-name /^(.*a){{12}}$/ reject 404 "Hostile name matched"
on incoming from line itsp to "+15550009999" accept to user alice
on incoming from line itsp reject 480 "Nobody here"
"""

SOFTWARE = re.compile(r"callflow|python|asyncio|uvloop", re.I)


# ---- results ------------------------------------------------------------------------------------
@dataclass
class Row:
    attack: str
    figure: str
    expected: str
    held: bool | None  # None: not measured


ROWS: list[Row] = []
HOLES: list[str] = []


def report(attack: str, figure: str, expected: str, held: bool | None) -> None:
    ROWS.append(Row(attack, figure, expected, held))
    mark = {True: "held", False: "NOT HELD", None: "n/a"}[held]
    print(f"  [{mark}] {attack}: {figure} (expected {expected})", flush=True)


# ---- the server under attack --------------------------------------------------------------------
class Server:
    """`callflow run` in a child process; its pid for /proc figures, its log for events."""

    def __init__(self, name: str, workdir: Path, rtp: tuple[int, int], provider_port: int,
                 extra: list[str] | None = None) -> None:
        self.dir = workdir / name
        (self.dir / "flow").mkdir(parents=True)
        self.flow = self.dir / "flow" / "main.flow"
        self.flow.write_text(FLOW.format(provider=PROVIDER, provider_port=provider_port, trusted=TRUSTED,
                                         **PASSWORDS))
        self.port = ports.port()
        self.rtp = rtp
        self.log_path = self.dir / "callflow.log"
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        cmd = [sys.executable, "-m", "runtime.cli", "run", str(self.flow), "--listen", f"{SERVER}:{self.port}",
               "--rtp-ports", f"{self.rtp[0]}-{self.rtp[1]}", "--state-dir", str(self.dir / "state"),
               "--control", "off", *self.extra]
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if options_ping(self.port, timeout=0.3) == 200:
                return self
            time.sleep(0.1)
        self.stop()
        raise SystemExit(f"callflow did not start:\n{self.log_path.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status_kb(self, key: str) -> int:
        """VmRSS / VmHWM ... of the server, in kB (/proc/PID/status)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return -1

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


# ---- raw SIP ------------------------------------------------------------------------------------
def branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


def build(method: str, ruri: str, *, src: tuple[str, int], to: str, from_: str, call_id: str, cseq: int,
          transport: str = "UDP", extra: list[str] | None = None, body: bytes = b"", to_tag: str | None = None,
          display: str | None = None, contact: bool = True) -> bytes:
    name = f'"{display}" ' if display is not None else ""
    lines = [f"{method} {ruri} SIP/2.0", f"Via: SIP/2.0/{transport} {src[0]}:{src[1]};rport;branch={branch()}",
             "Max-Forwards: 70", f"From: {name}<{from_}>;tag={secrets.token_hex(4)}",
             f"To: <{to}>" + (f";tag={to_tag}" if to_tag else ""), f"Call-ID: {call_id}",
             f"CSeq: {cseq} {method}", *(extra or [])]
    if contact:
        lines.append(f"Contact: <sip:{from_.split(':', 1)[1].split('@')[0]}@{src[0]}:{src[1]}>")
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def sdp(host: str, port: int, session: int = 1) -> bytes:
    return (f"v=0\r\no=- {session} 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n").encode()


def sdp_target(body: bytes) -> tuple[str, int] | None:
    host = re.search(rb"c=IN IP4 ([0-9.]+)", body)
    port = re.search(rb"m=audio (\d+)", body)
    return (host.group(1).decode(), int(port.group(1))) if host and port else None


def response_to(req: Request, code: int, reason: str, to_tag: str, contact: str, body: bytes = b"") -> bytes:
    lines = [f"SIP/2.0 {code} {reason}"]
    lines += [f"Via: {v}" for v in req.headers.get_all("via")]
    to = req.headers.get("to") or ""
    if code != 100 and ";tag=" not in to:
        to += f";tag={to_tag}"
    lines += [f"From: {req.headers.get('from')}", f"To: {to}", f"Call-ID: {req.call_id}",
              f"CSeq: {req.headers.get('cseq')}", f"Contact: <{contact}>"]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Udp:
    """One UDP SIP socket of a scripted party."""

    def __init__(self, host: str, port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((host, port))
        self.addr = self.sock.getsockname()
        self.bytes_in = 0
        self.datagrams_in = 0
        self.unreadable: list[bytes] = []  # datagrams our parser refused (kept for attack 11)

    def send(self, data: bytes, dest: tuple[str, int]) -> None:
        self.sock.sendto(data, dest)

    def recv(self, timeout: float = 2.0) -> Request | Response | None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65535)
            except (TimeoutError, BlockingIOError):
                return None
            self.bytes_in += len(data)
            self.datagrams_in += 1
            try:
                return parse_message(data)
            except Exception:  # noqa: BLE001 - a peer's garbage is data here, not an error
                self.unreadable.append(data)
                del self.unreadable[:-200]

    def final(self, timeout: float = 3.0, call_id: str | None = None) -> Response | None:
        """The next final response (provisional ones skipped), or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.recv(deadline - time.monotonic())
            if isinstance(msg, Response) and msg.status >= 200 and (call_id is None or msg.call_id == call_id):
                return msg
        return None

    def drain(self, timeout: float = 0.05) -> None:
        while self.recv(timeout) is not None:
            pass

    def close(self) -> None:
        self.sock.close()


def spoof_udp(src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> bool:
    """Send one UDP datagram with a forged source address (raw socket; root only)."""
    try:
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    except PermissionError:
        return False
    with raw:
        udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
                         socket.inet_aton(src[0]), socket.inet_aton(dst[0]))
        raw.sendto(ip + udp, (dst[0], 0))
    return True


class Phone:
    """A scripted phone of one user: digest done properly (qop=auth, nc counting)."""

    def __init__(self, server: Server, user: str, host: str, password: str | None = None) -> None:
        self.server = server
        self.user = user
        self.password = password if password is not None else PASSWORDS[user]
        self.sip = Udp(host)
        self.host = host
        self.dest = (SERVER, server.port)
        self.last_auth: str | None = None  # the last Proxy-Authorization sent: what a sniffer captures
        self.last_invite: bytes | None = None

    def ruri(self, number: str) -> str:
        return f"sip:{number}@{SERVER}:{self.server.port}"

    def register(self, expires: int = 300, contacts: list[str] | None = None, extra: list[str] | None = None,
                 client: DigestClient | None = None) -> Response | None:
        """REGISTER, answering the 401; the final response."""
        call_id = secrets.token_hex(8)
        aor = f"sip:{self.user}@{SERVER}"
        heads = [f"Expires: {expires}", *(f"Contact: <{c}>" for c in (contacts or [])), *(extra or [])]
        ruri = f"sip:{SERVER}:{self.server.port}"
        self.sip.send(build("REGISTER", ruri, src=self.sip.addr, to=aor, from_=aor, call_id=call_id, cseq=1,
                            extra=heads), self.dest)
        first = self.sip.final(call_id=call_id)
        if first is None or first.status != 401:
            return first
        challenge = parse_challenge(first.headers.get("www-authenticate") or "")
        auth = (client or DigestClient(self.user, self.password)).authorize(challenge, "REGISTER", ruri)
        self.sip.send(build("REGISTER", ruri, src=self.sip.addr, to=aor, from_=aor, call_id=call_id, cseq=2,
                            extra=[*heads, f"Authorization: {auth}"]), self.dest)
        return self.sip.final(call_id=call_id)

    def invite(self, number: str, rtp_port: int | None = None, call_id: str | None = None,
               qop: bool = True) -> tuple[str, Response | None]:
        """INVITE through the 407; returns (call-id, the first response to the authenticated INVITE
        that is 183-with-SDP or final)."""
        call_id = call_id or secrets.token_hex(8)
        body = sdp(self.host, rtp_port) if rtp_port else b""
        me = f"sip:{self.user}@{SERVER}"
        self.sip.send(build("INVITE", self.ruri(number), src=self.sip.addr, to=self.ruri(number), from_=me,
                            call_id=call_id, cseq=1, body=body), self.dest)
        first = self.sip.final(call_id=call_id)
        if first is None or first.status != 407:
            return call_id, first
        self.ack(first, number)
        challenge = parse_challenge(first.headers.get("proxy-authenticate") or "")
        if not qop:  # an RFC 2069 phone: answers without qop, no nc, no cnonce
            challenge = parse_challenge(re.sub(r',\s*qop="auth"', "", first.headers.get("proxy-authenticate")))
        auth = DigestClient(self.user, self.password).authorize(challenge, "INVITE", self.ruri(number))
        self.last_auth = auth
        self.last_invite = build("INVITE", self.ruri(number), src=self.sip.addr, to=self.ruri(number), from_=me,
                                 call_id=call_id, cseq=2, body=body, extra=[f"Proxy-Authorization: {auth}"])
        self.sip.send(self.last_invite, self.dest)
        return call_id, self.wait_progress(call_id)

    def wait_progress(self, call_id: str, timeout: float = 3.0) -> Response | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.sip.recv(deadline - time.monotonic())
            if isinstance(msg, Response) and msg.call_id == call_id and (
                    msg.status >= 200 or (msg.status == 183 and msg.body)):
                return msg
        return None

    def ack(self, resp: Response, number: str) -> None:
        """ACK a final response (a 2xx's ACK is a new transaction: a fresh branch is fine here)."""
        lines = [f"ACK {self.ruri(number)} SIP/2.0", f"Via: SIP/2.0/UDP {self.sip.addr[0]}:{self.sip.addr[1]};"
                 f"rport;branch={branch() if resp.status < 300 else resp.top_via.branch}",
                 "Max-Forwards: 70", f"From: {resp.headers.get('from')}", f"To: {resp.headers.get('to')}",
                 f"Call-ID: {resp.call_id}", f"CSeq: {resp.cseq[0]} ACK", "Content-Length: 0"]
        self.sip.send(("\r\n".join(lines) + "\r\n\r\n").encode(), self.dest)

    def bye(self, ok: Response, number: str) -> None:
        lines = [f"BYE {self.ruri(number)} SIP/2.0", f"Via: SIP/2.0/UDP {self.sip.addr[0]}:{self.sip.addr[1]};"
                 f"rport;branch={branch()}", "Max-Forwards: 70", f"From: {ok.headers.get('from')}",
                 f"To: {ok.headers.get('to')}", f"Call-ID: {ok.call_id}", f"CSeq: {ok.cseq[0] + 1} BYE",
                 "Content-Length: 0"]
        self.sip.send(("\r\n".join(lines) + "\r\n\r\n").encode(), self.dest)

    def close(self) -> None:
        self.sip.close()


class Provider(threading.Thread):
    """The scripted provider behind line `itsp`: answers INVITEs as `mode` says and counts them.

    mode "busy": 100 then 486. "early": 100, 183 with SDP (and its RTP starts), 200 on answer().
    "ring": 100, 180 without SDP, 200 with SDP on answer()."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sip = Udp(PROVIDER)
        self.port = self.sip.addr[1]
        self.mode = "busy"
        self.invites: list[Request] = []
        self.pending: dict[str, tuple[Request, str, RtpStream | None]] = {}
        self.received: list[Request | Response] = []
        self.lock = threading.Lock()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            msg = self.sip.recv(0.2)
            if msg is None:
                continue
            with self.lock:
                self.received.append(msg)
            if not isinstance(msg, Request):
                continue
            src = self._reply_to(msg)
            contact = f"sip:itsp@{PROVIDER}:{self.port}"
            tag = secrets.token_hex(4)
            if msg.method == "INVITE" and not msg.to_tag:
                with self.lock:
                    self.invites.append(msg)
                self.sip.send(response_to(msg, 100, "Trying", tag, contact), src)
                if self.mode == "busy":
                    self.sip.send(response_to(msg, 486, "Busy Here", tag, contact), src)
                    continue
                stream = None
                target = sdp_target(msg.body)
                if self.mode == "early" and target:
                    stream = RtpStream(PROVIDER, target)
                    self.sip.send(response_to(msg, 183, "Session Progress", tag, contact,
                                              sdp(PROVIDER, stream.port)), src)
                else:
                    self.sip.send(response_to(msg, 180, "Ringing", tag, contact), src)
                with self.lock:
                    self.pending[msg.call_id] = (msg, tag, stream)
            elif msg.method in ("BYE", "INVITE", "UPDATE", "OPTIONS", "INFO"):
                self.sip.send(response_to(msg, 200, "OK", tag, contact), src)
            elif msg.method == "CANCEL":
                self.sip.send(response_to(msg, 200, "OK", tag, contact), src)
                with self.lock:
                    entry = self.pending.pop(msg.call_id, None)
                if entry is not None:
                    self.sip.send(response_to(entry[0], 487, "Request Terminated", entry[1], contact), src)

    @staticmethod
    def _reply_to(msg: Request) -> tuple[str, int]:
        via = msg.top_via
        return (via.params.get("received") or via.host, int(via.params.get("rport") or via.port or 5060))

    def answer(self, call_id: str) -> RtpStream | None:
        """200 OK with SDP to a pending INVITE; starts (or keeps) the provider's RTP stream."""
        with self.lock:
            req, tag, stream = self.pending.pop(call_id)
        target = sdp_target(req.body)
        if stream is None and target:
            stream = RtpStream(PROVIDER, target)
        body = sdp(PROVIDER, stream.port) if stream else b""
        self.sip.send(response_to(req, 200, "OK", tag, f"sip:itsp@{PROVIDER}:{self.port}", body), self._reply_to(req))
        return stream

    def invites_to(self, prefix: str) -> int:
        with self.lock:
            return sum(1 for r in self.invites if (r.request_uri.user or "").startswith(prefix))

    def stop(self) -> None:
        self._halt.set()
        self.join(2)
        self.sip.close()


class RtpStream(threading.Thread):
    """One party's RTP: sends PCMU-sized packets (its own SSRC) to `dest` every 20 ms, counts what it
    receives by SSRC."""

    def __init__(self, host: str, dest: tuple[str, int] | None, port: int = 0) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.port = self.sock.getsockname()[1]
        self.dest = dest
        self.ssrc = secrets.randbits(32)
        self.seq = secrets.randbits(16)
        self.got: Counter[int] = Counter()
        self.sending = threading.Event()
        self.sending.set()
        self._halt = threading.Event()
        self.start()

    def run(self) -> None:
        self.sock.settimeout(0.02)
        nxt = time.monotonic()
        while not self._halt.is_set():
            now = time.monotonic()
            if now >= nxt:
                nxt = now + 0.02
                if self.dest is not None and self.sending.is_set():
                    self.seq = (self.seq + 1) & 0xFFFF
                    with contextlib.suppress(OSError):
                        self.sock.sendto(rtp_packet(self.ssrc, self.seq), self.dest)
            try:
                data = self.sock.recv(2048)
            except (TimeoutError, OSError):
                continue
            if len(data) >= 12:
                self.got[int.from_bytes(data[8:12], "big")] += 1

    def stop(self) -> None:
        self._halt.set()
        self.join(2)
        self.sock.close()


def rtp_packet(ssrc: int, seq: int, payload: bytes = b"\xff" * 160) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160 & 0xFFFFFFFF, ssrc) + payload


class Sprayer:
    """An attacker's RTP socket spraying every port of a range with in-order packets of its SSRC and
    counting what comes back (by SSRC)."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.ssrc = secrets.randbits(32)
        self.seq = 0
        self.got: Counter[int] = Counter()

    def spray(self, rng: tuple[int, int], seconds: float, per_port: int = 4) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for port in range(rng[0], rng[1] + 1):
                for _ in range(per_port):
                    self.seq = (self.seq + 1) & 0xFFFF
                    with contextlib.suppress(OSError):
                        self.sock.sendto(rtp_packet(self.ssrc, self.seq), (SERVER, port))
            self.collect(0.05)

    def collect(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))
            if not r:
                continue
            for _ in range(1000):
                try:
                    data = self.sock.recv(2048)
                except (BlockingIOError, OSError):
                    break
                if len(data) >= 12:
                    self.got[int.from_bytes(data[8:12], "big")] += 1

    def close(self) -> None:
        self.sock.close()


# ---- 1. RTP bleed -------------------------------------------------------------------------------
def attack_rtp_bleed(server: Server, provider: Provider) -> None:
    print("1. RTP bleed", flush=True)
    provider.mode = "early"
    alice = Phone(server, "alice", ALICE)
    phone_rtp = RtpStream(ALICE, None)
    number = "+15551110001"
    call_id, progress = alice.invite(number, phone_rtp.port)
    if progress is None or progress.status != 183:
        report("1 RTP bleed", f"no early media call set up ({progress and progress.status})", "0 leaked", None)
        return
    phone_rtp.dest = sdp_target(progress.body)
    time.sleep(0.3)
    pcid = provider.invites[-1].call_id  # the B2BUA's own Call-ID on the line's leg
    prov_stream = provider.pending[pcid][2]
    stranger = Sprayer(ATTACKER)
    stranger.spray(server.rtp, 1.5)
    stranger.collect(0.3)
    callers = {phone_rtp.ssrc, prov_stream.ssrc}
    leaked_ringing = sum(n for s, n in stranger.got.items() if s in callers)
    injected_ringing = phone_rtp.got[stranger.ssrc] + prov_stream.got[stranger.ssrc]
    provider.answer(pcid)
    ok = alice.sip.final(call_id=call_id)
    if ok is not None and ok.status == 200:
        alice.ack(ok, number)
    time.sleep(0.3)
    stranger.got.clear()
    before = (phone_rtp.got[prov_stream.ssrc], prov_stream.got[phone_rtp.ssrc])
    stranger.spray(server.rtp, 1.5)
    stranger.collect(0.3)
    leaked_answered = sum(n for s, n in stranger.got.items() if s in callers)
    injected_answered = phone_rtp.got[stranger.ssrc] + prov_stream.got[stranger.ssrc] - injected_ringing
    after = (phone_rtp.got[prov_stream.ssrc], prov_stream.got[phone_rtp.ssrc])
    flowing = after[0] > before[0] and after[1] > before[1]
    report("1a RTP bleed, stranger sprays the range while ringing (early media)",
           f"{leaked_ringing} packets of audio leaked, {injected_ringing} injected", "0 and 0",
           leaked_ringing == 0 and injected_ringing == 0)
    report("1b RTP bleed, stranger sprays the range after answer",
           f"{leaked_answered} leaked, {injected_answered} injected; call audio still flowing both ways: "
           f"{'yes' if flowing else 'NO'}", "0, 0, yes", leaked_answered == 0 and injected_answered == 0 and flowing)
    if ok is not None:
        alice.bye(ok, number)
        alice.sip.final(1.0)
    stranger.close()
    phone_rtp.stop()
    prov_stream.stop()

    # 1c: a spoofer of the phone's own address (any port) locks the latch before the phone sends
    provider.mode = "ring"
    phone_rtp = RtpStream(ALICE, None)
    phone_rtp.sending.clear()
    call_id, _ = alice.invite(number, phone_rtp.port)
    time.sleep(0.3)
    spoofer = Sprayer(ALICE)  # the phone's IP, another port: what a forged source address looks like
    spoofer.spray(server.rtp, 0.5)
    stream = provider.answer(provider.invites[-1].call_id)
    ok = alice.sip.final(call_id=call_id)
    if ok is None or ok.status != 200 or stream is None:
        report("1c RTP hijack by a spoofed phone address", "call not answered", "-", None)
    else:
        alice.ack(ok, number)
        phone_rtp.dest = sdp_target(ok.body)
        phone_rtp.sending.set()
        spoofer.spray(server.rtp, 1.5, per_port=1)  # and goes on: forged packets from the address it locked
        spoofer.collect(0.2)
        phone_to_provider = stream.got[phone_rtp.ssrc]
        spoofer_to_provider = stream.got[spoofer.ssrc]
        leaked = spoofer.got[stream.ssrc]
        held = phone_to_provider > 0 and spoofer_to_provider == 0 and leaked == 0
        report("1c RTP hijack: packets forged from the phone's IP (another port) before its first packet",
               f"the provider heard the phone {phone_to_provider} packets, the spoofer {spoofer_to_provider}; "
               f"provider audio sent to the spoofer's port instead of the phone's: {leaked}",
               "phone > 0, spoofer 0, 0", held)
        if not held:
            HOLES.append("1c RTP latch hijack: 3 packets forged from the phone's IP (any port) before the phone's "
                         "first packet lock its leg: the phone's audio is dropped as a stranger's, the attacker's "
                         "is relayed, the far end's goes to the forged port")
        alice.bye(ok, number)
        alice.sip.final(1.0)
        stream.stop()
    spoofer.close()
    phone_rtp.stop()

    # 1e: the same on the line's leg: forged packets from the provider's IP (another port) race the
    # provider's first packets once its answer names its media address
    phone_rtp = RtpStream(ALICE, None)
    call_id, _ = alice.invite(number, phone_rtp.port)
    time.sleep(0.3)
    spoofer = Sprayer(PROVIDER)
    spraying = threading.Thread(target=spoofer.spray, args=(server.rtp, 2.0, 3), daemon=True)
    spraying.start()
    time.sleep(0.3)
    stream = provider.answer(provider.invites[-1].call_id)
    ok = alice.sip.final(call_id=call_id)
    if ok is None or ok.status != 200 or stream is None:
        report("1e RTP hijack on the line's leg", "call not answered", "-", None)
    else:
        alice.ack(ok, number)
        phone_rtp.dest = sdp_target(ok.body)
        spraying.join()
        spoofer.collect(0.3)
        heard_provider, heard_spoofer = phone_rtp.got[stream.ssrc], phone_rtp.got[spoofer.ssrc]
        stolen = spoofer.got[phone_rtp.ssrc]
        held = heard_provider > 0 and heard_spoofer == 0 and stolen == 0
        report("1e RTP hijack on the line's leg: forged from the provider's IP (another port) as it answers",
               f"the phone heard the provider {heard_provider} packets, the spoofer {heard_spoofer}; the phone's "
               f"audio sent to the spoofer's port: {stolen}", "provider > 0, 0, 0", held)
        if not held:
            HOLES.append("1e RTP latch hijack on the line's leg: packets forged from the provider's IP, any port, "
                         "sent as the answer arrives, win the probation race")
        alice.bye(ok, number)
        alice.sip.final(1.0)
        stream.stop()
    spoofer.close()
    phone_rtp.stop()
    alice.close()


def attack_rtp_reuse(workdir: Path, provider: Provider) -> None:
    """1d: a previous caller still sending to ports that a new call took (relay range: one call)."""
    rng = ports.rtp_range(4)
    server = Server("reuse", workdir, rng, provider.port).start()
    try:
        provider.mode = "early"
        alice, bob = Phone(server, "alice", ALICE), Phone(server, "bob", BOB)
        a_rtp = RtpStream(ALICE, None)
        number = "+15551110002"
        cid, prog = alice.invite(number, a_rtp.port)
        if prog is None or prog.status != 183:
            report("1d RTP bleed after port reuse", f"first call not set up ({prog and prog.status})", "0", None)
            return
        a_rtp.dest = sdp_target(prog.body)
        p1 = provider.answer(provider.invites[-1].call_id)
        ok = alice.sip.final(call_id=cid)
        alice.ack(ok, number)
        time.sleep(0.5)
        alice.bye(ok, number)  # alice hangs up ... and her phone (or someone at her address) keeps sending
        alice.sip.final(1.0)
        b_rtp = RtpStream(BOB, None)
        cid2, prog2 = bob.invite(number, b_rtp.port)
        if prog2 is None or prog2.status != 183:
            report("1d RTP bleed after port reuse", f"second call not set up ({prog2 and prog2.status})", "-", None)
            return
        b_rtp.dest = sdp_target(prog2.body)
        p2 = provider.answer(provider.invites[-1].call_id)
        ok2 = bob.sip.final(call_id=cid2)
        bob.ack(ok2, number)
        base = a_rtp.got[p2.ssrc] + a_rtp.got[b_rtp.ssrc]
        time.sleep(2.0)
        leaked = a_rtp.got[p2.ssrc] + a_rtp.got[b_rtp.ssrc] - base
        injected = p2.got[a_rtp.ssrc] + b_rtp.got[a_rtp.ssrc] + p2.got[p1.ssrc] + b_rtp.got[p1.ssrc]
        flowing = p2.got[b_rtp.ssrc] > 0 and b_rtp.got[p2.ssrc] > 0
        report("1d RTP bleed: previous caller still sending after its ports went to a new call",
               f"{leaked} of the new call's packets reached the previous caller, {injected} of the old streams "
               f"reached the new call; new call's audio flowing: {'yes' if flowing else 'NO'} "
               f"(relay range 4 ports: the new call must reuse the old one's)", "0, 0, yes",
               leaked == 0 and injected == 0 and flowing)
        bob.bye(ok2, number)
        for s in (a_rtp, b_rtp, p1, p2):
            s.stop()
        alice.close()
        bob.close()
    finally:
        server.stop()


# ---- 2. replayed credentials --------------------------------------------------------------------
def attack_replay(server: Server, provider: Provider) -> None:
    print("2. Replayed credentials", flush=True)
    provider.mode = "busy"
    results = {}
    for user, host, qop in (("alice", ALICE, True), ("dave", "127.0.0.14", False)):
        phone = Phone(server, user, host)
        before = len(provider.invites)
        number = "+15552220000"
        cid, final = phone.invite(number, qop=qop)
        if final is not None and final.status < 300:
            phone.ack(final, number)
        legit = len(provider.invites) - before
        captured = phone.last_auth or ""
        base = len(provider.invites)
        tries = 0
        # from other hosts (127.0.0.2-9), to other numbers and to the same one, new Call-IDs
        for i, src in enumerate([f"127.0.0.{n}" for n in range(2, 10)] + [host, host]):
            sock = Udp(src)
            for target in (f"+1555222{i:04d}", number):
                ruri = phone.ruri(target)
                # the digest uri is left as captured, and rewritten to the new target: both must fail
                for auth in {captured, captured.replace(phone.ruri(number), ruri)}:
                    tries += 1
                    c = secrets.token_hex(6)
                    sock.send(build("INVITE", ruri, src=sock.addr, to=ruri, from_=f"sip:{user}@{SERVER}", call_id=c,
                                    cseq=1, extra=[f"Proxy-Authorization: {auth}"]), phone.dest)
                    resp = sock.final(2.0, call_id=c)
                    if resp is not None and resp.status == 486:  # the provider's busy: it went through
                        pass
            sock.close()
        time.sleep(0.3)
        through = len(provider.invites) - base
        results[user] = (legit, through, tries)
        phone.close()
        label = "qop=auth phone" if qop else "legacy-digest phone (no qop)"
        report(f"2 replayed Proxy-Authorization ({label})",
               f"{through} calls through the line from {tries} replays (the phone's own call: {legit})",
               "0 (own: 1)", through == 0 and legit == 1)


# ---- 3. password guessing -----------------------------------------------------------------------
def attack_guessing(server: Server) -> None:
    print("3. Password guessing", flush=True)
    victim = Phone(server, "alice", ALICE)
    first = victim.register()
    codes: Counter[int] = Counter()
    found = False
    checked = 0
    guesses = 0
    for n in range(297):
        src = f"127.0.0.{100 + n % 33}"
        last = n == 296
        guesser = Phone(server, "alice", src, PASSWORDS["alice"] if last else f"guess{n:04d}")
        resp = guesser.register()
        guesses += 1
        code = resp.status if resp else 0
        codes[code] += 1
        if code == 403:
            checked += 1
        if last and code == 200:
            found = True
        guesser.close()
        own = Phone(server, "mallory", src)  # the attacker's own successful login in between
        own.register()
        own.close()
    report("3a password guessing, 296 guesses over 33 sources + own logins between",
           f"passwords checked {checked} (answers {dict(codes)}), password found: {'YES' if found else 'no'}",
           "about 10, no", checked <= 12 and not found)
    again = victim.register()
    new_phone = Phone(server, "alice", ALICE2)
    second = new_phone.register()
    new_phone.close()
    report("3b victim's phone (had logged in before) registers after the guessing",
           f"{first and first.status} before, {again and again.status} after", "200", again is not None
           and again.status == 200)
    report("3c victim's NEW phone (never logged in) registers during the account back-off",
           f"{second and second.status}", "documented: held (challenge only) up to 1 h", None)
    victim.close()

    # 3d: 10 spoofed REGISTERs carrying carol's phone's address: the attacker cannot get a nonce for
    # that address, so it uses one issued to itself, or none that is valid at all
    carol = Phone(server, "carol", CAROL)
    before = carol.register()
    attacker = Phone(server, "carol", ATTACKER, "wrong-guess")
    ruri = f"sip:{SERVER}:{server.port}"
    aor = f"sip:carol@{SERVER}"
    attacker.sip.send(build("REGISTER", ruri, src=attacker.sip.addr, to=aor, from_=aor, call_id="x", cseq=1),
                      attacker.dest)
    challenge = parse_challenge(attacker.sip.final().headers.get("www-authenticate") or "")
    sent = 0
    for i in range(10):
        auth = DigestClient("carol", f"wrong{i}").authorize(challenge, "REGISTER", ruri)
        pkt = build("REGISTER", ruri, src=(CAROL, carol.sip.addr[1]), to=aor, from_=aor, call_id=f"s{i}", cseq=1,
                    extra=[f"Authorization: {auth}"])
        sent += spoof_udp((CAROL, carol.sip.addr[1]), attacker.dest, pkt)
    carol.sip.drain(0.3)
    after = carol.register()
    if sent:
        report("3d 10 spoofed REGISTERs with the victim's address, then the victim registers",
               f"victim's REGISTER: {before and before.status} before, {after and after.status} after",
               "200", after is not None and after.status == 200)
    else:
        report("3d spoofed packets", "skipped (raw sockets need root)", "200", None)
    # 3e: a guesser sharing the victim's address (same NAT, or a host on the path) with real nonces
    shared = Phone(server, "carol", CAROL, "wrong")
    for i in range(12):
        shared.password = f"wrong{i}"
        shared.register()
    shared.close()
    blocked = carol.register()
    report("3e 12 guesses from the victim's own address (shared NAT), then the victim registers",
           f"{blocked and blocked.status}", "documented: the source is held 300 s", None)
    carol.close()
    attacker.close()


# ---- 4. register flood / what a client can make the server hold --------------------------------
class Registrant:
    """mallory registering from one source, with one nonce and nc counting (no 401 round trip)."""

    def __init__(self, server: Server, host: str) -> None:
        self.phone = Phone(server, "mallory", host)
        self.ruri = f"sip:{SERVER}:{server.port}"
        self.aor = f"sip:mallory@{SERVER}"
        self.call_id = secrets.token_hex(8)
        self.cseq = 1
        self.client = DigestClient("mallory", PASSWORDS["mallory"])
        self.challenge = None

    def send(self, heads: list[str]) -> Response | None:
        if self.challenge is None:
            self.phone.sip.send(build("REGISTER", self.ruri, src=self.phone.sip.addr, to=self.aor, from_=self.aor,
                                      call_id=self.call_id, cseq=self.cseq, extra=heads, contact=False),
                                self.phone.dest)
            self.cseq += 1
            first = self.phone.sip.final()
            self.challenge = parse_challenge(first.headers.get("www-authenticate") or "")
        auth = self.client.authorize(self.challenge, "REGISTER", self.ruri)
        self.phone.sip.send(build("REGISTER", self.ruri, src=self.phone.sip.addr, to=self.aor, from_=self.aor,
                                  call_id=self.call_id, cseq=self.cseq, extra=[*heads, f"Authorization: {auth}"],
                                  contact=False), self.phone.dest)
        self.cseq += 1
        return self.phone.sip.final()


class Prober(threading.Thread):
    """A bystander pinging the server with OPTIONS every 100 ms from its own address: the worst
    round trip seen (or a ping lost) says whether the attack froze the server for everyone."""

    def __init__(self, server: Server, host: str = "127.0.0.202") -> None:
        super().__init__(daemon=True)
        self.server = server
        self.sip = Udp(host)
        self.worst = 0.0
        self.lost = 0
        self._halt = threading.Event()
        self.start()

    def run(self) -> None:
        while not self._halt.is_set():
            c = secrets.token_hex(6)
            t0 = time.monotonic()
            self.sip.send(build("OPTIONS", f"sip:{SERVER}:{self.server.port}", src=self.sip.addr, to=f"sip:{SERVER}",
                                from_=f"sip:probe@{self.sip.addr[0]}", call_id=c, cseq=1), (SERVER, self.server.port))
            if self.sip.final(5.0, call_id=c) is None:
                self.lost += 1
            self.worst = max(self.worst, time.monotonic() - t0)
            self._halt.wait(0.1)

    def stop(self) -> str:
        self._halt.set()
        self.join(6)
        self.sip.close()
        return f"a bystander's OPTIONS: worst {self.worst * 1000:.0f} ms, {self.lost} lost"


def attack_register_flood(workdir: Path, provider: Provider, count: int) -> None:
    print("4. REGISTER flood", flush=True)
    server = Server("regflood", workdir, ports.rtp_range(4), provider.port).start()
    try:
        time.sleep(0.5)
        rss0 = server.status_kb("VmRSS")
        senders = [Registrant(server, f"127.0.0.{150 + i}") for i in range(8)]
        last = None
        codes: Counter[int] = Counter()
        t0 = time.monotonic()
        probe = Prober(server)
        for n in range(count):
            s = senders[n % len(senders)]
            host = "h" * 440
            contacts = [f"Contact: <sip:mallory-{n}-{k}@{host}.example:5060;transport=udp>" for k in range(10)]
            resp = s.send([*contacts, "Expires: 3600"])
            codes[resp.status if resp else 0] += 1
            if resp is not None and resp.status == 200:
                last = resp
        dt = time.monotonic() - t0
        probed = probe.stop()
        rss1 = server.status_kb("VmRSS")
        bindings = len(last.headers.get_all("contact")) if last else 0
        resp_size = len(bytes(last)) if last else 0
        held = bindings <= 10 and rss1 - rss0 < 200_000
        report(f"4a REGISTER flood: {count} REGISTERs x 10 contacts of 470 B, one user",
               f"RSS {rss0 // 1024} -> {rss1 // 1024} MiB, bindings held {bindings}, last 200 is {resp_size} B, "
               f"answers {dict(codes)} in {dt:.1f} s ({count / dt:.0f}/s); {probed}", "bounded; bindings <= 10", held)
        # 4b: the same user, REGISTERs padded with 60 KB of headers (each kept for Timer J, 32 s)
        rss0 = server.status_kb("VmRSS")
        pad = [f"X-Pad-{k}: {'p' * 1000}" for k in range(60)]
        codes.clear()
        t0 = time.monotonic()
        probe = Prober(server)
        for n in range(count):
            s = senders[n % len(senders)]
            resp = s.send([f"Contact: <sip:mallory-pad@{s.phone.host}:5060>", "Expires: 3600", *pad])
            codes[resp.status if resp else 0] += 1
        probed = probe.stop()
        rss1 = server.status_kb("VmRSS")
        hwm = server.status_kb("VmHWM")
        grown = (rss1 - rss0) // 1024
        report(f"4b {count} authenticated REGISTERs with 60 KB of headers each",
               f"RSS grew {grown} MiB (peak {hwm // 1024} MiB), answers {dict(codes)} "
               f"in {time.monotonic() - t0:.1f} s; "
               f"{probed}",
               "bounded (a few MiB)", grown < 64)
        if grown >= 64:
            HOLES.append(f"4b every transaction keeps its request (and response) for Timer J (32 s): "
                         f"{count} large REGISTERs held {grown} MiB")
        for s in senders:
            s.phone.close()
        # 4c: unauthenticated OPTIONS (answered 200 statefully) with 60 KB of headers, many sources
        rss0 = server.status_kb("VmRSS")
        socks = [Udp(f"127.0.3.{i}") for i in range(1, 34)]
        sent = 0
        t0 = time.monotonic()
        limit_kb = rss0 + 1_500_000
        grew_past = False
        while time.monotonic() - t0 < 8.0:
            for s in socks:
                s.send(build("OPTIONS", f"sip:{SERVER}:{server.port}", src=s.addr, to=f"sip:{SERVER}",
                             from_=f"sip:x@{s.addr[0]}", call_id=secrets.token_hex(8), cseq=1, extra=pad),
                       (SERVER, server.port))
                sent += 1
            time.sleep(0.15)  # 33 sources x ~6/s: far under the flood guard's 200/s per source
            for s in socks:
                s.drain(0)
            if server.status_kb("VmRSS") > limit_kb:
                grew_past = True
                break
        rss1 = server.status_kb("VmRSS")
        grown = (rss1 - rss0) // 1024
        report("4c unauthenticated OPTIONS with 60 KB of headers, 33 sources, 8 s",
               f"{sent} sent ({sent * 61 // 1024} MiB); server RSS grew {grown} MiB"
               + (" (stopped at +1.5 GB)" if grew_past else ""), "bounded (a few MiB)", grown < 64)
        if grown >= 64:
            HOLES.append(f"4c an unauthenticated OPTIONS is answered statefully and kept 32 s: {sent} of them "
                         f"made the server hold {grown} MiB")
        for s in socks:
            s.close()
    finally:
        server.stop()


# ---- 5. connection flood ------------------------------------------------------------------------
def attack_connection_flood(workdir: Path, provider: Provider, total: int) -> None:
    print("5. Connection flood", flush=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    total = min(total, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 300)
    ws_port = ports.port()
    server = Server("connflood", workdir, ports.rtp_range(8), provider.port,
                    ["--listen", f"ws:{SERVER}:{ws_port}"]).start()
    conns: list[socket.socket] = []
    try:
        # 5c (first, on a fresh process): unauthenticated WebSocket connections, handshake done, then
        # silent: the memory each one holds
        rss0, wfd0 = server.status_kb("VmRSS"), server.fds()
        ws = []
        for i in range(500):
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.settimeout(2)
            try:
                c.bind((f"127.0.5.{1 + i // 50}", 0))
                c.connect((SERVER, ws_port))
                c.sendall(f"GET / HTTP/1.1\r\nHost: {SERVER}:{ws_port}\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                          "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n\r\n".encode())
                if c.recv(4096).startswith(b"HTTP/1.1 101"):
                    ws.append(c)
                    continue
            except OSError:
                pass
            c.close()
        time.sleep(1.0)
        rss1, wfd1 = server.status_kb("VmRSS"), server.fds()
        per = (rss1 - rss0) / max(1, len(ws))
        report(f"5c {len(ws)} unauthenticated WebSocket connections, handshake done, silent",
               f"server RSS grew {(rss1 - rss0) // 1024} MiB, {per:.0f} kB each; its descriptors {wfd0} -> {wfd1}",
               "almost nothing each", per < 64)
        for c in ws:
            c.close()
        time.sleep(1.0)
        fds0 = server.fds()
        per_source = 50
        sources = [f"127.0.{2 + i // 250}.{1 + i % 250}" for i in range(total // per_source + 1)]
        for i in range(total):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.bind((sources[i // per_source], 0))
                s.connect_ex((SERVER, server.port))
            except OSError:
                s.close()
                continue
            conns.append(s)
            if i % 500 == 499:
                time.sleep(0.02)
        time.sleep(2.0)
        alive = _alive(conns)
        fds1 = server.fds()
        udp_ok, tcp_ok = _new_call_served(server, provider)
        report(f"5a {len(conns)} TCP connections from {len(sources)} sources (idle)",
               f"server descriptors {fds0} -> {fds1}; new UDP call served: "
               f"{udp_ok}; TCP OPTIONS from a fresh source: {tcp_ok}", "bounded; served",
               fds1 < fds0 + 2100 and udp_ok == "yes" and tcp_ok == "200")
        # 5b: every open connection says one OPTIONS (now it has "carried" a message) and then idles
        for s in alive:
            with contextlib.suppress(OSError):
                a = s.getsockname()
                s.send(build("OPTIONS", f"sip:{SERVER}:{server.port};transport=tcp", src=a, to=f"sip:{SERVER}",
                             from_=f"sip:x@{a[0]}", call_id=secrets.token_hex(6), cseq=1, transport="TCP"))
        time.sleep(12.0)  # past the first-message timeout (10 s)
        alive = _alive(alive)
        udp_ok, tcp_ok = _new_call_served(server, provider)
        report("5b the same, each having sent one OPTIONS, 12 s later",
               f"server descriptors {server.fds()} (idle timeout 900 s); new UDP call "
               f"served: {udp_ok}; TCP OPTIONS from a fresh source: {tcp_ok}", "TCP phones still served",
               tcp_ok == "200" and udp_ok == "yes")
        if tcp_ok != "200":
            HOLES.append(f"5b unauthenticated TCP connections, each sending one OPTIONS, fill the total connection "
                         f"cap ({server.fds() - fds0} held) for 15 min: every new TCP/TLS/WS phone is refused")
        for s in conns:
            s.close()
        conns = []
        time.sleep(1.0)
    finally:
        for s in conns:
            s.close()
        server.stop()


def _stream_final(conn: socket.socket, timeout: float = 2.0) -> str:
    """The status line of the first final response read from a stream connection ("closed", "none")."""
    conn.settimeout(timeout)
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for status in re.findall(rb"SIP/2\.0 [0-9]{3} [^\r]*", buf):
            if not status.startswith(b"SIP/2.0 1"):
                return status.decode(errors="replace")
        try:
            chunk = conn.recv(65535)
        except OSError:
            return "none"
        if not chunk:
            return "closed"
        buf += chunk
    return "none"


def _alive(conns: list[socket.socket]) -> list[socket.socket]:
    out = []
    poller = select.poll()
    by_fd = {}
    for s in conns:
        with contextlib.suppress(OSError, ValueError):
            poller.register(s, select.POLLIN | select.POLLERR | select.POLLHUP)
            by_fd[s.fileno()] = s
    ready = dict(poller.poll(0))
    for fd, s in by_fd.items():
        ev = ready.get(fd, 0)
        if ev & (select.POLLERR | select.POLLHUP):
            continue
        if ev & select.POLLIN:
            try:
                data = s.recv(65535)
            except OSError:
                continue
            if not data:
                continue
        out.append(s)
    return out


def _new_call_served(server: Server, provider: Provider) -> tuple[str, str]:
    """(a new call from bob over UDP got the provider's answer: yes/no, a TCP OPTIONS from a fresh
    source: its status or the error)."""
    provider.mode = "busy"
    bob = Phone(server, "bob", BOB)
    _, final = bob.invite("+15553330000")
    bob.close()
    udp = "yes" if final is not None and final.status == 486 else f"no ({final and final.status})"
    try:
        with socket.create_connection((SERVER, server.port), timeout=2, source_address=("127.0.0.201", 0)) as c:
            a = c.getsockname()
            c.sendall(build("OPTIONS", f"sip:{SERVER}:{server.port};transport=tcp", src=a, to=f"sip:{SERVER}",
                            from_="sip:phone@127.0.0.201", call_id=secrets.token_hex(6), cseq=1, transport="TCP"))
            status = _stream_final(c)
            tcp = status.split(" ")[1] if status.startswith("SIP/2.0 ") else status
    except OSError as exc:
        tcp = f"error {exc.__class__.__name__}"
    return udp, tcp


# ---- 6. hostile patterns ------------------------------------------------------------------------
def attack_regex(server: Server, provider: Provider) -> None:
    print("6. Hostile dialled number / caller name", flush=True)
    cases = [("ordinary number", "+15551234567", None), ("31-digit number + x", "1" * 31 + "x", None),
             ("250-digit number + x", "1" * 250 + "x", None), ("30,000-digit number + x", "1" * 30000 + "x", None),
             ("caller name of 60 a's + !", "+15551234567", "a" * 60 + "!"),
             ("caller name of 250 a's + !", "+15551234567", "a" * 250 + "!")]
    worst = 0.0
    figures = []
    for label, number, name in cases:
        ruri = f"sip:{number}@{SERVER}:{server.port}"
        c = secrets.token_hex(6)
        t0 = time.monotonic()
        provider.sip.send(build("INVITE", ruri, src=provider.sip.addr, to=ruri, from_=f"sip:+15550001111@{PROVIDER}",
                                call_id=c, cseq=1, display=name), (SERVER, server.port))
        resp = None
        deadline = t0 + 30
        while time.monotonic() < deadline:
            with provider.lock:
                found = [m for m in provider.received if isinstance(m, Response) and m.call_id == c and m.status >= 200]
            if found:
                resp = found[0]
                break
            time.sleep(0.002)
        dt = time.monotonic() - t0
        worst = max(worst, dt)
        figures.append(f"{label}: {resp.status if resp else 'no answer'} in {dt * 1000:.0f} ms")
        if resp is not None:
            provider.sip.send(build("ACK", ruri, src=provider.sip.addr, to=ruri, from_=f"sip:x@{PROVIDER}", call_id=c,
                                    cseq=1), (SERVER, server.port))
    for f in figures:
        print("     " + f)
    report("6 hostile dialled number / caller name vs /^([0-9]+)+$/ and /^(.*a){12}$/",
           f"worst time to the answer {worst * 1000:.0f} ms", "no freeze (< 1 s)", worst < 1.0)


# ---- 7. amplification ---------------------------------------------------------------------------
class Amplifier:
    """Requests sent 'from' the victim's address (bound here, as a spoofer would forge it); every byte
    that comes back to that address is what the server sends the victim."""

    KINDS = ("INVITE, no credentials", "INVITE with a To tag (unknown dialog)", "REGISTER, no credentials",
             "OPTIONS", "INVITE, wrong credentials")

    def __init__(self, server: Server) -> None:
        self.server = server
        self.socks = {k: Udp(VICTIM) for k in self.KINDS}
        self.sent = Counter()

    def fire(self, each: int = 5) -> None:
        dest = (SERVER, self.server.port)
        for kind, s in self.socks.items():
            for _ in range(each):
                ruri = f"sip:+15557654321@{SERVER}:{self.server.port}"
                extra, to_tag, method = [], None, "INVITE"
                if kind.startswith("REGISTER"):
                    method, ruri = "REGISTER", f"sip:{SERVER}:{self.server.port}"
                elif kind == "OPTIONS":
                    method, ruri = "OPTIONS", f"sip:{SERVER}:{self.server.port}"
                elif "To tag" in kind:
                    to_tag = secrets.token_hex(4)
                elif "wrong" in kind:
                    extra = ['Proxy-Authorization: Digest username="alice", realm="callflow", nonce="AAAA", '
                             f'uri="{ruri}", response="00000000000000000000000000000000", qop=auth, nc=00000001, '
                             'cnonce="abc"']
                data = build(method, ruri, src=s.addr, to=ruri, from_="sip:alice@127.0.0.1",
                             call_id=secrets.token_hex(8), cseq=1, extra=extra, to_tag=to_tag)
                s.send(data, dest)
                self.sent[kind] += len(data)

    def collect(self) -> None:
        print("7. Amplification (collected after Timer H)", flush=True)
        worst = 0.0
        for kind, s in self.socks.items():
            s.drain(0.1)
            ratio = s.bytes_in / max(1, self.sent[kind])
            worst = max(worst, ratio)
            report(f"7 amplification: {kind}, spoofed source",
                   f"bytes out/in {ratio:.2f} ({s.datagrams_in} datagrams back for 5 sent)", "<= about 1.3",
                   ratio <= 1.5)
            if ratio > 1.5:
                HOLES.append(f"7 amplification: {kind} from a spoofed source: {s.datagrams_in} datagrams back "
                             f"for 5 sent, bytes out/in {ratio:.1f}")
            s.close()


# ---- 8. line to line, provider addresses ------------------------------------------------------
def attack_line_to_line(server: Server, provider: Provider) -> None:
    print("8. Line to line", flush=True)
    provider.mode = "busy"
    before = provider.invites_to("+1999")
    ruri = f"sip:+19995550000@{SERVER}:{server.port}"
    c = secrets.token_hex(6)
    # what one spoofed UDP packet from the provider's address looks like to the server
    provider.sip.send(build("INVITE", ruri, src=provider.sip.addr, to=ruri, from_=f"sip:+15550001111@{PROVIDER}",
                            call_id=c, cseq=1, body=sdp(PROVIDER, 4002)), (SERVER, server.port))
    time.sleep(1.0)
    out = provider.invites_to("+1999") - before
    with provider.lock:
        answer = [m.status for m in provider.received if isinstance(m, Response) and m.call_id == c and m.status >= 200]
    report("8a a call from the line hits a rule without `from` that targets the line",
           f"INVITEs that left through the line: {out} (answer to the caller: {answer[:1]})", "0", out == 0)
    # 8b: TCP from the trusted address and from the provider's address (the line is UDP)
    for label, host in (("the line's trusted address", TRUSTED), ("the provider's IP, another port", PROVIDER)):
        try:
            with socket.create_connection((SERVER, server.port), timeout=2, source_address=(host, 0)) as conn:
                a = conn.getsockname()
                r = f"sip:+15551234567@{SERVER}:{server.port};transport=tcp"
                conn.sendall(build("INVITE", r, src=a, to=r, from_=f"sip:+15550001111@{host}",
                                   call_id=secrets.token_hex(6), cseq=1, transport="TCP"))
                status = _stream_final(conn)
        except OSError as exc:
            status = f"error {exc}"
        as_line = "407" not in status
        report(f"8b TCP INVITE from {label} (line `itsp` is UDP)", f"answered {status!r} (taken as the line: "
               f"{'YES' if as_line else 'no'})", "407: not the line", not as_line)
        if as_line:
            HOLES.append(f"8b a TCP connection from {label} is taken as line itsp although the line is UDP")
    # 8c: the flood guard's exemption: 1,500 OPTIONS in a burst from the provider's IP on other ports
    for label, host in (("an ordinary source", "127.0.0.77"), ("the provider's IP, another port", PROVIDER),
                        ("the trusted address", TRUSTED)):
        s = Udp(host)
        answered = 0
        for i in range(1500):
            s.send(build("OPTIONS", f"sip:{SERVER}:{server.port}", src=s.addr, to=f"sip:{SERVER}",
                         from_=f"sip:f@{host}", call_id=f"flood{i}", cseq=1), (SERVER, server.port))
            if i % 50 == 49:
                while s.recv(0.001) is not None:
                    answered += 1
        while s.recv(0.3) is not None:
            answered += 1
        s.close()
        report(f"8c flood of 1,500 OPTIONS at once from {label}", f"{answered} answered",
               "ignored after about 400" if "ordinary" in label or "provider" in label else "exempt (trusted)",
               answered < 800 if "ordinary" in label or "provider" in label else None)
        if "provider" in label and answered >= 800:
            HOLES.append("8c the flood guard exempts the provider's IP on any port (not only the line's address)")
        time.sleep(0.2)


# ---- 9. fingerprinting --------------------------------------------------------------------------
def attack_fingerprint(server: Server, provider: Provider) -> None:
    print("9. Fingerprinting", flush=True)
    seen: list[str] = []
    s = Udp(ATTACKER)
    s.send(build("OPTIONS", f"sip:{SERVER}:{server.port}", src=s.addr, to=f"sip:{SERVER}", from_="sip:a@x",
                 call_id="fp1", cseq=1), (SERVER, server.port))
    msgs = [s.final()]
    s.send(build("INVITE", f"sip:100@{SERVER}:{server.port}", src=s.addr, to=f"sip:100@{SERVER}", from_="sip:a@x",
                 call_id="fp2", cseq=1), (SERVER, server.port))
    msgs.append(s.final())
    s.send(b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP " + f"{s.addr[0]}:{s.addr[1]}".encode() +
           b";branch=z9hG4bKbad\r\nContent-Length: 0\r\n\r\n", (SERVER, server.port))
    msgs.append(s.final())
    s.close()
    alice = Phone(server, "alice", ALICE)
    msgs.append(alice.register())
    provider.mode = "busy"
    alice.invite("+15554440000")
    alice.close()
    with provider.lock:
        msgs += provider.invites[-1:]
    for m in msgs:
        if m is None:
            continue
        for h in ("server", "user-agent"):
            v = m.headers.get(h)
            if v:
                seen.append(f"{h}: {v}")
    naming = [v for v in seen if SOFTWARE.search(v)]
    report("9 Server / User-Agent headers (OPTIONS 200, 407, 400, REGISTER 200, INVITE to the provider)",
           f"{len(seen)} such headers{': ' + '; '.join(seen) if seen else ''}", "absent", not seen and not naming)


# ---- 11. header injection through %-escapes -----------------------------------------------------
def attack_injection(server: Server, provider: Provider) -> None:
    """The user part of a SIP URI may carry %0D%0A (RFC 3261 19.1.2 escapes): unescaped and then
    pasted into a URI of a new request, it becomes a header line of the B2BUA's own INVITE."""
    print("11. Header injection through %-escaped URI user parts", flush=True)
    provider.mode = "busy"
    evil = "%0D%0AP-Asserted-Identity%3A%20%3Csip%3A+19998887777%40evil.example%3E%0D%0AX-Injected%3A%20yes"
    alice = Phone(server, "alice", ALICE)
    before = len(provider.invites)
    with provider.lock:
        provider.sip.unreadable.clear()
    alice.invite("+15551" + evil)
    time.sleep(1.0)
    with provider.lock:
        sent = [bytes(r) for r in provider.invites[before:]] + list(provider.sip.unreadable)
    injected = [d for d in sent if b"\r\nX-Injected: yes" in d]
    first = injected[0].split(b"\r\n")[:4] if injected else []
    report("11a a phone dials a number with %0D%0A and headers (the rule: prefix +1555, to the line)",
           f"requests to the provider carrying the injected header lines: {len(injected)} of {len(sent)}"
           + (f" (they begin {first!r})" if injected else ""), "0", not injected)
    if injected:
        HOLES.append("11a an authenticated phone injects header lines (P-Asserted-Identity: caller-id spoofing at "
                     "the provider) into the INVITE sent to the line: the dialled number is %-unescaped and "
                     "pasted into the Request-URI and To")
    # 11b: from the line (or one packet spoofed from the provider's address) to alice's phone
    alice.register()
    alice.sip.drain(0.1)
    ruri = f"sip:+15550009999@{SERVER}:{server.port}"
    provider.sip.send(build("INVITE", ruri, src=provider.sip.addr, to=ruri, from_=f"sip:+1444{evil}@{PROVIDER}",
                            call_id=secrets.token_hex(6), cseq=1, body=sdp(PROVIDER, 4004)), (SERVER, server.port))
    got = None
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        msg = alice.sip.recv(deadline - time.monotonic())
        if isinstance(msg, Request) and msg.method == "INVITE":
            got = msg
            break
    if got is None:
        report("11b a provider caller's From user with %0D%0A and headers, to a phone", "no INVITE reached the phone",
               "-", None)
    else:
        hit = bool(got.headers.get("x-injected"))
        report("11b a provider caller's From user with %0D%0A and headers, to a phone",
               f"the phone's INVITE carries the injected headers: {'YES' if hit else 'no'}", "no", not hit)
        if hit:
            HOLES.append("11b a caller on the line (or one spoofed packet) injects header lines into the INVITE "
                         "that rings a phone, through the %-unescaped From user (caller id)")
        alice.sip.send(response_to(got, 486, "Busy Here", "t1", f"sip:alice@{ALICE}"), (SERVER, server.port))
    alice.close()


# ---- 12. the control endpoint from a web page (DNS rebinding, cross-site POST) --------------------
def attack_control(workdir: Path, provider: Provider) -> None:
    """The control endpoint listens on loopback without a token by default. A web page the operator
    opens can reach it: by DNS rebinding (its own name resolving to 127.0.0.1, so the browser sends
    `Host: its-name` and lets the page read the answer) and by a cross-site form POST (no preflight)."""
    import http.client

    print("12. Control endpoint from a hostile web page", flush=True)
    control = ports.port()
    server = Server("control", workdir, ports.rtp_range(4), provider.port,
                    ["--control", f"{SERVER}:{control}"]).start()
    try:
        Phone(server, "alice", ALICE).register()
        results = {}
        for label, method, path, headers in (
                ("GET /api/state with Host: rebound.attacker.example", "GET", "/api/state",
                 {"Host": "rebound.attacker.example"}),
                ("cross-site POST /api/reload (Origin: attacker)", "POST", "/api/reload",
                 {"Origin": "http://attacker.example", "Content-Type": "application/x-www-form-urlencoded"})):
            conn = http.client.HTTPConnection(SERVER, control, timeout=5)
            try:
                conn.request(method, path, body=b"" if method == "POST" else None, headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                results[label] = (resp.status, body)
            except OSError as exc:
                results[label] = (0, str(exc).encode())
            finally:
                conn.close()
        status, body = results["GET /api/state with Host: rebound.attacker.example"]
        leaks = [w for w in ("alice", ALICE, "itsp", PROVIDER) if w.encode() in body]
        report("12a DNS rebinding: the control endpoint read with a foreign Host header",
               f"HTTP {status}, {len(body)} bytes; it names {leaks}", "refused (Host not ours)",
               status >= 400 or not leaks)
        if status < 400 and leaks:
            HOLES.append("12a the control endpoint answers any Host header: a web page the operator opens can "
                         "read users, their addresses, lines and call records by DNS rebinding (no token on "
                         "loopback by default)")
        status, body = results["cross-site POST /api/reload (Origin: attacker)"]
        report("12b cross-site POST /api/reload from a web page", f"HTTP {status}", "refused (foreign Origin)",
               status >= 400)
        if status < 400:
            HOLES.append("12b a cross-site form POST from any web page reloads the program (no Origin check)")
    finally:
        server.stop()


# ---- 10. calls held by one user -------------------------------------------------------------
def attack_concurrent_calls(workdir: Path, provider: Provider, calls: int) -> None:
    print("10. Concurrent calls held by one user", flush=True)
    server = Server("calls", workdir, ports.rtp_range(4 * calls + 8), provider.port).start()
    try:
        provider.mode = "ring"
        mallory = Phone(server, "mallory", ATTACKER)
        forwarded0 = len(provider.invites)
        codes: Counter[int] = Counter()
        for i in range(calls):
            c = secrets.token_hex(6)
            mallory.invite(f"+1555666{i:04d}", 4000 + 2 * i, call_id=c)
        time.sleep(0.5)
        held = len(provider.invites) - forwarded0
        bob = Phone(server, "bob", BOB)
        _, final = bob.invite("+15556669999", 5000)
        codes[final.status if final else 0] += 1
        bob.close()
        mallory.close()
        report(f"10 one user places {calls} calls and keeps them ringing (relay sized for {calls + 2})",
               f"{held} ringing at once; bob's call then: "
               f"{'rings' if final is None or final.status < 300 else final.status}",
               "a per-user limit by default", held < calls)
        if held >= calls:
            HOLES.append(f"10 no default per-user concurrent call limit: one user held {held} calls "
                         "(the relay's ports and the line's channels are everyone's)")
    finally:
        server.stop()
    # 10b: calls from the line's address (one spoofed UDP packet each: the provider is not
    # authenticated, and the flood guard exempts it) ringing a phone that never answers
    server = Server("linecalls", workdir, ports.rtp_range(4 * calls + 8), provider.port).start()
    try:
        alice = Phone(server, "alice", ALICE)
        alice.register()
        n = calls + 4
        for i in range(n):
            ruri = f"sip:+15550009999@{SERVER}:{server.port}"
            invite = build("INVITE", ruri, src=provider.sip.addr, to=ruri, from_=f"sip:+1444{i:04d}@{PROVIDER}",
                           call_id=f"spoofed-{i}-{secrets.token_hex(4)}", cseq=1, body=sdp(PROVIDER, 6000 + 2 * i))
            provider.sip.send(invite, (SERVER, server.port))
        ringing = set()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            msg = alice.sip.recv(0.2)
            if isinstance(msg, Request) and msg.method == "INVITE" and msg.call_id not in ringing:
                ringing.add(msg.call_id)
                # a real phone rings: 180, then nothing until someone picks up
                alice.sip.send(response_to(msg, 180, "Ringing", secrets.token_hex(4), f"sip:alice@{ALICE}"),
                               (SERVER, server.port))
        bob = Phone(server, "bob", BOB)
        _, final = bob.invite("+15556669999", 5000)
        bob.close()
        from callflow.sdk import RING_TIMEOUT

        wait = RING_TIMEOUT + 10.0  # past the default ring timeout an accept without `timeout` gets
        ended = set()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            msg = alice.sip.recv(0.5)
            if isinstance(msg, Request) and msg.method in ("CANCEL", "BYE"):
                ended.add(msg.call_id)
        still = len(ringing - ended)
        report(f"10c the same calls, the phone ringing (180) and nobody cancelling, {wait:.0f} s later",
               f"{still} of {len(ringing)} still ringing (they hold the user's and the line's call slots)",
               "a ring timeout ends them", still == 0)
        if still:
            HOLES.append(f"10c no ring timeout: {still} calls from spoofed provider packets still rang alice after "
                         f"{wait:.0f} s; each holds one of the line's call slots (100) and the user's (8) for as long "
                         "as the phone rings")
        alice.close()
        after = "rings" if final is None or final.status < 300 else f"{final.status} {final.reason}"
        report(f"10b {n} INVITEs from the provider's address (spoofable UDP) to a phone that never answers",
               f"{len(ringing)} ringing the phone at once; a user's outgoing call then: {after}",
               "a per-line limit; others still served", final is None or final.status < 300 or final.status == 486)
        if final is not None and final.status == 503:
            HOLES.append(f"10b {n} INVITEs from the provider's address (one spoofed UDP packet each) held "
                         f"{len(ringing)} calls and exhausted the relay: everyone's new calls got 503")
    finally:
        server.stop()


# ---- main ---------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--only", default="1,2,3,4,5,6,7,8,9,10,11,12", help="attacks to run, e.g. 1,7")
    ap.add_argument("--connections", type=int, default=20000, help="TCP connections of attack 5")
    ap.add_argument("--registers", type=int, default=2000, help="REGISTERs of attack 4")
    ap.add_argument("--calls", type=int, default=40, help="calls of attack 10")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = ap.parse_args()
    only = {int(x) for x in args.only.split(",")}
    workdir = Path(tempfile.mkdtemp(prefix="callflow-attacks-"))
    provider = Provider()
    provider.start()
    main_server = Server("main", workdir, ports.rtp_range(40), provider.port).start()
    amplifier = None
    t0 = time.monotonic()
    try:
        if 7 in only:
            amplifier = Amplifier(main_server)
            amplifier.fire()
        if 1 in only:
            attack_rtp_bleed(main_server, provider)
            attack_rtp_reuse(workdir, provider)
        if 2 in only:
            attack_replay(main_server, provider)
        if 6 in only:
            attack_regex(main_server, provider)
        if 8 in only:
            attack_line_to_line(main_server, provider)
        if 9 in only:
            attack_fingerprint(main_server, provider)
        if 11 in only:
            attack_injection(main_server, provider)
        if 3 in only:
            attack_guessing(main_server)
        if 4 in only:
            attack_register_flood(workdir, provider, args.registers)
        if 10 in only:
            attack_concurrent_calls(workdir, provider, args.calls)
        if 12 in only:
            attack_control(workdir, provider)
        if 5 in only:
            attack_connection_flood(workdir, provider, args.connections)
        if amplifier is not None:
            time.sleep(max(0.0, 34.0 - (time.monotonic() - t0)))  # Timer H: 64*T1 = 32 s
            amplifier.collect()
        alive = main_server.alive()
        tracebacks = main_server.log().count("Traceback")
        report("server survived every attack", f"alive: {'yes' if alive else 'NO'}, tracebacks in its log: "
               f"{tracebacks}", "yes, 0", alive and tracebacks == 0)
    finally:
        main_server.stop()
        provider.stop()
        if args.keep:
            print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    width = max(len(r.attack) for r in ROWS)
    print(f"{'attack':<{width}}  {'held':<8}  figure  [expected]")
    for r in ROWS:
        mark = {True: "yes", False: "NO", None: "-"}[r.held]
        print(f"{r.attack:<{width}}  {mark:<8}  {r.figure}  [{r.expected}]")
    if HOLES:
        print("\nholes:")
        for h in HOLES:
            print(f"  - {h}")


if __name__ == "__main__":
    main()
