"""Line leases in PostgreSQL (the same database as ``--location-dsn``): one row per line, its holder.

The table is Callflow's own component ``line_lease`` in ``callflow_schema`` (created and upgraded like
the bindings' by ``runtime.registrar.postgres.migrate``, under the same advisory lock, so two nodes
starting together do not race). Expiry times come from the database's clock (``now()``), so the nodes'
clocks need not agree for leases; the answers carry them as Unix seconds for events and status.

Every method is blocking (psycopg 3, one connection, ``statement_timeout``) and returns a
``StoreAnswer``; a database error is an answer with ``error`` set, never an exception, so the lease
machine decides what it means. Called from one worker thread at a time (runtime/lines/lease_pump.py).
"""

from __future__ import annotations

import logging
from typing import Any

from ..records.store import _redact
from ..registrar.postgres import migrate
from ..registrar.sqlite import LocationDbError
from .lease import StoreAnswer

__all__ = ["PostgresLeaseStore", "LEASE_MIGRATIONS", "LEASE_COMPONENT"]

log = logging.getLogger("callflow.lines")

LEASE_COMPONENT = "line_lease"
STATEMENT_TIMEOUT_MS = 1000

# version -> the statements that bring the schema from version-1 to it; append, never edit
LEASE_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE line_lease (
            line        TEXT PRIMARY KEY,
            node        TEXT NOT NULL,
            expires_at  TIMESTAMPTZ NOT NULL,
            acquired_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )""",
    ),
}

_EPOCH = "extract(epoch FROM expires_at)::double precision"

# take the row when it is free, expired or already ours; RETURNING nothing means another node holds it
ACQUIRE = (
    "INSERT INTO line_lease AS l (line, node, expires_at, acquired_at) "
    "VALUES (%(line)s, %(node)s, now() + make_interval(secs => %(period)s), now()) "
    "ON CONFLICT (line) DO UPDATE SET node = EXCLUDED.node, expires_at = EXCLUDED.expires_at, "
    "acquired_at = CASE WHEN l.node = EXCLUDED.node THEN l.acquired_at ELSE now() END "
    f"WHERE l.node = EXCLUDED.node OR l.expires_at <= now() RETURNING node, {_EPOCH}")
RENEW = (f"UPDATE line_lease SET expires_at = now() + make_interval(secs => %(period)s) "
         f"WHERE line = %(line)s AND node = %(node)s RETURNING node, {_EPOCH}")
# the row's holder, expiry, and the seconds it has left on the database's clock (when to ask again)
HOLDER = (f"SELECT node, {_EPOCH}, extract(epoch FROM expires_at - now())::double precision "
          "FROM line_lease WHERE line = %(line)s")
RELEASE = "DELETE FROM line_lease WHERE line = %(line)s AND node = %(node)s"
HOLDERS = f"SELECT line, node, {_EPOCH}, expires_at > now() FROM line_lease ORDER BY line"


class PostgresLeaseStore:
    """The ``line_lease`` table through psycopg 3 for node ``node``.

    Raises LocationDbError at construction when the database cannot be reached or migrated."""

    def __init__(self, dsn: str, node: str, statement_timeout_ms: int = STATEMENT_TIMEOUT_MS) -> None:
        try:
            import psycopg
        except ImportError:
            raise LocationDbError("line leases in PostgreSQL need psycopg 3: pip install 'psycopg[binary]'") from None
        self._psycopg = psycopg
        self.dsn = dsn
        self.name = _redact(dsn)
        self.node = node
        self._timeout_ms = statement_timeout_ms
        self._conn: Any = None
        try:
            self.version = migrate(self._connect(), LEASE_MIGRATIONS, LEASE_COMPONENT)
        except psycopg.Error as exc:
            self.close()
            raise LocationDbError(f"cannot open the line leases in {self.name}: {_why(exc)}") from None

    def _connect(self) -> Any:
        if self._conn is None or self._conn.closed:
            # 5 s: a busy database host may take a few seconds to accept; reconnects run on the pump's
            # worker thread, so only the start waits that long
            self._conn = self._psycopg.connect(self.dsn, connect_timeout=5, autocommit=True,
                                               options=f"-c statement_timeout={int(self._timeout_ms)}")
        return self._conn

    def _rows(self, sql: str, params: dict[str, object]) -> list[tuple[Any, ...]]:
        cursor = self._connect().execute(sql, params)
        return cursor.fetchall() if cursor.description else []

    def _answer(self, sql: str, line: str, period: float) -> StoreAnswer:
        params = {"line": line, "node": self.node, "period": float(period)}
        try:
            rows = self._rows(sql, params)
            if rows:
                return StoreAnswer(True, rows[0][0], float(rows[0][1]))
            held = self._rows(HOLDER, params)
        except self._psycopg.Error as exc:
            self.close()
            return StoreAnswer(False, error=_why(exc))
        if held:
            return StoreAnswer(False, held[0][0], float(held[0][1]), remaining=max(0.0, float(held[0][2])))
        return StoreAnswer(False)

    def acquire(self, line: str, period: float) -> StoreAnswer:
        """Take `line` for `period` seconds if free, expired or ours; else who holds it."""
        return self._answer(ACQUIRE, line, period)

    def renew(self, line: str, period: float) -> StoreAnswer:
        """Extend our row by `period` seconds from now; not ok when it is no longer ours."""
        return self._answer(RENEW, line, period)

    def release(self, line: str) -> StoreAnswer:
        """Delete our row (another node's is left alone)."""
        try:
            self._rows(RELEASE, {"line": line, "node": self.node})
        except self._psycopg.Error as exc:
            self.close()
            return StoreAnswer(False, error=_why(exc))
        return StoreAnswer(True)

    def holders(self) -> list[tuple[str, str, float, bool]]:
        """Every row: (line, node, expires as Unix seconds, still valid); [] when the database is away."""
        try:
            return [(r[0], r[1], float(r[2]), bool(r[3])) for r in self._rows(HOLDERS, {})]
        except self._psycopg.Error:
            self.close()
            return []

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except self._psycopg.Error:
                pass
        self._conn = None


def _why(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__
