"""Registrations that survive a restart: the location service written through to SQLite.

Lookups stay in memory (the registrar asks on every call); every change is also written to a SQLite
file in WAL mode, so a crash or a restart keeps each phone's binding until it expires, as
Kamailio's usrloc does with a database. Expiry times are stored as wall-clock seconds, because the
engine's clock is monotonic and starts again with the process.

Only datagram bindings are restored: a binding reached over TCP, TLS or WebSocket is tied to a
connection the phone opened (RFC 5626), which died with the old process; the phone re-registers on
a new connection when it notices.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from .service import Binding, MemoryLocationStore

log = logging.getLogger("callflow.registrar")

RESTORABLE_TRANSPORTS = frozenset({"udp"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS binding (
    user        TEXT NOT NULL,
    contact     TEXT NOT NULL,
    source_host TEXT NOT NULL,
    source_port INTEGER NOT NULL,
    transport   TEXT NOT NULL,
    expires     REAL NOT NULL,      -- wall clock, seconds since the epoch
    call_id     TEXT NOT NULL,
    cseq        INTEGER NOT NULL,
    user_agent  TEXT,
    PRIMARY KEY (user, contact)
)
"""
# the Path (RFC 3327) of each binding, its entries joined by "\n" ('' without one); added after the
# first release, so a file written before gets the column at open (ALTER TABLE, existing rows empty)
_PATH_COLUMN = "path"
_ADD_PATH = "ALTER TABLE binding ADD COLUMN path TEXT NOT NULL DEFAULT ''"


def encode_path(path: tuple[str, ...]) -> str:
    """A binding's Path entries as one column value: joined by newlines (a header value holds none)."""
    return "\n".join(path)


def decode_path(text: str | None) -> tuple[str, ...]:
    return tuple(v for v in (text or "").split("\n") if v)


class LocationDbError(Exception):
    """The database cannot be opened or read: the message says which file and why."""


class SqliteLocationStore(MemoryLocationStore):
    """A `LocationStore` whose changes are also kept in a SQLite file.

    `clock` is the engine's clock (the one `Binding.expires_at` is on). A write that fails (disk
    full, file removed) is logged once and the store goes on in memory: registrations keep working,
    only their persistence is lost until the next successful write.
    """

    def __init__(self, path: str | Path, clock: Callable[[], float],
                 wall_clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.path = str(path)
        self._clock = clock
        self._wall = wall_clock
        self._failing = False
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit is durable across a process crash without an fsync each
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(binding)")}
            if _PATH_COLUMN not in columns:
                self._db.execute(_ADD_PATH)
        except sqlite3.Error as exc:
            raise LocationDbError(f"cannot open the location database {self.path}: {exc}") from None

    # ---- start-up ----------------------------------------------------------------------------------
    def restore(self, known_users: set[str] | None = None) -> tuple[int, int]:
        """Load the bindings still valid; returns (restored, dropped). Expired ones, connection-bound
        ones and those of users no longer in the script (`known_users`) are deleted."""
        try:
            rows = self._db.execute(
                "SELECT user, contact, source_host, source_port, transport, expires, call_id, cseq, "
                "user_agent, path FROM binding").fetchall()
        except sqlite3.Error as exc:
            raise LocationDbError(f"cannot read the location database {self.path}: {exc}") from None
        wall_now = self._wall()
        offset = self._clock() - wall_now
        restored = dropped = 0
        stale: list[tuple[str, str]] = []
        for user, contact, host, port, transport, expires, call_id, cseq, user_agent, path in rows:
            if (expires <= wall_now or transport not in RESTORABLE_TRANSPORTS
                    or (known_users is not None and user not in known_users)):
                stale.append((user, contact))
                dropped += 1
                continue
            super().put(Binding(user, contact, (host, int(port)), transport, expires + offset, call_id,
                                int(cseq), user_agent, decode_path(path)))
            restored += 1
        if stale:
            self._write("DELETE FROM binding WHERE user = ? AND contact = ?", stale, many=True)
        return restored, dropped

    # ---- LocationStore, written through -----------------------------------------------------------
    def put(self, binding: Binding) -> None:
        super().put(binding)
        expires = binding.expires_at - self._clock() + self._wall()
        self._write(
            "INSERT OR REPLACE INTO binding (user, contact, source_host, source_port, transport, expires, "
            "call_id, cseq, user_agent, path) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (binding.user, binding.contact, binding.source[0], binding.source[1], binding.transport, expires,
             binding.call_id, binding.cseq, binding.user_agent, encode_path(binding.path)))

    def remove(self, user: str, contact: str) -> None:
        super().remove(user, contact)
        self._write("DELETE FROM binding WHERE user = ? AND contact = ?", (user, contact))

    def remove_user(self, user: str) -> None:
        super().remove_user(user)
        self._write("DELETE FROM binding WHERE user = ?", (user,))

    def close(self) -> None:
        try:
            self._db.close()
        except sqlite3.Error:
            pass

    def _write(self, sql: str, params: tuple | list, *, many: bool = False) -> None:  # type: ignore[type-arg]
        try:
            if many:
                self._db.executemany(sql, params)
            else:
                self._db.execute(sql, params)
        except sqlite3.Error as exc:
            if not self._failing:
                self._failing = True
                log.error("event=location_db_error file=%s error=%r action=\"registrations kept in memory "
                          "only until a write succeeds\"", self.path, str(exc))
            return
        if self._failing:
            self._failing = False
            log.warning("event=location_db_recovered file=%s", self.path)
