"""Kamailio as a stand-in IP-telephony provider (ITSP) on 127.0.0.1, run in the foreground per test run.

Why a real Kamailio: Callflow's trunk side must interoperate with a real registrar/proxy (digest auth
with qop, 401 vs 407, record-routing, forking to registered contacts), which a hand-written fake
would only approximate. The config is tests/rig/kamailio-itsp.cfg; see its header for the routing.

Transports: UDP always (the OPTIONS readiness probe uses it); `transports=("udp", "tcp", "tls")`
adds TCP on the same port and TLS on a separately allocated port (`tls_port`), with tls.so (Debian
package kamailio-tls-modules) and a tls.cfg in the run folder: the server certificate comes from
tests/rig/certs.py, TLS 1.2+, no client certificate asked for or verified, and Kamailio's own
outgoing TLS connections (to phones registered over TLS) do not verify the phone either. Kamailio
relays between transports (a trunk on TLS calling a phone on UDP), double record-routing so each
side sees a Route for its own transport.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from .certs import Certs, make_ca_and_cert
from .ports import PortAllocator, port_is_free, ports
from .proc import describe, reap_group, stop_process, wait_until
from .sipping import TRANSPORTS, options_ping

CONFIG_TEMPLATE = Path(__file__).with_name("kamailio-itsp.cfg")

REALM = "itsp.local"
TRUNK_USER = "trunk1"
TRUNK_PASSWORD = "s3cret"
TRUNK_DID = "+15551230000"
PSTN_USER = "pstn"
PSTN_PASSWORD = "pstnpw"
# the port kamailio-itsp.cfg runs on when started by hand, which flows/office.flow names as its
# provider; the rig never binds it, so a server started from the README beside a test run cannot
# register to (and take calls from) the tests' provider: Kamailio() takes a pool port instead
DEFAULT_PORT = 5080
DEFAULT_ACCOUNTS: dict[str, str] = {TRUNK_USER: TRUNK_PASSWORD, PSTN_USER: PSTN_PASSWORD}
WRONG_PASSWORD = "not-the-password"
"""Any password but the right one gets '403 Forbidden (wrong password)' on REGISTER."""

_SUBSTDEF_PORT = re.compile(r'^#!substdef "!ITSP_PORT!\d+!g"$', re.M)
_ACCOUNTS_BLOCK = re.compile(r"(# RIG-ACCOUNTS-BEGIN\n).*?(\s*# RIG-ACCOUNTS-END)", re.S)
_TRANSPORTS_BLOCK = re.compile(r"(# RIG-TRANSPORTS-BEGIN\n).*?(# RIG-TRANSPORTS-END)", re.S)
TLS_MODULE = "tls.so"
_ACCOUNT_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")
_REGISTER_OK = re.compile(
    r"REGISTER ok (?P<user>\S+) contact (?P<contact>.*?) hdr-expires (?P<hdr>\S+)$", re.M)


def kamailio_binary() -> str | None:
    """Path of the kamailio executable (env RIG_KAMAILIO overrides), or None when not installed.

    Looks in /usr/sbin too: Debian installs it there, which is not on every user's PATH.
    """
    override = os.environ.get("RIG_KAMAILIO")
    if override:
        return shutil.which(override)
    return shutil.which("kamailio") or next(
        (p for p in ("/usr/sbin/kamailio", "/usr/local/sbin/kamailio") if Path(p).exists()), None)


def kamailio_module_dir() -> Path | None:
    """The folder holding Kamailio's modules (Debian: /usr/lib/x86_64-linux-gnu/kamailio/modules)."""
    candidates = [*Path("/usr/lib").glob("*/kamailio/modules"), Path("/usr/lib/kamailio/modules"),
                  Path("/usr/local/lib64/kamailio/modules"), Path("/usr/local/lib/kamailio/modules")]
    return next((p for p in candidates if (p / "tm.so").exists()), None)


def tls_module_problem() -> str | None:
    """Why Kamailio cannot do TLS here (tls.so missing), or None. Debian: kamailio-tls-modules."""
    folder = kamailio_module_dir()
    if folder is None:
        return "kamailio modules folder not found"
    if not (folder / TLS_MODULE).exists():
        return f"no {folder / TLS_MODULE} (Debian package kamailio-tls-modules)"
    return None


def normalize_transports(transports: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """('udp', ...) in canonical order; UDP is always on (the readiness probe and most peers use it)."""
    wanted = {transports} if isinstance(transports, str) else set(transports)
    unknown = wanted - set(TRANSPORTS)
    if unknown:
        raise ValueError(f"unknown transports {sorted(unknown)}: use {TRANSPORTS}")
    wanted.add("udp")
    return tuple(t for t in TRANSPORTS if t in wanted)


def tls_config(certs: Certs) -> str:
    """The tls module's config (tls.cfg): TLS 1.2+, server certificate from `certs`, nothing verified."""
    return f"""\
# written by tests/rig/kamailio.py: throwaway certificate for 127.0.0.1, loopback only
[server:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
private_key = {certs.key}
certificate = {certs.cert}
ca_list = {certs.ca_cert}

[client:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
ca_list = {certs.ca_cert}
"""


def render_config(port: int = DEFAULT_PORT, accounts: dict[str, str] | None = None, *,
                  transports: tuple[str, ...] = ("udp",), tls_port: int | None = None,
                  tls_cfg: Path | None = None) -> str:
    """The provider config for `port` with exactly `accounts` (user -> plain-text password).

    With "tcp" in `transports` TCP listens on `port` too; with "tls", TLS listens on `tls_port`
    using the tls.cfg at `tls_cfg` (see tls_config).
    """
    text = CONFIG_TEMPLATE.read_text()
    text, n = _SUBSTDEF_PORT.subn(f'#!substdef "!ITSP_PORT!{port}!g"', text)
    if n != 1:
        raise RuntimeError(f"{CONFIG_TEMPLATE}: expected one ITSP_PORT substdef line, found {n}")
    accounts = DEFAULT_ACCOUNTS if accounts is None else accounts
    lines = []
    for user, password in accounts.items():
        if not _ACCOUNT_NAME.match(user) or '"' in password or "\\" in password:
            raise ValueError(f"account {user!r}/{password!r} cannot be written into the config safely")
        lines.append(f'    $sht(accounts=>{user}) = "{password}";')
    text, n = _ACCOUNTS_BLOCK.subn(lambda m: m.group(1) + "\n".join(lines) + m.group(2), text)
    if n != 1:
        raise RuntimeError(f"{CONFIG_TEMPLATE}: accounts markers not found")
    transports = normalize_transports(transports)
    block = ["disable_tcp=yes"]
    if "tcp" in transports or "tls" in transports:
        block = ["disable_tcp=no", f"listen=tcp:127.0.0.1:{port}" if "tcp" in transports else "",
                 "tcp_connection_lifetime=3605", "tcp_connect_timeout=5", "tcp_rd_buf_size=16384"]
    if "tls" in transports:
        if tls_port is None or tls_cfg is None:
            raise ValueError("transport tls needs tls_port and tls_cfg")
        block += ["enable_tls=yes", f"listen=tls:127.0.0.1:{tls_port}",
                  f'loadmodule "{TLS_MODULE}"', f'modparam("tls", "config", "{tls_cfg}")']
    else:
        block.append("enable_tls=no")
    text, n = _TRANSPORTS_BLOCK.subn(
        lambda m: m.group(1) + "".join(f"{line}\n" for line in block if line) + m.group(2), text)
    if n != 1:
        raise RuntimeError(f"{CONFIG_TEMPLATE}: transports markers not found")
    return text


class Kamailio:
    """One foreground Kamailio provider with its own run folder, config and log.

    Use as a context manager or call start()/stop(). `accounts` replaces the default
    {trunk1: s3cret, pstn: pstnpw}; pass extra entries with `extra_accounts` instead to keep those.
    Routing only knows trunk1 (outbound calls, DID +15551230000) and pstn (the far-end phone);
    other accounts can register but their INVITEs get 403.

    `transports` ("udp",) by default; ("udp", "tcp", "tls") adds TCP on `port` and TLS on
    `tls_port` (allocated from `allocator` when not given). `certs` (from certs.make_ca_and_cert)
    supplies the TLS server certificate; by default a CA and certificate are made in the run folder.
    """

    def __init__(self, port: int | None = None, *, run_dir: Path | None = None,
                 accounts: dict[str, str] | None = None, extra_accounts: dict[str, str] | None = None,
                 children: int = 2, shm_mb: int = 64, pkg_mb: int = 8,
                 transports: tuple[str, ...] | list[str] = ("udp",), tls_port: int | None = None,
                 certs: Certs | None = None, allocator: PortAllocator = ports) -> None:
        self.host = "127.0.0.1"
        self.port = port or allocator.port()  # never DEFAULT_PORT unless asked for (see there)
        port = self.port
        self.transports = normalize_transports(transports)
        self.tls_port = (tls_port or allocator.port()) if "tls" in self.transports else None
        self.certs = certs
        self.accounts = dict(DEFAULT_ACCOUNTS if accounts is None else accounts)
        self.accounts.update(extra_accounts or {})
        self._own_dir = run_dir is None
        self.run_dir = Path(run_dir or tempfile.mkdtemp(prefix=f"kamailio-{port}-"))
        self.config_path = self.run_dir / "kamailio-itsp.cfg"
        self.log_path = self.run_dir / "kamailio.log"
        self.pid_path = self.run_dir / "kamailio.pid"
        self.tls_cfg_path = self.run_dir / "tls.cfg"
        self._children, self._shm_mb, self._pkg_mb = children, shm_mb, pkg_mb
        self._proc: subprocess.Popen[bytes] | None = None

    # -- addresses tests need -------------------------------------------------------------------
    @property
    def hostport(self) -> str:
        """'127.0.0.1:PORT', the registrar/proxy address phones and Callflow point at."""
        return f"{self.host}:{self.port}"

    @property
    def tcp_hostport(self) -> str:
        """'127.0.0.1:PORT' for SIP over TCP (same port as UDP); only with "tcp" in transports."""
        if "tcp" not in self.transports:
            raise AttributeError(f"kamailio on {self.hostport} was started without TCP "
                                 f"(transports={self.transports})")
        return self.hostport

    @property
    def tls_hostport(self) -> str:
        """'127.0.0.1:TLS_PORT' for SIP over TLS; only with "tls" in transports."""
        if self.tls_port is None:
            raise AttributeError(f"kamailio on {self.hostport} was started without TLS "
                                 f"(transports={self.transports})")
        return f"{self.host}:{self.tls_port}"

    def hostport_for(self, transport: str = "udp") -> str:
        """The address to reach this provider over `transport` ("udp", "tcp" or "tls")."""
        if transport not in TRANSPORTS:
            raise ValueError(f"transport {transport!r}: use one of {TRANSPORTS}")
        if transport == "tcp":
            return self.tcp_hostport
        return self.tls_hostport if transport == "tls" else self.hostport

    def uri(self, user: str | None = None, transport: str | None = None) -> str:
        """sip:user@127.0.0.1:PORT (or the bare server URI when user is None).

        With transport "tcp"/"tls": the matching port and a ;transport= parameter, e.g.
        sip:+15557654321@127.0.0.1:TLS_PORT;transport=tls (what a phone on that transport dials).
        """
        hostport = self.hostport_for(transport or "udp")
        param = f";transport={transport}" if transport and transport != "udp" else ""
        return (f"sip:{user}@{hostport}" if user else f"sip:{hostport}") + param

    def account_line(self, user: str, password: str | None = None, *, transport: str | None = None,
                     **params: str | int) -> str:
        """A baresip account line registering `user` here (see rig.baresip.account_line).

        transport "tcp"/"tls" registers over that transport: <sip:user@127.0.0.1:P;transport=tls>.
        A TLS phone also needs certificates in its config: Phone(..., certs=kamailio.certs).
        """
        from .baresip import account_line

        pw = self.accounts.get(user, "") if password is None else password
        return account_line(user, self.hostport_for(transport or "udp"), auth_pass=pw,
                            transport=transport, **params)

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 15.0) -> Kamailio:
        """Write the config, check it, start Kamailio and wait until it answers OPTIONS with 200."""
        binary = kamailio_binary()
        if binary is None:
            raise FileNotFoundError("kamailio is not installed (run .ci/install-peers.sh as root)")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tls_cfg = None
        if "tls" in self.transports:
            problem = tls_module_problem()
            if problem:
                raise FileNotFoundError(f"kamailio cannot do TLS: {problem} (run .ci/install-peers.sh)")
            if self.certs is None:
                self.certs = make_ca_and_cert(self.run_dir / "certs")
            self.tls_cfg_path.write_text(tls_config(self.certs))
            tls_cfg = self.tls_cfg_path
        self.config_path.write_text(render_config(self.port, self.accounts, transports=self.transports,
                                                  tls_port=self.tls_port, tls_cfg=tls_cfg))
        check = subprocess.run([binary, "-c", "-f", str(self.config_path)], capture_output=True,
                               text=True, timeout=30)
        if check.returncode != 0:
            raise AssertionError(f"kamailio rejected {self.config_path}:\n{check.stdout}{check.stderr}")
        cmd = [binary, "-f", str(self.config_path), "-DD", "-E", "-n", str(self._children),
               "-m", str(self._shm_mb), "-M", str(self._pkg_mb), "-P", str(self.pid_path),
               "-Y", str(self.run_dir)]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                          cwd=self.run_dir, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise AssertionError(f"kamailio on {self.hostport} exited with {self._proc.returncode} "
                                     f"during start-up{describe('kamailio', self.log_path)}")
            if all(options_ping(port, self.host, timeout=0.5, transport=transport) == 200
                   for transport, port in self._listeners()):
                return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"kamailio on {self.hostport} did not answer OPTIONS with 200 over "
                           f"{'/'.join(self.transports)} within {timeout:g} s"
                           f"{describe('kamailio', self.log_path)}")

    def _listeners(self) -> list[tuple[str, int]]:
        """(transport, port) of every listener, UDP first."""
        found = [(t, self.port) for t in self.transports if t != "tls"]
        if self.tls_port is not None:
            found.append(("tls", self.tls_port))
        return found

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (Kamailio then stops its workers), wait, then SIGKILL the whole process group."""
        if self._proc is not None:
            stop_process(self._proc, graceful=(timeout,))
            reap_group(self._proc)  # workers that outlived the main process
            self._proc = None
            # the next provider (e.g. the next test module's) may want the same port at once
            wait_until(lambda: all(port_is_free(p, self.host) for _, p in self._listeners()), timeout)

    def cleanup(self) -> None:
        """Stop and remove the run folder, when the rig created it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self) -> Kamailio:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- observing -----------------------------------------------------------------------------
    def log_text(self) -> str:
        """Everything Kamailio logged so far (stderr; log_stderror=yes)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_mark(self) -> int:
        """Current log length, to pass as `since` to wait_log and ignore older lines."""
        return len(self.log_text())

    def wait_log(self, pattern: str, timeout: float = 10.0, since: int = 0) -> re.Match[str]:
        """Wait for a regex in the log (e.g. r'REGISTER ok trunk1 contact'), fail with the log tail."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.log_text(), since)
            if match:
                return match
            if time.monotonic() >= deadline:
                raise TimeoutError(f"kamailio on {self.hostport} never logged /{pattern}/ within "
                                   f"{timeout:g} s{describe('kamailio', self.log_path)}")
            time.sleep(0.05)

    def registrations(self, user: str, since: int = 0) -> list[tuple[str, int | None]]:
        """(contact, expires) for each successful REGISTER of `user` logged after offset `since`.

        expires comes from the contact's ;expires= param, else the Expires header (None if neither);
        0 means the binding was removed (unregistration).
        """
        found: list[tuple[str, int | None]] = []
        for m in _REGISTER_OK.finditer(self.log_text(), since):
            if m.group("user") != user:
                continue
            contact, header = m.group("contact"), m.group("hdr")
            param = re.search(r";expires=(\d+)", contact.split(">", 1)[-1], re.I)
            value = param.group(1) if param else header
            found.append((contact, int(value) if value and value.isdigit() else None))
        return found

    def wait_registered(self, user: str, timeout: float = 10.0, since: int = 0) -> str:
        """Wait until `user` holds a binding registered after `since`; return that Contact header."""
        deadline = time.monotonic() + timeout
        while True:
            live = [c for c, exp in self.registrations(user, since) if exp != 0 and c.strip() != "*"]
            if live:
                return live[-1]
            if time.monotonic() >= deadline:
                raise TimeoutError(f"kamailio on {self.hostport}: {user} did not register within "
                                   f"{timeout:g} s{describe('kamailio', self.log_path)}")
            time.sleep(0.05)
