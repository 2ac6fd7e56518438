"""A throwaway PostgreSQL server for the call-records tests: Debian's `postgresql` binaries, initdb in
a temporary folder, listening on 127.0.0.1 only (TCP) and a socket in that folder, trust auth.

PostgreSQL refuses to run as root; as root (CI) it runs as the `postgres` user the Debian package
creates, through runuser, in a folder that user owns (under /tmp: pytest's own temp folders are
private to root).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .proc import log_tail

USER = "callflow"


def postgres_bin() -> Path | None:
    """The folder holding initdb and pg_ctl (Debian keeps them off PATH), or None."""
    found = shutil.which("pg_ctl") or shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                      key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return Path(versions[-1]).parent if versions else None


def postgres_problem() -> str | None:
    if postgres_bin() is None:
        return "no PostgreSQL server binaries (initdb, pg_ctl)"
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "running as root without runuser to start PostgreSQL as another user"
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` user to run PostgreSQL as"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[test]')"
    return None


class Postgres:
    def __init__(self, port: int) -> None:
        self.port = port
        self.dir = Path(tempfile.mkdtemp(prefix="callflow-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.bin = postgres_bin()
        self._as: list[str] = []
        if os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    @property
    def dsn(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        assert self.bin is not None
        return subprocess.run([*self._as, str(self.bin / argv[0]), *argv[1:]], capture_output=True, text=True,
                              timeout=timeout, cwd=self.dir, stdin=subprocess.DEVNULL)

    def start(self) -> Postgres:
        init = self._run("initdb", "-D", str(self.data), "-U", USER, "-A", "trust", "--no-sync", "-E", "UTF8")
        if init.returncode != 0:
            raise AssertionError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off"
        start = self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "-t", "60",
                          "start", timeout=90)
        if start.returncode != 0:
            raise AssertionError(f"PostgreSQL did not start:\n{start.stdout}\n{start.stderr}\n"
                                 f"{log_tail(self.log, 30) if self.log.exists() else ''}")
        return self

    def stop(self) -> None:
        if self.data.exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop", timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)
