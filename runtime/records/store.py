"""Where call records are kept: a SQLite file (the default, in the state folder) or PostgreSQL.

Both stores have one table, `call_record`, created by Callflow when missing, with the columns of
`CallRecord` (times as seconds since the epoch, UTC, so a row sorts and filters the same in both) and
an `id` that orders rows as they were written. Both are used from one thread at a time: the writer
thread writes, `callflow cdr` reads from its own process.

    SQLite      WAL mode, synchronous=NORMAL: a batch is one transaction, durable across a crash of
                the process; readers never block the writer.
    PostgreSQL  psycopg 3, `--cdr-dsn postgresql://user@host/db`; one connection, re-opened after
                an error.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from .cdr import COLUMNS, OUTCOMES, CallRecord

_TYPES = {
    "call_id": "TEXT NOT NULL", "from_type": "TEXT", "from_peer": "TEXT", "to_type": "TEXT", "to_peer": "TEXT",
    "caller": "TEXT", "dialled": "TEXT", "created_at": "{real}", "answered_at": "{real}", "ended_at": "{real}",
    "duration": "{real} NOT NULL", "outcome": "TEXT NOT NULL", "code": "INTEGER", "reason": "TEXT",
    "hangup_channel": "TEXT", "hangup_reason": "TEXT", "program_version": "TEXT", "user_agent": "TEXT",
    "source": "TEXT", "rtp_in": "BIGINT", "rtp_out": "BIGINT", "record_id": "TEXT", "node": "TEXT",
    "recordings": "TEXT",
}
# columns added after the first release: a table created before them gets them at open (upgrade)
ADDED_COLUMNS = ("record_id", "node", "recordings")
NODE_LOST = "node_lost"  # hangup_reason of an answered call whose node stopped before its end was written
assert set(_TYPES) == set(COLUMNS), "every CallRecord field has a column"


def _schema(id_column: str, real: str, existing: set[str] | None = None) -> list[str]:
    """The statements creating (or upgrading) the table; `existing` names the columns a table already
    there has (None: ask with IF NOT EXISTS, which PostgreSQL understands and SQLite does not)."""
    columns = ",\n    ".join(f"{name} {_TYPES[name].format(real=real)}" for name in COLUMNS)
    added = [f"ALTER TABLE call_record ADD COLUMN {'IF NOT EXISTS ' if existing is None else ''}{name} "
             f"{_TYPES[name]}" for name in ADDED_COLUMNS if existing is None or (existing and name not in existing)]
    return [
        f"CREATE TABLE IF NOT EXISTS call_record (\n    id {id_column},\n    {columns}\n)",
        *added,
        "CREATE INDEX IF NOT EXISTS call_record_created ON call_record (created_at)",
        "CREATE INDEX IF NOT EXISTS call_record_call ON call_record (call_id)",
        # exactly once: a retried write, or a call's second write (its end), lands on the same row
        "CREATE UNIQUE INDEX IF NOT EXISTS call_record_key ON call_record (record_id)",
    ]


def _upsert(mark: str) -> str:
    """INSERT of one record, or the completion of its row: a row already ended is never changed (a
    retry of a batch that did reach the database), one in progress gets the finished record."""
    updates = ", ".join(f"{name} = excluded.{name}" for name in COLUMNS if name != "record_id")
    return (f"INSERT INTO call_record ({', '.join(COLUMNS)}) VALUES ({', '.join([mark] * len(COLUMNS))}) "
            f"ON CONFLICT (record_id) DO UPDATE SET {updates} WHERE call_record.ended_at IS NULL")


def _orphans(mark: str) -> str:
    return (f"UPDATE call_record SET hangup_reason = '{NODE_LOST}', reason = 'the node stopped during the "
            f"call: its end is unknown' WHERE node = {mark} AND ended_at IS NULL AND "
            f"(hangup_reason IS NULL OR hangup_reason <> '{NODE_LOST}')")


CDR_LOCK_KEY = 0x63666372  # pg_advisory_xact_lock key ("cfcr"): one node creates or upgrades the table at a time


class RecordStoreError(Exception):
    """The store cannot be opened, written or read: the message names it and says why."""


class Filters:
    """What `callflow cdr` and the live page may ask for; None means any.

    number: part of the caller id or the dialled number; peer: a user or line name on either side;
    since/until: seconds since the epoch (created_at); outcome: one of OUTCOMES.
    """

    __slots__ = ("number", "peer", "since", "until", "outcome")

    def __init__(self, number: str | None = None, peer: str | None = None, since: float | None = None,
                 until: float | None = None, outcome: str | None = None) -> None:
        if outcome is not None and outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}: use one of {', '.join(OUTCOMES)}")
        self.number, self.peer, self.since, self.until, self.outcome = number, peer, since, until, outcome

    def matches(self, row: dict[str, object]) -> bool:
        """The same test as `where`, on a record dict with epoch times (the writer's memory)."""
        if self.number is not None and not any(self.number in str(row.get(k) or "") for k in ("caller", "dialled")):
            return False
        if self.peer is not None and self.peer not in (row.get("from_peer"), row.get("to_peer")):
            return False
        created = row.get("created_at")
        if self.since is not None and not (isinstance(created, float | int) and created >= self.since):
            return False
        if self.until is not None and not (isinstance(created, float | int) and created < self.until):
            return False
        return self.outcome is None or row.get("outcome") == self.outcome

    def where(self, mark: str) -> tuple[str, list[object]]:
        """SQL condition and parameters; `mark` is the driver's placeholder (? or %s)."""
        parts: list[str] = []
        params: list[object] = []
        if self.number is not None:
            like = "%" + self.number.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            parts.append(f"(caller LIKE {mark} ESCAPE '\\' OR dialled LIKE {mark} ESCAPE '\\')")
            params += [like, like]
        if self.peer is not None:
            parts.append(f"(from_peer = {mark} OR to_peer = {mark})")
            params += [self.peer, self.peer]
        if self.since is not None:
            parts.append(f"created_at >= {mark}")
            params.append(self.since)
        if self.until is not None:
            parts.append(f"created_at < {mark}")
            params.append(self.until)
        if self.outcome is not None:
            parts.append(f"outcome = {mark}")
            params.append(self.outcome)
        return (" WHERE " + " AND ".join(parts)) if parts else "", params


class RecordStore(Protocol):
    name: str

    def write(self, records: Sequence[CallRecord]) -> None:
        """Insert the records in one transaction. Raises RecordStoreError."""

    def query(self, limit: int = 50, filters: Filters | None = None) -> list[dict[str, object]]:
        """The newest `limit` records matching `filters`, newest first, as dicts (epoch times)."""

    def close(self) -> None: ...


class SqliteRecordStore:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.name = self.path
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")  # a reader (`callflow cdr`) holding a lock
            existing = {row[1] for row in self._db.execute("PRAGMA table_info(call_record)")}
            for statement in _schema("INTEGER PRIMARY KEY AUTOINCREMENT", "REAL", existing):
                self._db.execute(statement)
            self._db.commit()
        except sqlite3.Error as exc:
            raise RecordStoreError(f"cannot open the call records database {self.path}: {exc}") from None

    def write(self, records: Sequence[CallRecord]) -> None:
        """Insert (or complete) the records in one transaction, each at most once. Raises RecordStoreError."""
        try:
            with self._db:
                self._db.executemany(_upsert("?"), [_values(r) for r in records])
        except sqlite3.Error as exc:
            raise RecordStoreError(f"cannot write call records to {self.path}: {exc}") from None

    def mark_orphans(self, node: str) -> int:
        """Rows of `node` answered and never ended (the node died during the call): hangup_reason
        becomes NODE_LOST. Returns how many. Raises RecordStoreError."""
        try:
            with self._db:
                return self._db.execute(_orphans("?"), (node,)).rowcount
        except sqlite3.Error as exc:
            raise RecordStoreError(f"cannot update call records in {self.path}: {exc}") from None

    def query(self, limit: int = 50, filters: Filters | None = None) -> list[dict[str, object]]:
        where, params = (filters or Filters()).where("?")
        sql = f"SELECT {', '.join(COLUMNS)} FROM call_record{where} ORDER BY id DESC LIMIT ?"
        try:
            rows = self._db.execute(sql, [*params, int(limit)]).fetchall()
        except sqlite3.Error as exc:
            raise RecordStoreError(f"cannot read call records from {self.path}: {exc}") from None
        return [dict(zip(COLUMNS, row, strict=True)) for row in rows]

    def close(self) -> None:
        try:
            self._db.close()
        except sqlite3.Error:
            pass


class PostgresRecordStore:
    """PostgreSQL through psycopg 3 (imported only when a DSN asks for it)."""

    def __init__(self, dsn: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise RecordStoreError("--cdr-dsn postgresql://... needs psycopg 3: pip install 'psycopg[binary]'") \
                from None
        self._psycopg = psycopg
        self.dsn = dsn
        self.name = _redact(dsn)
        self._conn = None
        self._connect()

    def _connect(self):  # type: ignore[no-untyped-def]
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            conn = self._psycopg.connect(self.dsn, connect_timeout=5)
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (CDR_LOCK_KEY,))  # nodes starting together
                for statement in _schema("BIGSERIAL PRIMARY KEY", "DOUBLE PRECISION"):
                    conn.execute(statement)
        except self._psycopg.Error as exc:
            raise RecordStoreError(f"cannot open the call records database {self.name}: "
                                   f"{str(exc).strip() or type(exc).__name__}") from None
        self._conn = conn
        return conn

    def write(self, records: Sequence[CallRecord]) -> None:
        """Insert (or complete) the records in one transaction, each at most once. Raises RecordStoreError."""
        conn = self._connect()
        try:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(_upsert("%s"), [_values(r) for r in records])
        except self._psycopg.Error as exc:
            self._drop()
            raise RecordStoreError(f"cannot write call records to {self.name}: {str(exc).strip()}") from None

    def mark_orphans(self, node: str) -> int:
        """As SqliteRecordStore.mark_orphans. Raises RecordStoreError."""
        conn = self._connect()
        try:
            with conn.transaction():
                return conn.execute(_orphans("%s"), (node,)).rowcount
        except self._psycopg.Error as exc:
            self._drop()
            raise RecordStoreError(f"cannot update call records in {self.name}: {str(exc).strip()}") from None

    def query(self, limit: int = 50, filters: Filters | None = None) -> list[dict[str, object]]:
        where, params = (filters or Filters()).where("%s")
        sql = f"SELECT {', '.join(COLUMNS)} FROM call_record{where} ORDER BY id DESC LIMIT %s"
        conn = self._connect()
        try:
            with conn.transaction():
                rows = conn.execute(sql, [*params, int(limit)]).fetchall()
        except self._psycopg.Error as exc:
            self._drop()
            raise RecordStoreError(f"cannot read call records from {self.name}: {str(exc).strip()}") from None
        return [dict(zip(COLUMNS, row, strict=True)) for row in rows]

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except self._psycopg.Error:
                pass
        self._conn = None

    def close(self) -> None:
        self._drop()


def open_store(target: str | Path) -> SqliteRecordStore | PostgresRecordStore:
    """A DSN (postgresql:// or postgres://) opens PostgreSQL; anything else is a SQLite file path.
    Raises RecordStoreError."""
    text = str(target)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresRecordStore(text)
    return SqliteRecordStore(text)


def iso(seconds: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with milliseconds, e.g. 2026-11-30T00:12:03.120Z."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def readable(row: dict[str, object]) -> dict[str, object]:
    """A record dict with its times in ISO 8601 (what the CLI and the live page show)."""
    out = dict(row)
    for key in ("created_at", "answered_at", "ended_at"):
        value = out.get(key)
        out[key] = iso(float(value)) if isinstance(value, int | float) else value
    return out


def _values(record: CallRecord) -> tuple[object, ...]:
    return tuple(getattr(record, name) for name in COLUMNS)


def _redact(dsn: str) -> str:
    """The DSN without its password, for messages and logs."""
    scheme, sep, rest = dsn.partition("://")
    if not sep or "@" not in rest:
        return dsn
    creds, _, host = rest.rpartition("@")
    user = creds.partition(":")[0]
    return f"{scheme}://{user}{':***' if ':' in creds else ''}@{host}"
