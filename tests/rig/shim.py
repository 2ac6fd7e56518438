"""Builds bindlo.so, the LD_PRELOAD shim that keeps baresip's wildcard binds on loopback.

Why: baresip 1.0 binds RTP/RTCP and its DNS client sockets to 0.0.0.0 / [::] whatever the config
says; the rig must listen on 127.0.0.1 only. The shim is compiled once per source version into the
temp folder (atomic rename, so parallel test processes can race safely).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

SOURCE = Path(__file__).with_name("bindlo.c")
_lock = threading.Lock()


def compiler() -> str | None:
    """The C compiler used for the shim (env CC overrides), or None."""
    return shutil.which(os.environ.get("CC") or "gcc") or shutil.which("cc")


def bindlo_path() -> Path:
    """Path of a built bindlo.so, compiling it first if needed; raises RuntimeError on failure."""
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:12]
    target = Path(tempfile.gettempdir()) / "callflow-rig-shim" / f"bindlo-{digest}.so"
    with _lock:
        if target.exists():
            return target
        cc = compiler()
        if cc is None:
            raise RuntimeError("no C compiler (gcc) to build the loopback bind shim tests/rig/bindlo.c; "
                               "run .ci/install-peers.sh")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".so")
        os.close(fd)
        try:
            result = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-Wall", "-o", tmp, str(SOURCE), "-ldl"],
                                    capture_output=True, text=True, timeout=120)
            if result.returncode != 0:
                raise RuntimeError(f"building {SOURCE} failed:\n{result.stdout}{result.stderr}")
            os.chmod(tmp, 0o755)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return target


def shim_problem() -> str | None:
    """Why the shim cannot be used here, or None when it builds."""
    try:
        bindlo_path()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    return None
