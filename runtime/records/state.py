"""The state folder: where a server keeps what must outlive it (call records, registrations).

The default follows the platform's conventions, so a fresh machine needs no set-up, root or not:
root gets /var/lib/callflow (the FHS place for a service's state, as Asterisk's /var/lib/asterisk);
anyone else $XDG_STATE_HOME/callflow, or ~/.local/state/callflow when that is unset (the XDG Base
Directory specification). `--state-dir DIR` or CALLFLOW_STATE_DIR chooses another. The folder must
lie outside the script's folder, which the reloader watches: a database written there on every call
would be a change in the watched folder on every call.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "CALLFLOW_STATE_DIR"
CDR_FILE = "cdr.sqlite"
LOCATION_FILE = "registrations.sqlite"


class StateDirError(Exception):
    """The state folder cannot be used: the message names the folder, why, and what to pass instead."""


def default_state_dir(env: dict[str, str] | None = None, euid: int | None = None) -> Path:
    """The state folder a server uses when none is given.

    `env` and `euid` default to the process's own (tests pass theirs). Returns an absolute path that
    may not exist yet; `prepare_state_dir` creates it.
    """
    env = dict(os.environ) if env is None else env
    if env.get(ENV_VAR):
        return Path(env[ENV_VAR]).expanduser().absolute()
    if euid is None:
        euid = os.geteuid() if hasattr(os, "geteuid") else -1
    if euid == 0:
        return Path("/var/lib/callflow")
    xdg = env.get("XDG_STATE_HOME")
    if xdg and Path(xdg).is_absolute():  # the spec says a relative value is to be ignored
        return Path(xdg) / "callflow"
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".local" / "state" / "callflow"


def prepare_state_dir(path: str | os.PathLike[str], script: str | os.PathLike[str] | None = None) -> Path:
    """Create the state folder (mode 0700: call records name people and numbers) and check it is
    writable and not inside the script's folder.

    Returns the absolute folder. Raises StateDirError with a message a user can act on.
    """
    folder = Path(path).expanduser().absolute()
    if script is not None:
        watched = Path(script).expanduser().absolute()
        watched = watched if watched.is_dir() else watched.parent
        if folder == watched or watched in folder.parents:
            raise StateDirError(
                f"the state folder {folder} is inside the script's folder {watched}, which is watched for "
                f"changes; pass --state-dir with a folder elsewhere (e.g. {default_state_dir()})")
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateDirError(f"cannot create the state folder {folder}: {exc.strerror or exc}; "
                            "pass --state-dir with a folder you can write to") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StateDirError(f"cannot write to the state folder {folder}; pass --state-dir with a folder you "
                            "can write to")
    return folder
