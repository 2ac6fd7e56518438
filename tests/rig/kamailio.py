"""Kamailio as a stand-in IP-telephony provider (ITSP) on 127.0.0.1, run in the foreground per test run.

Why a real Kamailio: Callflow's trunk side must interoperate with a real registrar/proxy (digest auth
with qop, 401 vs 407, record-routing, forking to registered contacts), which a hand-written fake
would only approximate. The config is tests/rig/kamailio-itsp.cfg; see its header for the routing.
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

from .ports import port_is_free
from .proc import describe, reap_group, stop_process, wait_until
from .sipping import options_ping

CONFIG_TEMPLATE = Path(__file__).with_name("kamailio-itsp.cfg")

REALM = "itsp.local"
TRUNK_USER = "trunk1"
TRUNK_PASSWORD = "s3cret"
TRUNK_DID = "+15551230000"
PSTN_USER = "pstn"
PSTN_PASSWORD = "pstnpw"
DEFAULT_PORT = 5080
DEFAULT_ACCOUNTS: dict[str, str] = {TRUNK_USER: TRUNK_PASSWORD, PSTN_USER: PSTN_PASSWORD}
WRONG_PASSWORD = "not-the-password"
"""Any password but the right one gets '403 Forbidden (wrong password)' on REGISTER."""

_SUBSTDEF_PORT = re.compile(r'^#!substdef "!ITSP_PORT!\d+!g"$', re.M)
_ACCOUNTS_BLOCK = re.compile(r"(# RIG-ACCOUNTS-BEGIN\n).*?(\s*# RIG-ACCOUNTS-END)", re.S)
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


def render_config(port: int = DEFAULT_PORT, accounts: dict[str, str] | None = None) -> str:
    """The provider config for `port` with exactly `accounts` (user -> plain-text password)."""
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
    return text


class Kamailio:
    """One foreground Kamailio provider with its own run folder, config and log.

    Use as a context manager or call start()/stop(). `accounts` replaces the default
    {trunk1: s3cret, pstn: pstnpw}; pass extra entries with `extra_accounts` instead to keep those.
    Routing only knows trunk1 (outbound calls, DID +15551230000) and pstn (the far-end phone);
    other accounts can register but their INVITEs get 403.
    """

    def __init__(self, port: int = DEFAULT_PORT, *, run_dir: Path | None = None,
                 accounts: dict[str, str] | None = None, extra_accounts: dict[str, str] | None = None,
                 children: int = 2, shm_mb: int = 64, pkg_mb: int = 8) -> None:
        self.host = "127.0.0.1"
        self.port = port
        self.accounts = dict(DEFAULT_ACCOUNTS if accounts is None else accounts)
        self.accounts.update(extra_accounts or {})
        self._own_dir = run_dir is None
        self.run_dir = Path(run_dir or tempfile.mkdtemp(prefix=f"kamailio-{port}-"))
        self.config_path = self.run_dir / "kamailio-itsp.cfg"
        self.log_path = self.run_dir / "kamailio.log"
        self.pid_path = self.run_dir / "kamailio.pid"
        self._children, self._shm_mb, self._pkg_mb = children, shm_mb, pkg_mb
        self._proc: subprocess.Popen[bytes] | None = None

    # -- addresses tests need -------------------------------------------------------------------
    @property
    def hostport(self) -> str:
        """'127.0.0.1:PORT', the registrar/proxy address phones and Callflow point at."""
        return f"{self.host}:{self.port}"

    def uri(self, user: str | None = None) -> str:
        """sip:user@127.0.0.1:PORT (or the bare server URI when user is None)."""
        return f"sip:{user}@{self.hostport}" if user else f"sip:{self.hostport}"

    def account_line(self, user: str, password: str | None = None, **params: str | int) -> str:
        """A baresip account line registering `user` here (see rig.baresip.account_line)."""
        from .baresip import account_line

        pw = self.accounts.get(user, "") if password is None else password
        return account_line(user, self.hostport, auth_pass=pw, **params)

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
        self.config_path.write_text(render_config(self.port, self.accounts))
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
            if options_ping(self.port, self.host, timeout=0.3) == 200:
                return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"kamailio on {self.hostport} did not answer OPTIONS with 200 within "
                           f"{timeout:g} s{describe('kamailio', self.log_path)}")

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (Kamailio then stops its workers), wait, then SIGKILL the whole process group."""
        if self._proc is not None:
            stop_process(self._proc, graceful=(timeout,))
            reap_group(self._proc)  # workers that outlived the main process
            self._proc = None
            # the next provider (e.g. the next test module's) may want the same port at once
            wait_until(lambda: port_is_free(self.port, self.host), timeout)

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
