"""Call records exactly once: a record's row is written at most once however often a write is retried,
an answered call's row written at answer (a cluster's shared records) is completed, not duplicated, at
its end, and a node's rows left in progress by its death are marked when it starts again."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from runtime.events import EventBus
from runtime.records import CallRecord, CallRecorder
from runtime.records.store import NODE_LOST, SqliteRecordStore
from tests.unit.test_call_records import T0, Clock, outbound_call_answered


def answered(call_id: str = "c0ffee01", record_id: str = "r1", node: str = "node0") -> CallRecord:
    return CallRecord(call_id=call_id, from_type="USER", from_peer="alice", created_at=T0, answered_at=T0 + 2,
                      outcome="answered", code=200, reason="in progress", record_id=record_id, node=node)


def finished(record: CallRecord) -> CallRecord:
    return replace(record, ended_at=T0 + 63.5, duration=61.5, reason="hangup", hangup_channel="ONE")


def rows(store: SqliteRecordStore) -> list[dict[str, object]]:
    return store.query(100)


def test_a_batch_written_twice_leaves_one_row_per_call(tmp_path: Path) -> None:
    store = SqliteRecordStore(tmp_path / "cdr.sqlite")
    batch = [finished(answered("c1", "r1")), finished(answered("c2", "r2"))]
    store.write(batch)
    store.write(batch)  # the writer retries a batch whose commit it did not see
    assert sorted(r["call_id"] for r in rows(store)) == ["c1", "c2"]


def test_an_answered_calls_row_written_at_answer_is_completed_at_its_end(tmp_path: Path) -> None:
    store = SqliteRecordStore(tmp_path / "cdr.sqlite")
    store.write([answered()])
    [row] = rows(store)
    assert row["ended_at"] is None and row["reason"] == "in progress"
    store.write([finished(answered())])
    [row] = rows(store)
    assert (row["ended_at"], row["duration"], row["hangup_channel"]) == (T0 + 63.5, 61.5, "ONE")


def test_a_late_in_progress_write_never_reopens_a_finished_row(tmp_path: Path) -> None:
    store = SqliteRecordStore(tmp_path / "cdr.sqlite")
    store.write([finished(answered())])
    store.write([answered()])
    [row] = rows(store)
    assert row["ended_at"] == T0 + 63.5


def test_a_node_starting_again_marks_the_calls_it_was_killed_during_as_node_lost(tmp_path: Path) -> None:
    store = SqliteRecordStore(tmp_path / "cdr.sqlite")
    store.write([answered("c1", "r1", "node0"), finished(answered("c2", "r2", "node0")),
                 answered("c3", "r3", "node1")])
    assert store.mark_orphans("node0") == 1
    by_call = {r["call_id"]: r for r in rows(store)}
    assert by_call["c1"]["hangup_reason"] == NODE_LOST
    assert by_call["c2"]["hangup_reason"] != NODE_LOST  # it ended: its record is whole
    assert by_call["c3"]["hangup_reason"] is None  # another node's call in progress is its own business
    assert store.mark_orphans("node0") == 0


def test_a_table_from_before_record_ids_is_upgraded_in_place(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "cdr.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE call_record (id INTEGER PRIMARY KEY AUTOINCREMENT, call_id TEXT NOT NULL, "
               "from_type TEXT, from_peer TEXT, to_type TEXT, to_peer TEXT, caller TEXT, dialled TEXT, "
               "created_at REAL, answered_at REAL, ended_at REAL, duration REAL NOT NULL, outcome TEXT NOT NULL, "
               "code INTEGER, reason TEXT, hangup_channel TEXT, hangup_reason TEXT, program_version TEXT, "
               "user_agent TEXT, source TEXT, rtp_in BIGINT, rtp_out BIGINT)")
    db.execute("INSERT INTO call_record (call_id, duration, outcome) VALUES ('old', 0, 'failed')")
    db.commit()
    db.close()
    store = SqliteRecordStore(path)
    store.write([finished(answered())])
    assert sorted(r["call_id"] for r in rows(store)) == ["c0ffee01", "old"]


def test_the_recorder_hands_an_answered_call_over_at_answer_and_again_at_its_end_under_one_record_id() -> None:
    bus, clock, out, early = EventBus(), Clock(), [], []
    bus.subscribe(CallRecorder(out.append, clock=clock, node="node0", on_answer=early.append))
    outbound_call_answered(bus, clock)
    [at_answer], [at_end] = early, out
    assert at_answer.ended_at is None and at_answer.outcome == "answered" and at_answer.node == "node0"
    assert at_end.ended_at is not None and at_end.record_id == at_answer.record_id


def test_without_a_shared_store_a_call_is_handed_over_once_at_its_end() -> None:
    bus, clock, out = EventBus(), Clock(), []
    bus.subscribe(CallRecorder(out.append, clock=clock))
    outbound_call_answered(bus, clock)
    assert len(out) == 1 and out[0].record_id
