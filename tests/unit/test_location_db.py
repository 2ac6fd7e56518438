"""Registrations written to SQLite come back after a restart, on the new process's clock."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from runtime.registrar import Binding, Registrar
from runtime.registrar.sqlite import LocationDbError, SqliteLocationStore
from runtime.sip.message import parse_message

WALL = 1_800_000_000.0


class Clocks:
    """A monotonic engine clock and a wall clock that a test moves together."""

    def __init__(self, mono: float) -> None:
        self.mono = mono
        self.wall = WALL

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


def store(path: Path, clocks: Clocks) -> SqliteLocationStore:
    return SqliteLocationStore(path, clock=lambda: clocks.mono, wall_clock=lambda: clocks.wall)


def binding(user: str = "alice", contact: str = "sip:alice@192.0.2.10:5060", *, expires_at: float,
            transport: str = "udp") -> Binding:
    return Binding(user, contact, ("192.0.2.10", 5060), transport, expires_at, "cid-1", 7, "baresip")


def register(user: str, contact: str, expires: int = 600, cseq: int = 1) -> object:
    return parse_message((
        f"REGISTER sip:callflow SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1\r\n"
        f"From: <sip:{user}@callflow>;tag=a\r\nTo: <sip:{user}@callflow>\r\nCall-ID: r1\r\nCSeq: {cseq} REGISTER\r\n"
        f"Contact: <{contact}>;expires={expires}\r\nContent-Length: 0\r\n\r\n").encode())


def test_a_binding_survives_a_restart_with_its_remaining_lifetime(tmp_path: Path) -> None:
    first = Clocks(mono=100.0)
    old = store(tmp_path / "loc.db", first)
    old.put(binding(expires_at=100.0 + 600))
    old.close()

    second = Clocks(mono=5.0)  # a new process: its monotonic clock starts again
    second.wall = WALL + 60    # a minute later
    new = store(tmp_path / "loc.db", second)
    assert new.restore() == (1, 0)
    [b] = new.bindings("alice")
    assert b.contact == "sip:alice@192.0.2.10:5060"
    assert b.source == ("192.0.2.10", 5060)
    assert b.expires_at == pytest.approx(5.0 + 540)
    assert (b.call_id, b.cseq, b.user_agent) == ("cid-1", 7, "baresip")


def test_an_expired_binding_is_not_restored_and_is_deleted(tmp_path: Path) -> None:
    clocks = Clocks(mono=0.0)
    old = store(tmp_path / "loc.db", clocks)
    old.put(binding(expires_at=60))
    old.close()
    clocks.advance(61)
    assert store(tmp_path / "loc.db", clocks).restore() == (0, 1)
    assert store(tmp_path / "loc.db", clocks).restore() == (0, 0)


def test_a_binding_over_a_connection_is_not_restored(tmp_path: Path) -> None:
    clocks = Clocks(mono=0.0)
    old = store(tmp_path / "loc.db", clocks)
    old.put(binding(expires_at=600, transport="tcp"))
    old.put(binding("bob", "sip:bob@192.0.2.11:5060", expires_at=600))
    old.close()
    new = store(tmp_path / "loc.db", clocks)
    assert new.restore() == (1, 1)
    assert new.users() == ["bob"]


def test_bindings_of_users_gone_from_the_script_are_dropped(tmp_path: Path) -> None:
    clocks = Clocks(mono=0.0)
    old = store(tmp_path / "loc.db", clocks)
    old.put(binding("alice", expires_at=600))
    old.put(binding("carol", "sip:carol@192.0.2.12:5060", expires_at=600))
    old.close()
    new = store(tmp_path / "loc.db", clocks)
    assert new.restore(known_users={"alice"}) == (1, 1)
    assert new.users() == ["alice"]


def test_an_unregistered_contact_stays_gone_after_a_restart(tmp_path: Path) -> None:
    clocks = Clocks(mono=0.0)
    registrar = Registrar(store(tmp_path / "loc.db", clocks))
    registrar.register("alice", register("alice", "sip:alice@192.0.2.10:5060"), ("192.0.2.10", 5060), "udp", 0.0)
    registrar.register("alice", register("alice", "sip:alice@192.0.2.10:5060", expires=0, cseq=2),
                       ("192.0.2.10", 5060), "udp", 0.0)
    new = store(tmp_path / "loc.db", clocks)
    assert new.restore() == (0, 0)


def test_a_registration_through_the_registrar_is_found_after_a_restart(tmp_path: Path) -> None:
    clocks = Clocks(mono=50.0)
    registrar = Registrar(store(tmp_path / "loc.db", clocks))
    resp, added, _ = registrar.register("alice", register("alice", "sip:alice@192.0.2.10:5060"),
                                        ("192.0.2.10", 5060), "udp", 50.0)
    assert resp.status == 200 and added == ["sip:alice@192.0.2.10:5060"]

    restarted = Clocks(mono=1.0)
    restarted.wall = clocks.wall + 10
    fresh = store(tmp_path / "loc.db", restarted)
    fresh.restore()
    [b] = Registrar(fresh).lookup("alice", now=1.0)
    assert b.expires_at == pytest.approx(1.0 + 590)


def test_an_unopenable_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LocationDbError, match=r"cannot open the location database .*missing/loc\.db"):
        store(tmp_path / "missing" / "loc.db", Clocks(0.0))


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "loc.db"
    path.write_bytes(b"this is not sqlite, just text " * 100)
    with pytest.raises(LocationDbError, match="location database"):
        store(path, Clocks(0.0)).restore()


def test_a_failing_write_keeps_the_binding_in_memory_and_logs_once(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    s = store(tmp_path / "loc.db", Clocks(0.0))
    s._db.close()  # the file is gone from under us
    with caplog.at_level(logging.ERROR, logger="callflow.registrar"):
        s.put(binding(expires_at=600))
        s.put(binding("bob", "sip:bob@192.0.2.11:5060", expires_at=600))
    assert [b.user for b in s.bindings("alice") + s.bindings("bob")] == ["alice", "bob"]
    assert sum("event=location_db_error" in r.getMessage() for r in caplog.records) == 1


def test_the_file_is_an_ordinary_sqlite_database(tmp_path: Path) -> None:
    s = store(tmp_path / "loc.db", Clocks(0.0))
    s.put(binding(expires_at=600))
    rows = sqlite3.connect(tmp_path / "loc.db").execute("SELECT user, contact, transport FROM binding").fetchall()
    assert rows == [("alice", "sip:alice@192.0.2.10:5060", "udp")]
