"""Phone bindings in PostgreSQL (``--location-dsn postgresql://...``), shared by every Callflow node.

The SQLite store (``runtime.registrar.sqlite``) keeps one process's bindings across its restarts; this one
keeps them where several nodes behind an edge proxy all see them: a phone that registered through node
A can be called from node B. Lookups read the database (it is the truth when other nodes write too),
each a single indexed SELECT bounded by ``statement_timeout``; every change is written through. A
copy of what this node last read or wrote stays in memory, so while the database is down (or slow) the
node serves from that copy and retries the database after ``RETRY_AFTER`` seconds, never on every call.

Expiry times are wall-clock seconds (the engine's clock is monotonic and per process); the nodes' clocks
must agree to within the registrations' margin (NTP), as with Kamailio's usrloc in a database.

The schema is Callflow's own: ``callflow_schema`` holds one version per component (``location`` here;
the other stores may add theirs), and ``MIGRATIONS`` lists the steps from each version to the next.
A node applies the missing steps at start under an advisory lock, so two nodes starting together do not
race; a database newer than this Callflow is refused with a message saying so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..records.store import _redact
from .service import Binding, MemoryLocationStore
from .sqlite import RESTORABLE_TRANSPORTS, LocationDbError, decode_path, encode_path

__all__ = ["PostgresLocationStore", "MIGRATIONS", "COMPONENT", "SCHEMA_TABLE", "migrate", "RETRY_AFTER"]

log = logging.getLogger("callflow.registrar")

COMPONENT = "location"
RETRY_AFTER = 5.0  # seconds the database is left alone after it failed (lookups use the memory copy)
STATEMENT_TIMEOUT_MS = 500  # a lookup never holds a call up longer than this
LOCK_KEY = 0x63666C6F  # pg_advisory_xact_lock key ("cflo"): one node migrates at a time

SCHEMA_TABLE = ("CREATE TABLE IF NOT EXISTS callflow_schema (component TEXT PRIMARY KEY, "
                "version INTEGER NOT NULL, updated_at TIMESTAMPTZ NOT NULL DEFAULT now())")

# version -> the statements that bring the schema from version-1 to it; append, never edit
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE location_binding (
            user_name   TEXT NOT NULL,
            contact     TEXT NOT NULL,
            source_host TEXT NOT NULL,
            source_port INTEGER NOT NULL,
            transport   TEXT NOT NULL,
            expires     DOUBLE PRECISION NOT NULL,   -- wall clock, seconds since the epoch
            call_id     TEXT NOT NULL,
            cseq        BIGINT NOT NULL,
            user_agent  TEXT,
            PRIMARY KEY (user_name, contact)
        )""",
    ),
    2: (
        # which node wrote the binding (its advertised address): for operators reading the table
        "ALTER TABLE location_binding ADD COLUMN node TEXT",
        "CREATE INDEX location_binding_expires ON location_binding (expires)",
    ),
    3: (
        # the binding's Path (RFC 3327), entries joined by newlines: any node reaches the phone through
        # the edge that holds its connection or NAT binding
        "ALTER TABLE location_binding ADD COLUMN path TEXT NOT NULL DEFAULT ''",
    ),
}


def migrate(conn: Any, migrations: dict[int, Sequence[str]] = MIGRATIONS, component: str = COMPONENT) -> int:
    """Bring ``component``'s schema to the last version of ``migrations`` in one transaction (psycopg 3
    connection ``conn``); returns that version. Raises LocationDbError when the database's version is
    newer than ``migrations`` knows (a newer Callflow wrote it)."""
    latest = max(migrations)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        conn.execute(SCHEMA_TABLE)
        row = conn.execute("SELECT version FROM callflow_schema WHERE component = %s", (component,)).fetchone()
        current = row[0] if row else 0
        if current > latest:
            raise LocationDbError(f"the database's {component} schema is version {current}, newer than this "
                                  f"Callflow knows ({latest}): upgrade Callflow on this node")
        for version in range(current + 1, latest + 1):
            for statement in migrations[version]:
                conn.execute(statement)
        if current < latest:
            conn.execute("INSERT INTO callflow_schema (component, version) VALUES (%s, %s) "
                         "ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version, updated_at = now()",
                         (component, latest))
    return latest


_COLUMNS = "user_name, contact, source_host, source_port, transport, expires, call_id, cseq, user_agent, path"


class PostgresLocationStore(MemoryLocationStore):
    """A ``LocationStore`` in PostgreSQL through psycopg 3, with a memory copy for when it is down.

    ``clock`` is the engine's clock (``Binding.expires_at``); ``node`` names this node in the rows it
    writes. Raises LocationDbError when the database cannot be reached or migrated at start.
    """

    def __init__(self, dsn: str, clock: Callable[[], float], wall_clock: Callable[[], float] = time.time,
                 node: str = "", statement_timeout_ms: int = STATEMENT_TIMEOUT_MS) -> None:
        super().__init__()
        try:
            import psycopg
        except ImportError:
            raise LocationDbError("--location-dsn postgresql://... needs psycopg 3: pip install 'psycopg[binary]'") \
                from None
        self._psycopg = psycopg
        self.dsn = dsn
        self.name = _redact(dsn)
        self.node = node
        self._clock = clock
        self._wall = wall_clock
        self._timeout_ms = statement_timeout_ms
        self._conn: Any = None
        self._failing = False
        self._retry_at = 0.0
        try:
            conn = self._connect()
            self.version = migrate(conn)
        except self._psycopg.Error as exc:
            self._drop()
            raise LocationDbError(f"cannot open the location database {self.name}: {_why(exc)}") from None

    # ---- the connection ----------------------------------------------------------------------------
    def _connect(self) -> Any:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._conn = self._psycopg.connect(self.dsn, connect_timeout=2, autocommit=True,
                                           options=f"-c statement_timeout={int(self._timeout_ms)}")
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except self._psycopg.Error:
                pass
        self._conn = None

    def _run(self, sql: str, params: Sequence[object] | Sequence[Sequence[object]] = (), *,
             many: bool = False, fetch: bool = False) -> list[tuple[Any, ...]] | None:
        """One statement; None when the database is failing (logged once, retried after RETRY_AFTER)."""
        if self._failing and self._clock() < self._retry_at:
            return None
        try:
            conn = self._connect()
            if many:
                with conn.cursor() as cur:
                    cur.executemany(sql, params)
                rows: list[tuple[Any, ...]] = []
            else:
                cursor = conn.execute(sql, params)
                rows = cursor.fetchall() if fetch else []
        except self._psycopg.Error as exc:
            self._drop()
            self._retry_at = self._clock() + RETRY_AFTER
            if not self._failing:
                self._failing = True
                log.error("event=location_db_error file=%s error=%r action=\"registrations served from this "
                          "node's memory until the database answers\"", self.name, _why(exc))
            return None
        if self._failing:
            self._failing = False
            log.warning("event=location_db_recovered file=%s", self.name)
        return rows

    def _binding(self, row: tuple[Any, ...], offset: float) -> Binding:
        user, contact, host, port, transport, expires, call_id, cseq, user_agent, path = row
        return Binding(user, contact, (host, int(port)), transport, float(expires) + offset, call_id, int(cseq),
                       user_agent, decode_path(path))

    # ---- start-up ----------------------------------------------------------------------------------
    def restore(self, known_users: set[str] | None = None) -> tuple[int, int]:
        """Load the valid datagram bindings into the memory copy; returns (restored, dropped). Expired
        rows and those of users not in the script are deleted; connection-bound ones (TCP, TLS, WS) are
        left in the table, since another node may hold their connection, but not loaded.
        Raises LocationDbError when the table cannot be read."""
        wall_now = self._wall()
        rows = self._run(f"SELECT {_COLUMNS} FROM location_binding", fetch=True)
        if rows is None:
            raise LocationDbError(f"cannot read the location database {self.name}")
        offset = self._clock() - wall_now
        restored = dropped = 0
        stale: list[tuple[str, str]] = []
        for row in rows:
            user, contact, transport, expires = row[0], row[1], row[4], row[5]
            if expires <= wall_now or (known_users is not None and user not in known_users):
                stale.append((user, contact))
                dropped += 1
            elif transport not in RESTORABLE_TRANSPORTS:
                dropped += 1
            else:
                super().put(self._binding(row, offset))
                restored += 1
        if stale:
            self._run("DELETE FROM location_binding WHERE user_name = %s AND contact = %s", stale, many=True)
        return restored, dropped

    # ---- LocationStore -------------------------------------------------------------------------------
    def bindings(self, user: str) -> list[Binding]:
        """The user's bindings as the database has them (any node's), else this node's memory copy."""
        rows = self._run(f"SELECT {_COLUMNS} FROM location_binding WHERE user_name = %s", (user,), fetch=True)
        if rows is None:
            return super().bindings(user)
        offset = self._clock() - self._wall()
        found = [self._binding(row, offset) for row in rows]
        super().remove_user(user)  # the memory copy follows the database
        for binding in found:
            super().put(binding)
        return found

    def users(self) -> list[str]:
        rows = self._run("SELECT DISTINCT user_name FROM location_binding", fetch=True)
        if rows is None:
            return super().users()
        return [row[0] for row in rows]

    def put(self, binding: Binding) -> None:
        super().put(binding)
        expires = binding.expires_at - self._clock() + self._wall()
        self._run(
            f"INSERT INTO location_binding ({_COLUMNS}, node) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (user_name, contact) DO UPDATE SET source_host = EXCLUDED.source_host, "
            "source_port = EXCLUDED.source_port, transport = EXCLUDED.transport, expires = EXCLUDED.expires, "
            "call_id = EXCLUDED.call_id, cseq = EXCLUDED.cseq, user_agent = EXCLUDED.user_agent, "
            "path = EXCLUDED.path, node = EXCLUDED.node",
            (binding.user, binding.contact, binding.source[0], binding.source[1], binding.transport, expires,
             binding.call_id, binding.cseq, binding.user_agent, encode_path(binding.path), self.node))

    def remove(self, user: str, contact: str) -> None:
        super().remove(user, contact)
        self._run("DELETE FROM location_binding WHERE user_name = %s AND contact = %s", (user, contact))

    def remove_user(self, user: str) -> None:
        super().remove_user(user)
        self._run("DELETE FROM location_binding WHERE user_name = %s", (user,))

    def close(self) -> None:
        self._drop()


def _why(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__
