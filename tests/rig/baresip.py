"""Headless baresip phones on 127.0.0.1, driven over ctrl_tcp (netstring-framed JSON).

Facts about baresip 1.0.0 (Debian 12) this module relies on, learned the hard way:

* `net_interface 127.0.0.1` is required: `lo` fails, and unset, baresip advertises eth0's address in
  SDP and Contact.
* `sip_listen 127.0.0.1:P` binds UDP+TCP on P *and* TLS on P+1: keep phones 2 ports apart.
* No sound card: `ausine` (440 Hz tone) is the microphone and only works with `ausrc_srate 48000`,
  `ausrc_channels 2`; `aubridge` with an unused device name is a null speaker. RTP flows for real.
* ctrl_tcp keeps ONE connection: a second client silently takes over the socket and the first one
  stops getting events. So each Phone holds one connection for both commands and events, and a
  reader thread queues every event as it arrives.
* An account listed in the `accounts` file registers as soon as baresip starts, before any ctrl
  client can connect, so its REGISTER_OK would be lost. The rig starts baresip with an empty
  accounts file and creates the account with the `uanew` command once the event stream is open.
* `answermode=auto` answers without a CALL_INCOMING event (only CALL_REMOTE_SDP, CALL_LOCAL_SDP,
  CALL_ESTABLISHED); `answermode=manual` emits CALL_INCOMING and waits for `accept`.
* Packet counts: with `rtp_stats yes` baresip prints a table when a call ends (either side hangs up):
      audio           Transmit:     Receive:
      packets:            331          330
      avg. bitrate:      64.1         63.9  (kbit/s)
      errors:               0            0
      pkt.report:         250          250
      lost:                 0            0
      jitter:             1.2          1.2  (ms)
  preceded by "<aor>: Call with <peer> terminated (duration: N secs)". `callstat` in 1.0 shows SDP
  only, and CALL_RTCP events (RTCP every ~5 s) are too coarse for short calls, so the rig parses
  this table from the phone's log.
* RTP/RTCP sockets are bound to 0.0.0.0 whatever the config says (src/stream.c: "we listen on all
  interfaces"), and so are its DNS client sockets (0.0.0.0 and [::]). The rig preloads bindlo.so
  (tests/rig/bindlo.c, built by shim.py), which turns wildcard binds into 127.0.0.1 / ::1.
* No packet table at all is printed for a call that sent and received nothing.
* SIP over TCP/TLS: put ;transport=tcp or ;transport=tls in the account URI
  (<sip:pstn@127.0.0.1:5081;transport=tls>). baresip registers over it and its Contact is
  <sip:user-0x..@127.0.0.1:P;transport=tcp> (TCP listens on P) or ...:P+1;transport=tls. It appends
  the account URI's parameters to every URI it dials (so Phone.dial drops a duplicate ;transport=).
* TLS in 1.0 knows two config options only: `sip_certificate` (ONE pem file holding the certificate
  and its key, presented by the TLS listener on P+1) and `sip_cafile` (CAs added to the trust
  store). There is no `sip_verify_server` (that is baresip 2.x) and libre 1.1 accepts any server
  certificate: a phone registers over TLS with no sip_cafile, or with one of an unrelated CA.
  Without `sip_certificate` the TLS listener fails every handshake ("tls: accept error"), so calls
  TO a phone registered over TLS fail (Kamailio opens a new connection to the Contact's P+1): the
  rig gives TLS phones a certificate (Phone(certs=...), PhoneFactory(certs=...)).
* SIGTERM makes baresip unregister and wait for the answer (up to 32 s if the registrar is gone);
  a second SIGTERM makes it exit at once. The rig sends `quit`, then SIGTERM twice, then SIGKILL.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from .certs import Certs
from .ports import PortAllocator, ports
from .proc import describe, stop_process, wait_until
from .shim import bindlo_path
from .sipping import ensure_loopback

REGISTER_OK = "REGISTER_OK"
REGISTER_FAIL = "REGISTER_FAIL"
CALL_INCOMING = "CALL_INCOMING"
CALL_RINGING = "CALL_RINGING"
CALL_PROGRESS = "CALL_PROGRESS"
CALL_ESTABLISHED = "CALL_ESTABLISHED"
CALL_CLOSED = "CALL_CLOSED"
CALL_RTPESTAB = "CALL_RTPESTAB"
CALL_RTCP = "CALL_RTCP"

MODULE_PATH = Path("/usr/lib/baresip/modules")
REQUIRED_MODULES = ("g711.so", "ausine.so", "aubridge.so", "account.so", "menu.so", "ctrl_tcp.so")


def baresip_binary() -> str | None:
    """Path of the baresip executable (env RIG_BARESIP overrides), or None when not installed."""
    return shutil.which(os.environ.get("RIG_BARESIP") or "baresip")


def missing_modules() -> list[str]:
    """The baresip modules the rig loads that are not installed (baresip-core ships them all)."""
    return [m for m in REQUIRED_MODULES if not (MODULE_PATH / m).exists()]


def account_line(user: str, hostport: str, *, auth_user: str | None = None, auth_pass: str | None = None,
                 regint: int = 60, answermode: str = "manual", audio_codecs: str = "PCMU", ptime: int = 20,
                 display: str | None = None, transport: str | None = None, **extra: str | int) -> str:
    """A baresip account line, e.g. <sip:alice@127.0.0.1:5060>;auth_user=alice;auth_pass=...;regint=60.

    regint=0 makes a phone that never registers and only places/receives direct calls. `auth_user`
    defaults to `user` when a password is given. Extra keyword arguments become ;key=value params.
    transport "tcp" or "tls" goes into the URI (<sip:alice@127.0.0.1:5061;transport=tls>): baresip
    then registers over it and advertises a Contact on that transport. A TLS phone needs
    `certs` (Phone/PhoneFactory) so it can serve TLS when called back.
    """
    if transport not in (None, "udp", "tcp", "tls"):
        raise ValueError(f"transport {transport!r}: use 'udp', 'tcp' or 'tls'")
    param = f";transport={transport}" if transport in ("tcp", "tls") else ""
    aor = f"<sip:{user}@{hostport}{param}>"
    ensure_loopback_uri(aor)
    if display:
        aor = f'"{display}" {aor}'
    params: dict[str, str | int] = {}
    if auth_pass is not None:
        params["auth_user"] = auth_user or user
        params["auth_pass"] = auth_pass
    params.update(regint=regint, answermode=answermode, audio_codecs=audio_codecs, ptime=ptime)
    params.update(extra)
    return aor + "".join(f";{k}={v}" for k, v in params.items())


_URI_HOST = re.compile(r"sips?:(?:[^@;>]*@)?(\[[^\]]+\]|[^:;>?]+)")


def ensure_loopback_uri(uri: str) -> None:
    """Refuse a SIP URI whose host is not a loopback IP literal (or localhost): no test traffic
    may leave this machine, and baresip would try DNS for a name."""
    m = _URI_HOST.search(uri)
    if not m:
        raise ValueError(f"not a SIP URI: {uri!r}")
    host = m.group(1).strip("[]")
    if host != "localhost":
        try:
            ensure_loopback(host)
        except ValueError as exc:  # not an IP literal at all, or off-machine
            raise ValueError(f"refusing SIP URI {uri!r}: host must be 127.0.0.1, ::1 or localhost") from exc


def render_config(name: str, sip_port: int, rtp_range: tuple[int, int], ctrl_port: int, *,
                  certificate: Path | None = None, cafile: Path | None = None,
                  audio_source: str | None = None) -> str:
    """The headless baresip `config` file (port of the shared baresip-conf.sh).

    `certificate` (cert + key in one PEM file) is what the phone presents on its TLS listener and
    when it connects over TLS; `cafile` holds the CA certificates it trusts (see the module doc).
    `audio_source` replaces the 440 Hz sine microphone, e.g. `aufile,/path/tone.wav` (baresip 1.0's
    aufile wants the file at `ausrc_srate`/`ausrc_channels`: 48 kHz stereo).
    """
    rtp_min, rtp_max = rtp_range
    tls = ""
    if certificate is not None:
        tls += f"sip_certificate\t\t{certificate}\n"
    if cafile is not None:
        tls += f"sip_cafile\t\t{cafile}\n"
    return f"""\
# written by tests/rig/baresip.py: headless phone '{name}', loopback only
poll_method\t\tepoll
# also binds TCP on this port and TLS on port+1
sip_listen\t\t127.0.0.1:{sip_port}
{tls}call_local_timeout\t120
call_max_calls\t\t4
audio_path\t\t/usr/share/baresip
# no sound card: a 440 Hz sine is the microphone, aubridge to an unused device is a null speaker
audio_source\t\t{audio_source or "ausine,440"}
audio_player\t\taubridge,nil_{name}
audio_alert\t\taubridge,nil_{name}
audio_level\t\tno
# ausine only produces 48 kHz stereo; baresip resamples for PCMU
ausrc_srate\t\t48000
ausrc_channels\t\t2
audio_buffer\t\t20-160
rtp_ports\t\t{rtp_min}-{rtp_max}
rtcp_mux\t\tno
jitter_buffer_delay\t5-10
# prints the Transmit/Receive packet table when a call ends (parsed by Phone.rtp_stats)
rtp_stats\t\tyes
# 'lo' does not work; without this baresip puts eth0's address in SDP and Contact
net_interface\t\t127.0.0.1
dns_server\t\t127.0.0.1:53
# no '[0:00:03] audio=64000/64000 (bit/s)' status line redrawn ten times a second in the log
statmode_default\toff
module_path\t\t{MODULE_PATH}
module\t\t\tg711.so
module\t\t\tausine.so
module\t\t\taufile.so
module\t\t\taubridge.so
module_tmp\t\tuuid.so
module_tmp\t\taccount.so
module_app\t\tmenu.so
module_app\t\tctrl_tcp.so
ctrl_tcp_listen\t\t127.0.0.1:{ctrl_port}
"""


@dataclass(frozen=True)
class RtpStats:
    """One call's packet table from baresip's rtp_stats output (tx = sent by this phone)."""

    tx_packets: int
    rx_packets: int
    tx_lost: int = 0
    rx_lost: int = 0
    tx_errors: int = 0
    rx_errors: int = 0
    tx_jitter_ms: float = 0.0
    rx_jitter_ms: float = 0.0
    peer: str | None = None
    duration_s: int | None = None
    rows: dict[str, tuple[str, str]] = field(default_factory=dict)


_STATS_HEADER = re.compile(r"^audio\s+Transmit:\s+Receive:\s*$")
_STATS_ROW = re.compile(r"^\s*([A-Za-z][A-Za-z. ]*?):\s+(\S+)\s+(\S+)")
_TERMINATED = re.compile(r"Call with (\S+) terminated \(duration: (\d+) secs?\)")


def parse_rtp_stats(log: str) -> list[RtpStats]:
    """Every audio packet table in a baresip log, oldest first; tolerant of interleaved lines."""

    def num(rows: dict[str, tuple[str, str]], key: str, idx: int, kind: type[int] | type[float]) -> float:
        try:
            return kind(rows[key][idx])
        except (KeyError, ValueError):
            return kind(0)

    lines = [ln.split("\r")[-1] for ln in log.split("\n")]
    found: list[RtpStats] = []
    peer: str | None = None
    duration: int | None = None
    for i, line in enumerate(lines):
        term = _TERMINATED.search(line)
        if term:
            peer, duration = term.group(1), int(term.group(2))
            continue
        if not _STATS_HEADER.match(line):
            continue
        rows: dict[str, tuple[str, str]] = {}
        for row in lines[i + 1:i + 12]:
            m = _STATS_ROW.match(row)
            if not m:
                if rows:
                    break
                continue
            rows[m.group(1).strip()] = (m.group(2), m.group(3))
        if "packets" not in rows:
            continue
        found.append(RtpStats(
            tx_packets=int(num(rows, "packets", 0, int)), rx_packets=int(num(rows, "packets", 1, int)),
            tx_lost=int(num(rows, "lost", 0, int)), rx_lost=int(num(rows, "lost", 1, int)),
            tx_errors=int(num(rows, "errors", 0, int)), rx_errors=int(num(rows, "errors", 1, int)),
            tx_jitter_ms=num(rows, "jitter", 0, float), rx_jitter_ms=num(rows, "jitter", 1, float),
            peer=peer, duration_s=duration, rows=rows))
        peer, duration = None, None
    return found


class CtrlError(AssertionError):
    """A ctrl_tcp command failed or got no answer."""


class Phone:
    """One baresip process with one account, driven over ctrl_tcp.

    Events are collected by a reader thread into `events` (every event, in arrival order).
    wait_event() hands each event out once, oldest first, so waiting for CALL_CLOSED twice across two
    calls yields two different events, and an event that arrived before the wait is not missed.
    """

    def __init__(self, account: str, *, name: str = "phone", lifetime: float = 300.0,
                 sip_port: int | None = None, rtp_range: tuple[int, int] | None = None,
                 ctrl_port: int | None = None, base_dir: Path | None = None,
                 allocator: PortAllocator = ports, bind_loopback: bool = True,
                 certs: Certs | None = None, certificate: Path | None = None,
                 cafile: Path | None = None, audio_source: str | None = None) -> None:
        """`certs` (tests/rig/certs.py) sets both `certificate` (certs.combined_pem) and `cafile`
        (certs.ca_cert) for SIP over TLS; the explicit arguments override it. `audio_source`: the
        microphone (render_config)."""
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise ValueError(f"phone name {name!r}: use letters, digits, '-' and '_' only")
        self.account = account
        self.name = name
        self.bind_loopback = bind_loopback
        self.lifetime = lifetime
        self.sip_port = sip_port or allocator.sip_port()
        self.rtp_range = rtp_range or allocator.rtp_range()
        self.ctrl_port = ctrl_port or allocator.port()
        self.certificate = certificate or (certs.combined_pem if certs else None)
        self.cafile = cafile or (certs.ca_cert if certs else None)
        self.audio_source = audio_source
        self._own_dir = base_dir is None
        self.dir = Path(base_dir or tempfile.mkdtemp(prefix=f"baresip-{name}-"))
        self.log_path = self.dir / "baresip.log"
        self.events: list[dict] = []
        self._taken: set[int] = set()  # indexes into events already handed out by wait_event
        self._cond = threading.Condition()
        self._responses: dict[str, dict] = {}
        self._tokens = itertools.count(1)
        self._send_lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._reader_error: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._quit_at: float | None = None  # monotonic time `quit` was sent to this run of the phone

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def aor(self) -> str:
        """The account's address of record, e.g. sip:pstn@127.0.0.1:5080."""
        m = re.search(r"<(sip:[^>]+)>", self.account)
        return m.group(1) if m else self.account

    @property
    def contact_hostport(self) -> str:
        """Where this phone listens for SIP: '127.0.0.1:SIP_PORT' (for direct calls to it)."""
        return f"127.0.0.1:{self.sip_port}"

    @property
    def tls_hostport(self) -> str:
        """Where this phone listens for SIP over TLS: '127.0.0.1:SIP_PORT+1' (TCP is on SIP_PORT)."""
        return f"127.0.0.1:{self.sip_port + 1}"

    @property
    def transport(self) -> str:
        """The account's transport: 'udp', or 'tcp'/'tls' from ;transport= in its URI."""
        m = re.search(r";transport=(\w+)", self.aor, re.I)
        return m.group(1).lower() if m else "udp"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 15.0) -> Phone:
        """Write the config, start baresip, open ctrl_tcp, then create the account (see module doc)."""
        binary = baresip_binary()
        if binary is None:
            raise FileNotFoundError("baresip is not installed (run .ci/install-peers.sh as root)")
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "config").write_text(render_config(
            self.name, self.sip_port, self.rtp_range, self.ctrl_port,
            certificate=self.certificate, cafile=self.cafile, audio_source=self.audio_source))
        (self.dir / "accounts").write_text("")
        (self.dir / "contacts").write_text("")
        env = dict(os.environ)
        if self.bind_loopback:  # RTP and DNS sockets would otherwise listen on 0.0.0.0
            env["LD_PRELOAD"] = " ".join(filter(None, [str(bindlo_path()), env.get("LD_PRELOAD")]))
        self._quit_at = None
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [binary, "-f", str(self.dir), "-t", str(int(self.lifetime))], env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.dir, start_new_session=True)
        deadline = time.monotonic() + timeout
        while self._sock is None:
            if self._proc.poll() is not None:
                raise AssertionError(f"baresip '{self.name}' exited with {self._proc.returncode} during "
                                     f"start-up{describe(self.name, self.log_path)}")
            try:
                self._sock = socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=1.0)
            except OSError:
                if time.monotonic() >= deadline:
                    self.stop()
                    raise TimeoutError(f"baresip '{self.name}' never opened ctrl_tcp on 127.0.0.1:"
                                       f"{self.ctrl_port} within {timeout:g} s"
                                       f"{describe(self.name, self.log_path)}") from None
                time.sleep(0.05)
        self._sock.settimeout(None)
        self._reader = threading.Thread(target=self._read_loop, name=f"baresip-{self.name}-ctrl",
                                        daemon=True)
        self._reader.start()
        self.command("uanew", self.account, timeout=max(1.0, deadline - time.monotonic()))
        return self

    def request_quit(self) -> None:
        """Send `quit` once (baresip unregisters, then exits) without waiting: stop_all asks every
        phone first, so their unregistrations overlap instead of taking up to 3 s each in turn."""
        proc = self._proc
        if self._quit_at is None and proc is not None and proc.poll() is None and self._sock is not None:
            self._note("quit (stopping the phone)")
            self._quit_at = time.monotonic()
            try:
                self._send({"command": "quit", "params": "", "token": "quit"})
            except OSError:
                pass

    def stop(self) -> None:
        """Quit politely (unregisters), then escalate: SIGTERM, SIGTERM (forces), SIGKILL."""
        proc = self._proc
        self.request_quit()
        if proc is not None and self._quit_at is not None:
            try:  # 3 s from the quit, however long ago stop_all sent it
                proc.wait(timeout=max(0.0, self._quit_at + 3.0 - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        if proc is not None:
            stop_process(proc, graceful=(1.0, 2.0))
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None
        if self._reader is not None:
            self._reader.join(timeout=2.0)
            self._reader = None

    def cleanup(self) -> None:
        """Stop and remove the config folder, when the rig created it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Phone:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- ctrl_tcp ------------------------------------------------------------------------------
    def _send(self, message: dict) -> None:
        if self._sock is None:
            raise CtrlError(f"baresip '{self.name}' is not running")
        data = json.dumps(message).encode()
        with self._send_lock:
            self._sock.sendall(b"%d:%s," % (len(data), data))

    def _note(self, text: str) -> None:
        """Put a 'rig> command' line into the phone's log, so the log reads as one timeline."""
        try:
            with open(self.log_path, "a") as log:
                log.write(f"rig> {text}\n")
        except OSError:
            pass

    def _read_loop(self) -> None:
        """Split the netstring stream: responses go to their token, everything else is an event."""
        assert self._sock is not None
        sock, buf = self._sock, b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while True:
                    colon = buf.find(b":")
                    if colon < 0:
                        break
                    length = int(buf[:colon])
                    if len(buf) < colon + 1 + length + 1:
                        break
                    message = json.loads(buf[colon + 1:colon + 1 + length])
                    buf = buf[colon + 1 + length + 1:]
                    with self._cond:
                        if message.get("response"):
                            self._responses[str(message.get("token"))] = message
                        else:
                            message["_t"] = time.monotonic()
                            self.events.append(message)
                        self._cond.notify_all()
        except (OSError, ValueError) as exc:
            self._reader_error = repr(exc)
        finally:
            with self._cond:
                self._reader_error = self._reader_error or "ctrl_tcp connection closed"
                self._cond.notify_all()

    def command(self, command: str, params: str = "", *, timeout: float = 5.0,
                check: bool = True) -> dict:
        """Run a menu command (dial, accept, hangup, callstat, reginfo, uanew...); return its response.

        With check=True a response with ok=false raises CtrlError naming the command and its data.
        """
        token = f"{self.name}-{next(self._tokens)}"
        self._note(f"{command} {params}".rstrip())
        self._send({"command": command, "params": params, "token": token})
        with self._cond:
            if not self._cond.wait_for(lambda: token in self._responses or self._reader_error is not None,
                                       timeout):
                raise CtrlError(f"baresip '{self.name}': no answer to '{command} {params}' within "
                                f"{timeout:g} s{describe(self.name, self.log_path)}")
            response = self._responses.pop(token, None)
        if response is None:
            raise CtrlError(f"baresip '{self.name}': ctrl_tcp lost ({self._reader_error}) while "
                            f"running '{command} {params}'{describe(self.name, self.log_path)}")
        if check and not response.get("ok"):
            raise CtrlError(f"baresip '{self.name}': '{command} {params}' failed: "
                            f"{response.get('data')!r}{describe(self.name, self.log_path)}")
        return response

    def dial(self, uri: str) -> dict:
        """Place a call to `uri` (a loopback SIP URI; the call's progress arrives as events).

        baresip appends the account URI's parameters (;transport=tcp/tls) to every dialed URI, so a
        TLS phone must dial a TLS address (e.g. kamailio.uri(number, transport="tls")); a
        ;transport= equal to the account's is dropped here so it does not appear twice.
        """
        ensure_loopback_uri(uri)
        if self.transport != "udp":
            m = re.search(r";transport=(\w+)", uri, re.I)
            if m and m.group(1).lower() != self.transport:
                raise ValueError(f"phone '{self.name}' registers over {self.transport} and baresip adds "
                                 f";transport={self.transport} to every dialed URI: cannot dial {uri!r}")
            if m:
                uri = uri[:m.start()] + uri[m.end():]
        return self.command("dial", uri)

    def accept(self) -> dict:
        """Answer the ringing incoming call (answermode=manual)."""
        return self.command("accept")

    def hangup(self) -> dict:
        """Hang up the current call (or reject/cancel one not yet answered)."""
        return self.command("hangup")

    def callstat(self) -> str:
        """baresip's call debug text (SDP, state; no packet counts in 1.0)."""
        return str(self.command("callstat").get("data", ""))

    def reginfo(self) -> str:
        """baresip's registration summary text."""
        return str(self.command("reginfo").get("data", ""))

    # -- events --------------------------------------------------------------------------------
    def mark(self) -> int:
        """Index of the next event; pass as `since` to wait only for events after this point."""
        with self._cond:
            return len(self.events)

    def event_types(self) -> list[str]:
        """Types of all events so far, for assertions and failure messages."""
        with self._cond:
            return [str(e.get("type")) for e in self.events]

    def wait_event(self, types: str | Iterable[str], timeout: float = 10.0, *, since: int = 0) -> dict:
        """Return (and consume) the oldest not yet consumed event of one of `types` at index >= since."""
        wanted = {types} if isinstance(types, str) else set(types)

        def find() -> int | None:
            for i in range(since, len(self.events)):
                if i not in self._taken and self.events[i].get("type") in wanted:
                    return i
            return None

        with self._cond:
            found = self._cond.wait_for(lambda: find() is not None or self._reader_error is not None,
                                        timeout)
            index = find()
            if index is not None:
                self._taken.add(index)
                return self.events[index]
            seen = [str(e.get("type")) for e in self.events[since:]]
        reason = f"(ctrl_tcp lost: {self._reader_error})" if found else f"within {timeout:g} s"
        raise TimeoutError(f"baresip '{self.name}' ({self.aor}): no {'/'.join(sorted(wanted))} event "
                           f"{reason}; events seen: {seen}{describe(self.name, self.log_path)}")

    def wait_registered(self, timeout: float = 10.0) -> dict:
        """Wait for REGISTER_OK; a REGISTER_FAIL (e.g. '403 Forbidden') raises AssertionError."""
        event = self.wait_event((REGISTER_OK, REGISTER_FAIL), timeout)
        if event["type"] == REGISTER_FAIL:
            raise AssertionError(f"baresip '{self.name}' ({self.aor}) failed to register: "
                                 f"{event.get('param')!r}{describe(self.name, self.log_path)}")
        return event

    def wait_register_fail(self, timeout: float = 10.0) -> dict:
        """Wait for REGISTER_FAIL (its 'param' holds the status, e.g. '403 Forbidden (wrong password)')."""
        event = self.wait_event((REGISTER_OK, REGISTER_FAIL), timeout)
        if event["type"] != REGISTER_FAIL:
            raise AssertionError(f"baresip '{self.name}' ({self.aor}) registered, but a failure was "
                                 f"expected{describe(self.name, self.log_path)}")
        return event

    # -- media ---------------------------------------------------------------------------------
    def log_text(self) -> str:
        """Everything baresip printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def all_rtp_stats(self) -> list[RtpStats]:
        """Packet tables of every finished call, oldest first."""
        return parse_rtp_stats(self.log_text())

    def rtp_stats(self, timeout: float = 5.0) -> RtpStats:
        """Packet counts of the last finished call (baresip prints them once the call has ended).

        Waits until the log holds one table per call that was established and has closed.
        """
        def expected() -> int:
            with self._cond:
                est = {e.get("id") for e in self.events if e.get("type") == CALL_ESTABLISHED}
                closed = {e.get("id") for e in self.events if e.get("type") == CALL_CLOSED}
            return len(est & closed)

        need = max(1, expected())
        if not wait_until(lambda: len(self.all_rtp_stats()) >= need, timeout):
            raise TimeoutError(f"baresip '{self.name}': no RTP packet table for the last call in its log "
                               f"within {timeout:g} s (has the call ended? baresip prints none for a "
                               f"call that sent and received no RTP at all); events: "
                               f"{self.event_types()}{describe(self.name, self.log_path)}")
        return self.all_rtp_stats()[-1]


class PhoneFactory:
    """Starts phones for one test and stops them all afterwards (the `phone_factory` fixture)."""

    def __init__(self, base_dir: Path, certs: Certs | Callable[[], Certs] | None = None) -> None:
        """`certs` (or a function making them, called at most once) is handed to every phone whose
        account uses ;transport=tls and that was given no certs/certificate/cafile of its own."""
        self.base_dir = base_dir
        self.phones: list[Phone] = []
        self._certs = certs

    def __call__(self, account: str, *, name: str | None = None, start_timeout: float = 15.0,
                 **kwargs: Any) -> Phone:
        """Start a phone for `account` (a baresip account line); kwargs go to Phone()."""
        if (self._certs is not None and re.search(r";transport=tls\b", account, re.I)
                and not {"certs", "certificate", "cafile"} & kwargs.keys()):
            if callable(self._certs):
                self._certs = self._certs()
            kwargs["certs"] = self._certs
        name = name or f"phone{len(self.phones) + 1}"
        if any(p.name == name for p in self.phones):
            raise ValueError(f"phone name {name!r} already used in this test")
        phone = Phone(account, name=name, base_dir=self.base_dir / name, **kwargs)
        self.phones.append(phone)
        return phone.start(timeout=start_timeout)

    def stop_all(self) -> None:
        """Stop every phone, even if stopping one of them fails. The phones stop side by side (each
        may wait up to 3 s for its unregistration when the registrar is gone, then escalate), so a
        test's teardown takes one phone's time, not the sum."""
        errors = []
        for phone in self.phones:
            try:
                phone.request_quit()
            except Exception:  # noqa: BLE001 - stop() below tries again and reports
                pass

        def stop(phone: Phone) -> str | None:
            try:
                phone.stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                return f"{phone.name}: {exc!r}"
            return None

        with ThreadPoolExecutor(max_workers=max(1, min(8, len(self.phones)))) as pool:
            errors = [e for e in pool.map(stop, self.phones) if e is not None]
        if errors:
            raise RuntimeError("stopping phones failed: " + "; ".join(errors))
