"""Call records: one row per call from the call's engine events, written by a thread, read back by
`callflow cdr` and the live page. Events are driven through a real EventBus on a fake wall clock."""

from __future__ import annotations

import csv
import io
import json
import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from runtime.events import EventBus
from runtime.records import CallRecord, CallRecorder, Filters, RecordStoreError, RecordWriter, open_store
from runtime.records.store import SqliteRecordStore, iso

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
ROOT = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def recorder(version: str | None = "ab12cd34ef56") -> tuple[EventBus, Clock, list[CallRecord]]:
    bus, clock, out = EventBus(), Clock(), []
    bus.subscribe(CallRecorder(out.append, clock=clock, version=lambda: version))
    return bus, clock, out


def outbound_call_answered(bus: EventBus, clock: Clock, call: str = "c0ffee01", hangup: str = "ONE") -> None:
    """alice dials +15557654321 out through line itsp1; it rings 2 s, talks 61.5 s, `hangup` hangs up."""
    bus.emit("created", call=call, peer_type="USER", peer="alice", caller="alice", to="+15557654321")
    bus.emit("incoming", call=call, peer_type="USER", peer="alice", caller="alice", to="+15557654321",
             user_agent="baresip 1.0", ip="192.0.2.10", port=5062)
    bus.emit("connecting", call=call, channel="ONE")
    clock.now += 2
    bus.emit("connected", call=call, peer_type="LINE", peer="itsp1")
    clock.now += 61.5
    bus.emit("hangup", call=call, channel=hangup)
    bus.emit("closed", call=call, reason="hangup", rtp_in=3075, rtp_out=3074)


# ---- what one record says ------------------------------------------------------------------------------


def test_an_answered_call_gives_one_record_with_both_peers_times_and_media() -> None:
    bus, clock, out = recorder()
    outbound_call_answered(bus, clock)
    [r] = out
    assert (r.call_id, r.from_type, r.from_peer, r.to_type, r.to_peer) == ("c0ffee01", "USER", "alice", "LINE", "itsp1")
    assert (r.caller, r.dialled) == ("alice", "+15557654321")
    assert (r.created_at, r.answered_at, r.ended_at) == (T0, T0 + 2, T0 + 63.5)
    assert r.duration == 61.5
    assert (r.outcome, r.code, r.hangup_channel) == ("answered", 200, "ONE")
    assert (r.rtp_in, r.rtp_out) == (3075, 3074)
    assert (r.program_version, r.user_agent, r.source) == ("ab12cd34ef56", "baresip 1.0", "192.0.2.10:5062")


def test_the_record_is_written_only_when_the_call_closes() -> None:
    bus, clock, out = recorder()
    bus.emit("created", call="c1", peer_type="USER", peer="alice", caller="alice", to="bob")
    bus.emit("connected", call="c1", peer_type="USER", peer="bob")
    bus.emit("hangup", call="c1", channel="ZERO")
    assert out == []
    bus.emit("closed", call="c1", reason="hangup")
    assert [r.call_id for r in out] == ["c1"]


def test_a_busy_callee_is_outcome_busy_with_its_code_and_no_duration() -> None:
    bus, clock, out = recorder()
    bus.emit("created", call="c2", peer_type="USER", peer="alice", caller="alice", to="bob")
    clock.now += 3
    bus.emit("failed", call="c2", code=486, reason="Busy Here")
    bus.emit("closed", call="c2", reason="486 Busy Here")
    [r] = out
    assert (r.outcome, r.code, r.reason, r.duration, r.answered_at, r.ended_at) == (
        "busy", 486, "Busy Here", 0.0, None, T0 + 3)


def test_a_caller_hanging_up_before_the_answer_is_cancelled_487_on_channel_zero() -> None:
    bus, clock, out = recorder()
    bus.emit("created", call="c3", peer_type="LINE", peer="itsp1", caller="+15551230000", to="+15557654321")
    bus.emit("connecting", call="c3", channel="ONE")
    bus.emit("hangup", call="c3", channel="ZERO", reason="cancelled")
    bus.emit("closed", call="c3", reason="cancelled")
    [r] = out
    assert (r.outcome, r.code, r.hangup_channel, r.hangup_reason, r.to_peer) == (
        "cancelled", 487, "ZERO", "cancelled", None)


@pytest.mark.parametrize(("code", "outcome"), [(480, "no_answer"), (408, "no_answer"), (600, "busy"),
                                                (404, "failed"), (503, "failed"), (403, "failed")])
def test_a_failed_call_is_classified_by_its_final_code(code: int, outcome: str) -> None:
    bus, clock, out = recorder()
    bus.emit("created", call="c4", peer_type="USER", peer="alice", caller="alice", to="9")
    bus.emit("failed", call="c4", code=code, reason="x")
    bus.emit("closed", call="c4", reason=f"{code} x")
    assert out[0].outcome == outcome and out[0].code == code


def test_a_call_answered_by_callflow_itself_and_hung_up_is_answered() -> None:
    """A `play` answers channel ZERO without dialling anyone: no `connected`, but a BYE ends it."""
    bus, clock, out = recorder()
    bus.emit("created", call="c5", peer_type="USER", peer="alice", caller="alice", to="*43")
    bus.emit("hangup", call="c5", channel="ZERO")
    bus.emit("closed", call="c5", reason="hangup")
    assert (out[0].outcome, out[0].code, out[0].to_peer) == ("answered", 200, None)


def test_events_of_other_calls_and_other_kinds_do_not_mix_into_a_record() -> None:
    bus, clock, out = recorder()
    bus.emit("created", call="a", peer_type="USER", peer="alice", caller="alice", to="1")
    bus.emit("created", call="b", peer_type="USER", peer="bob", caller="bob", to="2")
    bus.emit("line_registered", line="itsp1", code=200)
    bus.emit("failed", call="b", code=404, reason="Not Found")
    bus.emit("closed", call="b", reason="404 Not Found")
    bus.emit("connected", call="a", peer_type="LINE", peer="itsp1")
    bus.emit("hangup", call="a", channel="ZERO")
    bus.emit("closed", call="a", reason="hangup")
    assert [(r.call_id, r.from_peer, r.outcome) for r in out] == [("b", "bob", "failed"), ("a", "alice", "answered")]


# ---- the writer thread ---------------------------------------------------------------------------------


def record(call: str, **kw: object) -> CallRecord:
    base: dict[str, object] = dict(from_type="USER", from_peer="alice", caller="alice", dialled="+15557654321",
                                   created_at=T0, ended_at=T0 + 10, outcome="answered", code=200)
    base.update(kw)
    return CallRecord(call_id=call, **base)  # type: ignore[arg-type]


def test_every_record_submitted_is_in_sqlite_after_stop(tmp_path: Path) -> None:
    writer = RecordWriter(SqliteRecordStore(tmp_path / "cdr.sqlite"), batch=64)
    writer.start()
    for i in range(1000):
        writer.submit(record(f"c{i}"))
    writer.stop()
    rows = open_store(tmp_path / "cdr.sqlite").query(limit=2000)
    assert len(rows) == 1000
    assert rows[0]["call_id"] == "c999" and rows[-1]["call_id"] == "c0"


class BlockingStore:
    """A store whose writes wait for the test (a database that is slow) or fail (one that is down)."""

    name = "test-store"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.fail = False
        self.rows: list[CallRecord] = []
        self.batches = 0

    def write(self, records: list[CallRecord]) -> None:
        self.entered.set()
        assert self.release.wait(30)
        if self.fail:
            raise RecordStoreError("database is down")
        self.batches += 1
        self.rows.extend(records)

    def query(self, limit: int = 50, filters: Filters | None = None) -> list[dict[str, object]]:
        return []

    def close(self) -> None:
        pass


def test_submitting_does_not_wait_for_a_slow_database() -> None:
    store = BlockingStore()
    writer = RecordWriter(store, linger=0)  # type: ignore[arg-type]
    writer.start()
    writer.submit(record("first"))
    assert store.entered.wait(10)          # the thread is now stuck inside the database
    for i in range(100):                   # ... and the event loop's side still returns at once
        writer.submit(record(f"c{i}"))
    assert writer.queued == 100 and store.rows == []
    store.release.set()
    writer.stop()
    assert [r.call_id for r in store.rows] == ["first", *[f"c{i}" for i in range(100)]]
    assert store.batches == 2  # the hundred that queued meanwhile went in one transaction


def test_records_wait_in_memory_while_the_database_is_down_and_are_written_when_it_is_back(
        caplog: pytest.LogCaptureFixture) -> None:
    store = BlockingStore()
    store.fail = True
    store.release.set()
    writer = RecordWriter(store, linger=0)  # type: ignore[arg-type]
    writer.start()
    with caplog.at_level(logging.ERROR, logger="callflow.cdr"):
        writer.submit(record("kept"))
        for _ in range(200):
            if writer.failures:
                break
            threading.Event().wait(0.05)
    assert writer.failures >= 1 and store.rows == []
    assert any("event=cdr_error" in m and "database is down" in m for m in caplog.messages)
    store.fail = False
    assert writer.flush(30)
    writer.stop()
    assert [r.call_id for r in store.rows] == ["kept"]


def test_a_full_queue_loses_records_with_an_error_rather_than_holding_the_calls(
        caplog: pytest.LogCaptureFixture) -> None:
    store = BlockingStore()
    writer = RecordWriter(store, max_queue=10, linger=0)  # type: ignore[arg-type]
    writer.start()
    writer.submit(record("first"))
    assert store.entered.wait(10)
    with caplog.at_level(logging.ERROR, logger="callflow.cdr"):
        for i in range(15):
            writer.submit(record(f"c{i}"))
    assert writer.dropped == 5
    assert any("event=cdr_dropped" in m and "dropped=1" in m for m in caplog.messages)
    store.release.set()
    writer.stop()
    assert len(store.rows) == 11


def test_recent_gives_the_newest_first_with_readable_times_and_filters(tmp_path: Path) -> None:
    writer = RecordWriter(SqliteRecordStore(tmp_path / "cdr.sqlite"))
    writer.submit(record("a", from_peer="alice", outcome="answered"))
    writer.submit(record("b", from_peer="bob", dialled="+4930123", outcome="busy", code=486, created_at=T0 + 60))
    writer.submit(record("c", from_peer="alice", to_peer="itsp1", outcome="answered", created_at=T0 + 120))
    assert [r["call_id"] for r in writer.recent()] == ["c", "b", "a"]
    assert writer.recent(1)[0]["created_at"] == "2027-01-15T08:02:00.000Z"
    assert [r["call_id"] for r in writer.recent(peer="alice")] == ["c", "a"]
    assert [r["call_id"] for r in writer.recent(peer="itsp1")] == ["c"]
    assert [r["call_id"] for r in writer.recent(outcome="busy")] == ["b"]
    assert [r["call_id"] for r in writer.recent(number="4930")] == ["b"]
    assert [r["call_id"] for r in writer.recent(since=T0 + 60, until=T0 + 120)] == ["b"]
    with pytest.raises(ValueError, match="unknown outcome"):
        writer.recent(outcome="maybe")


def test_recent_after_a_restart_shows_the_records_written_before(tmp_path: Path) -> None:
    first = RecordWriter(SqliteRecordStore(tmp_path / "cdr.sqlite"))
    first.start()
    first.submit(record("before-restart"))
    first.stop()
    second = RecordWriter(SqliteRecordStore(tmp_path / "cdr.sqlite"))
    assert [r["call_id"] for r in second.recent()] == ["before-restart"]


def test_the_store_filters_the_same_way(tmp_path: Path) -> None:
    store = SqliteRecordStore(tmp_path / "cdr.sqlite")
    store.write([record("a", dialled="100%_x"), record("b", dialled="100ax", created_at=T0 + 5),
                 record("c", to_peer="itsp1", outcome="no_answer", code=480, created_at=T0 + 9)])
    ids = lambda **f: [r["call_id"] for r in store.query(10, Filters(**f))]  # noqa: E731
    assert ids() == ["c", "b", "a"]
    assert ids(number="100%_") == ["a"]  # LIKE wildcards in a number are taken literally
    assert ids(peer="itsp1") == ["c"]
    assert ids(since=T0 + 5) == ["c", "b"]
    assert ids(until=T0 + 5) == ["a"]
    assert ids(outcome="no_answer") == ["c"]


def test_an_unusable_database_file_is_an_error_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "cdr.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(RecordStoreError, match=str(bad)):
        SqliteRecordStore(bad)


# ---- callflow cdr --------------------------------------------------------------------------------------


def cdr(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runtime.cli", "cdr", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    SqliteRecordStore(tmp_path / "cdr.sqlite").write([
        record("a1b2c3d4", duration=61.5, answered_at=T0 + 2, to_type="LINE", to_peer="itsp1", hangup_channel="ONE"),
        record("b2c3d4e5", from_peer="bob", caller="bob", dialled="+4930123", outcome="busy", code=486,
               created_at=T0 + 60),
    ])
    return tmp_path


def test_cdr_lists_the_newest_calls_first_in_a_table(state_dir: Path) -> None:
    result = cdr("--state-dir", str(state_dir))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["time", "from", "caller", "dialled", "to", "outcome", "code", "secs", "hangup", "call"]
    assert lines[1].split()[2:] == ["bob", "bob", "+4930123", "-", "busy", "486", "0.0", "-", "b2c3d4e5"]
    assert lines[2].split()[2:] == ["alice", "alice", "+15557654321", "itsp1", "answered", "200", "61.5", "ONE",
                                    "a1b2c3d4"]


def test_cdr_filters_by_number_peer_outcome_and_time(state_dir: Path) -> None:
    def calls(*args: str) -> list[str]:
        result = cdr("--state-dir", str(state_dir), "--json", *args)
        assert result.returncode == 0, result.stderr
        return [r["call_id"] for r in json.loads(result.stdout)]

    assert calls("--number", "4930") == ["b2c3d4e5"]
    assert calls("--peer", "itsp1") == ["a1b2c3d4"]
    assert calls("--outcome", "busy") == ["b2c3d4e5"]
    assert calls("--since", iso(T0 + 30) or "") == ["b2c3d4e5"]
    assert calls("--until", iso(T0 + 30) or "") == ["a1b2c3d4"]
    assert calls("--until", "1h") == []  # an age: created before an hour ago (the fixture's calls are later)


def test_cdr_csv_has_a_header_and_every_column(state_dir: Path) -> None:
    result = cdr("--state-dir", str(state_dir), "--csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["call_id"] for r in rows] == ["b2c3d4e5", "a1b2c3d4"]
    assert rows[1]["created_at"] == "2027-01-15T08:00:00.000Z" and rows[1]["duration"] == "61.5"
    assert rows[0]["to_peer"] == "" and rows[0]["code"] == "486"


def test_cdr_without_records_says_where_it_looked(tmp_path: Path) -> None:
    result = cdr("--state-dir", str(tmp_path / "nowhere"))
    assert result.returncode == 1
    assert f"no call records at {tmp_path / 'nowhere' / 'cdr.sqlite'}" in result.stderr
    assert "Traceback" not in result.stderr
