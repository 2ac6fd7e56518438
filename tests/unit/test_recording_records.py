"""Recordings in the call records: every file written for a call is listed in its record, even the
ones written after the call closed (the record waits for them), a failed one is not, and a store
made before the `recordings` column existed gets it when opened."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from runtime.events import EventBus
from runtime.records import CallRecord, CallRecorder, open_store
from runtime.records.cdr import COLUMNS

T0 = 1_800_000_000.0


def recorder() -> tuple[EventBus, list[CallRecord]]:
    bus, out = EventBus(), []
    bus.subscribe(CallRecorder(out.append, clock=lambda: T0))
    return bus, out


def answered_call(bus: EventBus, call: str = "c1") -> None:
    bus.emit("created", call=call, peer_type="LINE", peer="itsp1", caller="+15557654321", to="+15551230000")
    bus.emit("connected", call=call, peer_type="USER", peer="alice")


def test_a_call_recorded_per_leg_lists_both_files_written_after_it_closed() -> None:
    bus, out = recorder()
    answered_call(bus)
    for path in ("/rec/c1.zero.wav", "/rec/c1.one.wav"):
        bus.emit("recording_started", call="c1", path=path, kind="call", mix="per leg")
    bus.emit("hangup", call="c1", channel="ZERO", reason="BYE")
    bus.emit("closed", call="c1", reason="hangup", rtp_in=100, rtp_out=99)
    assert out == []  # the files are still being written: the record waits for them
    bus.emit("recording", call="c1", path="/rec/c1.zero.wav", seconds=2.0, bytes=32044, channel="ZERO",
             kind="call", stop="hangup")
    assert out == []
    bus.emit("recording", call="c1", path="/rec/c1.one.wav", seconds=2.0, bytes=32044, channel="ONE",
             kind="call", stop="hangup")
    [record] = out
    assert record.recordings == "/rec/c1.zero.wav,/rec/c1.one.wav"
    assert (record.outcome, record.reason, record.rtp_in) == ("answered", "hangup", 100)


def test_a_voicemail_written_before_the_call_closed_is_in_the_record_at_close() -> None:
    bus, out = recorder()
    bus.emit("created", call="c2", peer_type="LINE", peer="itsp1", caller="+15557654321", to="+15551230000")
    bus.emit("recording_started", call="c2", path="/rec/vm/1.wav", kind="voicemail", mix="mono")
    bus.emit("recording", call="c2", path="/rec/vm/1.wav", seconds=7.5, bytes=120044, channel="ZERO",
             kind="voicemail", stop="digit")
    bus.emit("hangup", call="c2", channel=None, reason="hangup")
    bus.emit("closed", call="c2", reason="hangup")
    [record] = out
    assert record.recordings == "/rec/vm/1.wav"


def test_a_recording_that_failed_is_not_listed_and_does_not_hold_the_record() -> None:
    bus, out = recorder()
    answered_call(bus, "c3")
    bus.emit("recording_started", call="c3", path="/full/c3.wav", kind="call", mix="mixed")
    bus.emit("closed", call="c3", reason="hangup")
    bus.emit("recording_failed", call="c3", path="/full/c3.wav", reason="cannot write /full/c3.wav: no space left")
    [record] = out
    assert record.recordings is None


def test_a_call_without_recordings_has_none() -> None:
    bus, out = recorder()
    answered_call(bus, "c4")
    bus.emit("closed", call="c4", reason="hangup")
    assert out[0].recordings is None


def test_an_sqlite_store_made_before_recordings_existed_gets_the_column(tmp_path: Path) -> None:
    path = tmp_path / "cdr.sqlite"
    old_columns = [c for c in COLUMNS if c != "recordings"]
    db = sqlite3.connect(path)
    db.execute(f"CREATE TABLE call_record (id INTEGER PRIMARY KEY AUTOINCREMENT, {', '.join(old_columns)})")
    db.execute("INSERT INTO call_record (call_id, duration, outcome) VALUES ('old', 0, 'failed')")
    db.commit()
    db.close()
    store = open_store(path)
    try:
        store.write([CallRecord(call_id="new", outcome="answered", recordings="/rec/new.wav")])
        rows = {row["call_id"]: row for row in store.query()}
    finally:
        store.close()
    assert rows["new"]["recordings"] == "/rec/new.wav"
    assert rows["old"]["recordings"] is None  # the old rows are kept, without recordings
    store = open_store(path)  # opening again changes nothing
    store.close()


def test_metrics_count_recordings_written_and_failed_and_their_bytes() -> None:
    from runtime.control.metrics import Metrics

    metrics = Metrics()
    bus = EventBus()
    bus.subscribe(metrics.on_event)
    bus.emit("recording", call="c5", path="/rec/a.wav", seconds=1.0, bytes=16044, channel="mixed", kind="call",
             stop="hangup")
    bus.emit("recording_failed", call="c5", path="/rec/b.wav", reason="cannot write /rec/b.wav: no space left")
    text = metrics.render().decode()
    assert 'callflow_recordings_total{result="written"} 1.0' in text
    assert 'callflow_recordings_total{result="failed"} 1.0' in text
    assert "callflow_recording_bytes_total 16044.0" in text
