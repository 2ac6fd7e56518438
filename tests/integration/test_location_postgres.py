"""Phone bindings in a real PostgreSQL (`--location-dsn`), shared by Callflow nodes.

The store's specifications run against a PostgreSQL server from Debian's packages started by the test
(tests/rig/postgres.py), each test in a database of its own; the last test runs two real `callflow run`
nodes on one DSN with a baresip phone: it registers to the first, and the second rings it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.registrar import Binding
from runtime.registrar.postgres import MIGRATIONS, PostgresLocationStore, migrate
from runtime.registrar.sqlite import LocationDbError
from tests.integration.callflow_server import CallflowServer
from tests.integration.conftest import require_peer
from tests.rig import CALL_CLOSED, CALL_ESTABLISHED, CALL_INCOMING, PhoneFactory, account_line, ports
from tests.rig.postgres import Postgres, postgres_problem

WALL = 1_800_000_000.0  # the fake wall clock's "now"


class Clock:
    """The engine's monotonic clock, moved by hand."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    require_peer("PostgreSQL", postgres_problem())
    server = Postgres(ports.port())
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def dsn(postgres: Postgres, request: pytest.FixtureRequest) -> str:
    """A fresh database for this test, on the module's server."""
    import psycopg

    name = "t_" + request.node.name.lower().replace("[", "_").replace("]", "").replace("-", "_")[:50]
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return postgres.dsn.rsplit("/", 1)[0] + "/" + name


def node(dsn: str, clock: Clock | None = None, name: str = "node-a") -> PostgresLocationStore:
    return PostgresLocationStore(dsn, clock=clock or Clock(), wall_clock=lambda: WALL, node=name)


def binding(user: str = "alice", contact: str = "sip:alice@192.0.2.7:5062", expires_in: float = 600,
            transport: str = "udp", clock: Clock | None = None) -> Binding:
    now = (clock or Clock()).now
    return Binding(user, contact, ("192.0.2.7", 5062), transport, now + expires_in, "call-1", 3, "baresip")


def schema_version(dsn: str) -> int | None:
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT version FROM callflow_schema WHERE component = 'location'").fetchone()
    return row[0] if row else None


# ---- the schema -----------------------------------------------------------------------------------------
def test_the_first_node_creates_the_schema_at_its_latest_version(dsn: str) -> None:
    store = node(dsn)
    assert store.version == max(MIGRATIONS) == schema_version(dsn)
    store.close()


def test_an_older_schema_is_upgraded_and_its_bindings_kept(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn) as conn:
        migrate(conn, {1: MIGRATIONS[1]})  # what the first release made
        conn.execute("INSERT INTO location_binding VALUES ('alice', 'sip:alice@192.0.2.7:5062', '192.0.2.7', "
                     "5062, 'udp', %s, 'call-1', 3, 'baresip')", (WALL + 600,))
    assert schema_version(dsn) == 1
    store = node(dsn)
    assert schema_version(dsn) == max(MIGRATIONS)
    assert [b.contact for b in store.bindings("alice")] == ["sip:alice@192.0.2.7:5062"]
    store.close()


def test_a_schema_newer_than_this_callflow_is_refused_saying_so(dsn: str) -> None:
    node(dsn).close()
    import psycopg

    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE callflow_schema SET version = 99 WHERE component = 'location'")
    with pytest.raises(LocationDbError, match="version 99, newer than this Callflow"):
        node(dsn)


def test_an_unreachable_database_is_an_error_naming_it_without_the_password(postgres: Postgres) -> None:
    with pytest.raises(LocationDbError, match=r"postgresql://callflow:\*\*\*@127\.0\.0\.1:1/"):
        node("postgresql://callflow:secret@127.0.0.1:1/postgres")


# ---- shared by the nodes ------------------------------------------------------------------------------
def test_a_binding_written_by_one_node_is_seen_by_another(dsn: str) -> None:
    a, b = node(dsn, name="a"), node(dsn, name="b")
    a.put(binding())
    seen = b.bindings("alice")
    assert [(x.contact, x.source, x.transport, x.cseq) for x in seen] == \
        [("sip:alice@192.0.2.7:5062", ("192.0.2.7", 5062), "udp", 3)]
    assert seen[0].expires_at == pytest.approx(Clock().now + 600)
    assert b.users() == ["alice"]
    a.remove("alice", "sip:alice@192.0.2.7:5062")
    assert b.bindings("alice") == []
    a.close()
    b.close()


def test_a_bindings_path_written_by_one_node_is_read_by_another(dsn: str) -> None:
    a, b = node(dsn, name="a"), node(dsn, name="b")
    path = ("<sip:192.0.2.1:5060;lr;received=sip:198.51.100.7:40123>", "<sip:192.0.2.2;lr>")
    a.put(Binding("alice", "sip:alice@10.0.0.7", ("192.0.2.1", 5060), "udp", Clock().now + 600, "c1", 1, None, path))
    (seen,) = b.bindings("alice")
    assert seen.path == path and seen.next_hop() == (("192.0.2.1", 5060), "udp")
    a.close()
    b.close()


def test_a_schema_from_before_path_is_upgraded_and_its_bindings_kept_without_one(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn, {v: MIGRATIONS[v] for v in (1, 2)})  # the release before Path
        conn.execute("INSERT INTO location_binding (user_name, contact, source_host, source_port, transport, "
                     "expires, call_id, cseq) VALUES ('alice', 'sip:alice@192.0.2.7', '192.0.2.7', 5060, 'udp', "
                     "%s, 'c1', 1)", (WALL + 600,))
    store = node(dsn)
    assert schema_version(dsn) == max(MIGRATIONS)
    assert [x.path for x in store.bindings("alice")] == [()]
    store.close()


def test_a_reregistration_through_another_node_replaces_the_binding(dsn: str) -> None:
    a, b = node(dsn, name="a"), node(dsn, name="b")
    a.put(binding(expires_in=60))
    b.put(binding(expires_in=3600))
    assert [x.expires_at for x in a.bindings("alice")] == [pytest.approx(Clock().now + 3600)]
    a.close()
    b.close()


def test_a_starting_node_restores_valid_datagram_bindings_and_deletes_expired_and_unknown_ones(dsn: str) -> None:
    a = node(dsn)
    a.put(binding())
    a.put(binding(contact="sip:alice@192.0.2.7:5099", expires_in=-5))     # expired
    a.put(binding(user="mallory", contact="sip:m@192.0.2.9"))             # no longer in the script
    a.put(binding(contact="sip:alice@192.0.2.7:5070;transport=tcp", transport="tcp"))
    a.close()
    b = node(dsn, name="b")
    assert b.restore({"alice"}) == (1, 3)
    import psycopg

    with psycopg.connect(dsn) as conn:
        left = sorted(r[0] for r in conn.execute("SELECT contact FROM location_binding").fetchall())
    # the TCP binding stays: another node may hold its connection
    assert left == ["sip:alice@192.0.2.7:5062", "sip:alice@192.0.2.7:5070;transport=tcp"]
    b.close()


def test_while_the_database_is_away_lookups_use_the_nodes_memory_and_it_is_logged_once(
        dsn: str, postgres: Postgres, caplog: pytest.LogCaptureFixture) -> None:
    import psycopg

    clock = Clock()
    store = node(dsn, clock)
    store.put(binding(clock=clock))
    with psycopg.connect(postgres.dsn, autocommit=True) as admin:  # the database goes away
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                      (dsn.rsplit("/", 1)[1],))
    caplog.set_level(logging.WARNING, logger="callflow.registrar")
    assert [b.contact for b in store.bindings("alice")] == ["sip:alice@192.0.2.7:5062"]
    assert [b.contact for b in store.bindings("alice")] == ["sip:alice@192.0.2.7:5062"]
    errors = [r.getMessage() for r in caplog.records if "location_db_error" in r.getMessage()]
    assert len(errors) == 1
    clock.now += 10  # past RETRY_AFTER: the next lookup reconnects
    assert [b.contact for b in store.bindings("alice")] == ["sip:alice@192.0.2.7:5062"]
    assert any("location_db_recovered" in r.getMessage() for r in caplog.records)
    store.close()


# ---- two real nodes ---------------------------------------------------------------------------------
FLOW = """user alice password "alice-pw"
user bob password "bob-pw"
on incoming to "alice" accept to user alice
"""


def test_a_phone_registered_to_one_node_is_rung_by_another(dsn: str, phone_factory: PhoneFactory,
                                                           tmp_path: Path) -> None:
    first = CallflowServer(FLOW, tmp_path / "node-a", ports.sip_port(), ports.rtp_range(20),
                           extra_args=["--location-dsn", dsn])
    second = CallflowServer(FLOW, tmp_path / "node-b", ports.sip_port(), ports.rtp_range(20),
                            extra_args=["--location-dsn", dsn])
    try:
        first.start()
        alice = phone_factory(account_line("alice", first.hostport, auth_pass="alice-pw"), name="alice")
        alice.wait_registered()
        second.start()
        restored = second.wait_event("bindings_restored")
        assert restored["restored"] == "1" and "postgresql://" in restored["file"]
        bob = phone_factory(account_line("bob", second.hostport, auth_pass="bob-pw"), name="bob")
        bob.wait_registered()
        bob.dial(f"sip:alice@{second.hostport}")
        alice.wait_event(CALL_INCOMING, 10)
        alice.accept()
        bob.wait_event(CALL_ESTABLISHED, 10)
        bob.hangup()
        alice.wait_event(CALL_CLOSED, 10)
        assert second.events("connected")
        first.assert_alive()
        second.assert_alive()
    finally:
        second.stop()
        first.stop()
