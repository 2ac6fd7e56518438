"""Call records, the state folder and the SIP trace with real peers: Kamailio as the provider, baresip
phones, a real PostgreSQL server and the real sngrep collecting HEP. Records are read back the way an
operator reads them: `callflow cdr`."""

from __future__ import annotations

import json
import shutil
import signal
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.callflow_server import CallflowServer
from tests.integration.conftest import require_peer
from tests.integration.test_seed_flows import (  # noqa: F401 - `callflow` is a fixture
    DID,
    OUT_NUMBER,
    TALK_SECONDS,
    callflow,
    expected_events,
    office,
    office_flow,
    talk_then_hang_up,
)
from tests.rig import CALL_CLOSED, CALL_INCOMING, Kamailio, PhoneFactory, account_line, ports
from tests.rig.postgres import Postgres, postgres_problem
from tests.rig.proc import log_tail, wait_until

ROOT = Path(__file__).resolve().parents[2]


def cdr(*args: str) -> list[dict[str, object]]:
    result = subprocess.run([sys.executable, "-m", "runtime.cli", "cdr", "--json", *args], capture_output=True,
                            text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def records_of(server: CallflowServer, count: int, *args: str) -> list[dict[str, object]]:
    """The newest records once `count` are there (the writer thread commits a moment after `closed`)."""
    found: list[dict[str, object]] = []

    def enough() -> bool:
        nonlocal found
        if not (server.state_dir / "cdr.sqlite").exists() and "--cdr-dsn" not in args:
            return False
        found = cdr(*(args or ("--state-dir", str(server.state_dir))))
        return len(found) >= count

    assert wait_until(enough, 15, interval=0.3), f"{len(found)} call records, expected {count}:\n" \
                                                 f"{log_tail(server.log_path, 30)}"
    return found


def test_each_call_leaves_one_record_in_sqlite_that_callflow_cdr_lists(
        kamailio: Kamailio, phone_factory: PhoneFactory, callflow: Callable[..., CallflowServer]) -> None:  # noqa: F811
    server, alice, pstn = office(kamailio, phone_factory, callflow)
    alice.dial(f"sip:{OUT_NUMBER}@{server.hostport}")
    answered = talk_then_hang_up(server, alice, pstn, pstn)
    assert server.call_events(answered) == expected_events("ONE")

    alice.dial(f"sip:{OUT_NUMBER}@{server.hostport}")
    pstn.wait_event(CALL_INCOMING, 10)
    pstn.hangup()  # baresip rejects with 486 Busy Here
    alice.wait_event(CALL_CLOSED, 10)
    busy = server.wait_event("failed")["call"]

    busy_row, answered_row = records_of(server, 2)
    assert answered_row["call_id"] == answered and busy_row["call_id"] == busy
    assert (answered_row["from_type"], answered_row["from_peer"], answered_row["to_type"], answered_row["to_peer"]) \
        == ("USER", "alice", "LINE", "itsp1")
    assert (answered_row["dialled"], answered_row["outcome"], answered_row["code"], answered_row["hangup_channel"]) \
        == (OUT_NUMBER, "answered", 200, "ONE")
    assert answered_row["duration"] >= TALK_SECONDS  # type: ignore[operator]
    assert answered_row["created_at"] <= answered_row["answered_at"] <= answered_row["ended_at"]  # type: ignore[operator]
    assert answered_row["rtp_in"] > 0 and answered_row["rtp_out"] > 0  # type: ignore[operator]
    assert answered_row["program_version"]
    assert (busy_row["outcome"], busy_row["code"], busy_row["duration"], busy_row["to_peer"]) == (
        "busy", 486, 0.0, None)

    assert [r["call_id"] for r in cdr("--state-dir", str(server.state_dir), "--outcome", "busy")] == [busy]
    assert [r["call_id"] for r in cdr("--state-dir", str(server.state_dir), "--peer", "itsp1")] == [answered]
    server.assert_alive()


def test_a_restart_keeps_the_phones_registrations_in_the_state_folder_by_default(
        kamailio: Kamailio, phone_factory: PhoneFactory, tmp_path: Path) -> None:
    """No --location-db: the binding is kept in the state folder, and the provider's call after a
    restart rings alice although her phone has not registered again (regint 600 s)."""
    server = CallflowServer(office_flow(kamailio.hostport), tmp_path / "callflow", ports.sip_port(),
                            ports.rtp_range(40))
    try:
        server.start()
        server.wait_event("line_registered", line="itsp1")
        alice = phone_factory(account_line("alice", server.hostport, auth_pass="alice-pw", regint=600),
                              name="alice")
        alice.wait_registered()
        server.wait_event("user_registered", user="alice")
        pstn = phone_factory(kamailio.account_line("pstn"), name="pstn")
        pstn.wait_registered()

        server.stop()
        server.start()
        restored = server.wait_event("bindings_restored")
        assert (restored["restored"], restored["file"]) == ("1", str(server.state_dir / "registrations.sqlite"))
        server.wait_event("line_registered", line="itsp1")
        pstn.dial(f"sip:{DID}@{kamailio.hostport}")
        call = talk_then_hang_up(server, pstn, alice, pstn)
        assert not server.events("user_registered"), "the phone registered again: the test proves nothing"
        [row] = records_of(server, 1)
        assert (row["call_id"], row["from_type"], row["from_peer"], row["to_peer"], row["dialled"]) == (
            call, "LINE", "itsp1", "alice", DID)
        server.assert_alive()
    finally:
        server.stop()


# ---- PostgreSQL -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    require_peer("PostgreSQL", postgres_problem())
    server = Postgres(ports.port())
    try:
        server.start()
        yield server
    finally:
        server.stop()


def test_call_records_land_in_a_real_postgresql_and_cdr_reads_them_there(
        postgres: Postgres, phone_factory: PhoneFactory, tmp_path: Path) -> None:
    flow = """user alice password "alice-pw"
on incoming from user alice to "911" reject 403 "Not from this office"
"""
    server = CallflowServer(flow, tmp_path / "callflow", ports.sip_port(), ports.rtp_range(20),
                            extra_args=["--cdr-dsn", postgres.dsn])
    try:
        server.start()
        alice = phone_factory(account_line("alice", server.hostport, auth_pass="alice-pw"), name="alice")
        alice.wait_registered()
        alice.dial(f"sip:911@{server.hostport}")
        assert "403" in str(alice.wait_event(CALL_CLOSED, 10).get("param"))
        call = server.wait_event("closed")["call"]
        [row] = records_of(server, 1, "--cdr-dsn", postgres.dsn)
        assert (row["call_id"], row["from_peer"], row["dialled"], row["outcome"], row["code"]) == (
            call, "alice", "911", "failed", 403)
        assert not (server.state_dir / "cdr.sqlite").exists()
        server.assert_alive()
    finally:
        server.stop()


# ---- SIP trace to sngrep ------------------------------------------------------------------------------


def sngrep_problem() -> str | None:
    return None if shutil.which("sngrep") else "no sngrep executable"


def pcap_messages(path: Path) -> list[tuple[tuple[str, int], tuple[str, int], bytes]]:
    """(source, destination, payload) of each UDP/TCP packet in a pcap file (Ethernet or raw IPv4)."""
    data = path.read_bytes()
    assert len(data) >= 24, "sngrep wrote no pcap header"
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    out = []
    offset = 24
    for _ in range(100_000):
        if offset + 16 > len(data):
            break
        incl = struct.unpack(endian + "I", data[offset + 8:offset + 12])[0]
        frame = data[offset + 16:offset + 16 + incl]
        offset += 16 + incl
        ip = frame[14:] if linktype == 1 else frame
        if not ip or ip[0] >> 4 != 4:
            continue
        ihl = (ip[0] & 0x0F) * 4
        proto = ip[9]
        src, dst = ".".join(map(str, ip[12:16])), ".".join(map(str, ip[16:20]))
        l4 = ip[ihl:]
        sport, dport = struct.unpack("!HH", l4[:4])
        payload = l4[8:] if proto == 17 else l4[(l4[12] >> 4) * 4:]
        out.append(((src, sport), (dst, dport), payload))
    return out


def test_sip_trace_reaches_the_real_sngrep_over_hep(phone_factory: PhoneFactory, tmp_path: Path) -> None:
    require_peer("sngrep", sngrep_problem())
    hep_port = ports.port()
    pcap = tmp_path / "hep.pcap"
    # -L: listen for HEP (no device capture then: what is in the file came over HEP); -N -q: no UI;
    # -F: ignore any sngreprc
    sngrep = subprocess.Popen(["sngrep", "-N", "-q", "-F", "-L", f"udp:127.0.0.1:{hep_port}", "-O", str(pcap)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    flow = """user alice password "alice-pw"
on incoming from user alice to "911" reject 403 "Not from this office"
"""
    server = CallflowServer(flow, tmp_path / "callflow", ports.sip_port(), ports.rtp_range(20),
                            extra_args=["--hep", f"127.0.0.1:{hep_port}", "--no-cdr", "--log-level", "debug"])
    try:
        assert wait_until(lambda: pcap.exists() or sngrep.poll() is not None, 10), "sngrep did not start"
        assert sngrep.poll() is None, sngrep.stderr.read().decode(errors="replace") if sngrep.stderr else ""
        server.start()
        server.wait_event("hep_started")
        alice = phone_factory(account_line("alice", server.hostport, auth_pass="alice-pw"), name="alice")
        alice.wait_registered()
        alice.dial(f"sip:911@{server.hostport}")
        alice.wait_event(CALL_CLOSED, 10)
        call = server.wait_event("closed")["call"]
        invite_trace = server.wait_event("sip_trace", direction="in", first_line=f"INVITE sip:911@{server.hostport} "
                                         "SIP/2.0")
        assert invite_trace["transport"] == "udp" and invite_trace["call_id"] != "-"
        assert call
    finally:
        server.stop()
        if sngrep.poll() is None:
            sngrep.send_signal(signal.SIGINT)  # sngrep flushes its pcap and exits on SIGINT
            try:
                sngrep.wait(10)
            except subprocess.TimeoutExpired:
                sngrep.kill()
                sngrep.wait(5)
    messages = pcap_messages(pcap)
    ours = ("127.0.0.1", server.port)
    to_us = [p for s, d, p in messages if d == ours]
    from_us = [p for s, d, p in messages if s == ours]
    assert any(p.startswith(b"REGISTER ") for p in to_us), f"{len(messages)} messages in the capture"
    assert any(p.startswith(b"INVITE sip:911@") for p in to_us)
    assert any(p.startswith(b"SIP/2.0 403 ") for p in from_us)
    invite = next(p for p in to_us if p.startswith(b"INVITE sip:911@"))
    call_id = invite_trace["call_id"]
    assert f"Call-ID: {call_id}".encode() in invite or f"i: {call_id}".encode() in invite
