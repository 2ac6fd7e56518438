"""The line leases' table in a real PostgreSQL (runtime/lines/lease_pg.py): two nodes asking for one line
at once get it once; a holder renews it, nobody else can; an expired lease goes to the next asker; a
release frees it at once; the schema is Callflow's own component beside the bindings'."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from runtime.lines.lease_pg import LEASE_COMPONENT, LEASE_MIGRATIONS, PostgresLeaseStore
from runtime.registrar.postgres import PostgresLocationStore
from tests.integration.conftest import require_peer
from tests.rig import ports
from tests.rig.postgres import Postgres, postgres_problem


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
def stores(postgres: Postgres) -> Iterator[tuple[PostgresLeaseStore, PostgresLeaseStore]]:
    a, b = PostgresLeaseStore(postgres.dsn, "node-a"), PostgresLeaseStore(postgres.dsn, "node-b")
    a._connect().execute("DELETE FROM line_lease")
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_two_nodes_asking_for_one_line_at_once_get_it_once(stores: tuple[PostgresLeaseStore, ...]) -> None:
    a, b = stores
    answers: dict[str, object] = {}
    start = threading.Barrier(2)

    def ask(store: PostgresLeaseStore) -> None:
        start.wait(5)
        answers[store.node] = store.acquire("itsp1", 30)

    threads = [threading.Thread(target=ask, args=(s,)) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    granted = [node for node, answer in answers.items() if answer.ok]  # type: ignore[attr-defined]
    assert len(granted) == 1, answers
    loser = answers["node-b" if granted == ["node-a"] else "node-a"]
    assert loser.holder == granted[0]  # type: ignore[attr-defined]


def test_the_holder_renews_and_nobody_else_can(stores: tuple[PostgresLeaseStore, ...]) -> None:
    a, b = stores
    first = a.acquire("itsp1", 30)
    renewed = a.renew("itsp1", 60)
    assert renewed.ok and renewed.expires is not None and first.expires is not None
    assert renewed.expires > first.expires
    assert not b.renew("itsp1", 30).ok and b.renew("itsp1", 30).holder == "node-a"
    assert not b.acquire("itsp1", 30).ok


def test_an_expired_lease_goes_to_the_next_node_that_asks(stores: tuple[PostgresLeaseStore, ...]) -> None:
    a, b = stores
    assert a.acquire("itsp1", 0.2).ok
    for _ in range(50):  # bounded: 5 s at most for a 0.2 s lease to run out on the database's clock
        taken = b.acquire("itsp1", 30)
        if taken.ok:
            break
        time.sleep(0.1)
    assert taken.ok and taken.holder == "node-b"
    assert not a.renew("itsp1", 30).ok  # the old holder's renewal finds it gone


def test_a_release_frees_the_line_at_once_and_leaves_another_nodes_lease_alone(
        stores: tuple[PostgresLeaseStore, ...]) -> None:
    a, b = stores
    assert a.acquire("itsp1", 30).ok
    b.release("itsp1")  # not b's: nothing happens
    assert not b.acquire("itsp1", 30).ok
    a.release("itsp1")
    assert b.acquire("itsp1", 30).ok
    assert [(line, node) for line, node, _, valid in a.holders() if valid] == [("itsp1", "node-b")]


def test_the_leases_are_a_schema_component_of_their_own_beside_the_bindings(postgres: Postgres) -> None:
    location = PostgresLocationStore(postgres.dsn, clock=time.monotonic)
    leases = PostgresLeaseStore(postgres.dsn, "node-a")
    try:
        rows = dict(leases._connect().execute("SELECT component, version FROM callflow_schema").fetchall())
        assert rows[LEASE_COMPONENT] == max(LEASE_MIGRATIONS)
        assert "location" in rows
    finally:
        location.close()
        leases.close()


def test_a_database_away_is_an_answer_with_the_reason_not_an_exception(postgres: Postgres) -> None:
    store = PostgresLeaseStore(postgres.dsn, "node-a")
    store.dsn = f"postgresql://callflow@127.0.0.1:{ports.port()}/postgres"  # nothing listens there
    store.close()
    answer = store.acquire("itsp1", 30)
    assert not answer.ok and answer.error
