"""A PostgreSQL call-record store made before recordings existed gains the `recordings` column when
Callflow opens it, keeping its rows (a real PostgreSQL server, tests/rig/postgres.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runtime.records import CallRecord, open_store
from runtime.records.cdr import COLUMNS
from tests.integration.conftest import require_peer
from tests.rig import ports
from tests.rig.postgres import Postgres, postgres_problem

psycopg = pytest.importorskip("psycopg")


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    require_peer("PostgreSQL", postgres_problem())
    server = Postgres(ports.port())
    try:
        server.start()
        yield server
    finally:
        server.stop()


def test_an_old_postgresql_store_gains_the_recordings_column_and_keeps_its_rows(postgres: Postgres) -> None:
    old_columns = ", ".join(f"{c} TEXT" if c not in ("duration",) else f"{c} DOUBLE PRECISION"
                            for c in COLUMNS if c != "recordings")
    with psycopg.connect(postgres.dsn) as conn:
        conn.execute("DROP TABLE IF EXISTS call_record")
        conn.execute(f"CREATE TABLE call_record (id BIGSERIAL PRIMARY KEY, {old_columns})")
        conn.execute("INSERT INTO call_record (call_id, duration, outcome) VALUES ('old', 0, 'failed')")
    store = open_store(postgres.dsn)
    try:
        store.write([CallRecord(call_id="new", outcome="answered", recordings="/rec/vm/new.wav")])
        rows = {row["call_id"]: row for row in store.query()}
    finally:
        store.close()
    assert rows["new"]["recordings"] == "/rec/vm/new.wav"
    assert rows["old"]["recordings"] is None
    open_store(postgres.dsn).close()  # opening again changes nothing
