"""The registrar under a running engine: a phone whose registration lapses is reported (so `on user
unregistered` fires), and one authenticated user flooding REGISTERs with large Contacts cannot make
the server hold more than a bounded number of small bindings (issue 9)."""

from __future__ import annotations

import asyncio
import logging
import socket
import tracemalloc

import pytest

from callflow.flowrun.dialplan import Dialplan
from callflow.sdk import SipServer
from flowlang import compile_source
from runtime import engine as engine_module
from runtime.engine import Engine
from runtime.registrar import MAX_CONTACTS, Binding
from runtime.sip.digest import DigestClient, select_challenge
from runtime.sip.message import Headers, Request, Response, parse_message
from runtime.transport import ListenSpec


async def lapse_session(caplog: pytest.LogCaptureFixture) -> list:  # type: ignore[type-arg]
    engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1", rtp_ports=(37500, 37599))
    engine.bus.history = []
    await engine.start()
    Dialplan(SipServer(engine=engine)).load(compile_source('user alice password "alice-pw"\n'
                                         'on user any unregistered log "{user} left: {reason}"\n'))
    engine.registrar.store.put(Binding("alice", "sip:alice@127.0.0.1:5999", ("127.0.0.1", 5999), "udp",
                                       engine.now() + 0.05, "c1", 1))
    for _ in range(300):  # bounded
        if any(e.name == "user_unregistered" for e in engine.bus.history):
            break
        await asyncio.sleep(0.01)
    history = list(engine.bus.history)
    await engine.stop()
    return history


def test_a_lapsed_phone_registration_is_reported_and_fires_on_user_unregistered(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(engine_module, "EXPIRY_SWEEP", 0.02)
    with caplog.at_level(logging.INFO, logger="callflow"):
        history = asyncio.run(lapse_session(caplog))
    (gone,) = [e for e in history if e.name == "user_unregistered"]
    assert gone.fields == {"user": "alice", "contact": "sip:alice@127.0.0.1:5999", "reason": "expired"}
    assert any("alice left: expired" in r.getMessage() for r in caplog.records)


def register(seq: int, contact: str, authorization: str | None, port: int) -> bytes:
    h = Headers()
    h.add("Via", f"SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKflood{seq}")
    h.add("Max-Forwards", "70")
    h.add("From", "<sip:alice@127.0.0.1>;tag=f1")
    h.add("To", "<sip:alice@127.0.0.1>")
    h.add("Call-ID", "flood-1")
    h.add("CSeq", f"{seq} REGISTER")
    h.add("Contact", f"<{contact}>")
    h.add("Expires", "3600")
    if authorization:
        h.add("Authorization", authorization)
    h.add("Content-Length", "0")
    return bytes(Request("REGISTER", "sip:127.0.0.1", h))


async def flood_session(count: int) -> dict[str, int]:
    engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1", rtp_ports=(37600, 37699),
                    admission_control=False)
    engine.guard.admit = lambda ip, data, now: (True, None)  # type: ignore[method-assign]  # the flood guard is another spec's
    # timer J (64*T1) keeps each answered REGISTER's transaction for 32 s; a short T1 lets the
    # spec see what stays once they are gone
    engine.layer.t1 = 0.005
    await engine.start()
    engine.add_user("alice", "alice-pw")
    loop = asyncio.get_running_loop()
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone.bind(("127.0.0.1", 0))
    phone.setblocking(False)
    port = phone.getsockname()[1]
    server = ("127.0.0.1", engine.port)
    client = DigestClient("alice", "alice-pw")
    challenge = None
    figures = {"ok": 0, "refused": 0, "largest_200": 0}
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]  # nothing traced yet but what start-up allocates next
    seq = 0
    for i in range(count):
        # half of them legal but large (400-byte URIs), half over the size limit (4 KB)
        size = 400 if i % 2 == 0 else 4000
        contact = f"sip:{'p' * (size - 40)}{i}@127.0.0.1:{port}"
        for _ in range(3):  # a challenge, then the answer
            seq += 1
            auth = client.authorize(challenge, "REGISTER", "sip:127.0.0.1") if challenge else None
            await loop.sock_sendto(phone, register(seq, contact, auth, port), server)
            resp = parse_message(await asyncio.wait_for(loop.sock_recv(phone, 65535), 5))
            assert isinstance(resp, Response)
            if resp.status == 401:
                challenge = select_challenge(resp.headers.get_all("www-authenticate"))
                continue
            if resp.status == 200:
                figures["ok"] += 1
                figures["largest_200"] = max(figures["largest_200"], len(bytes(resp)))
            else:
                figures["refused"] += 1
            break
    figures["in_flight_kb"] = (tracemalloc.get_traced_memory()[0] - before) // 1024
    for _ in range(200):  # bounded: until timer J has ended every transaction
        if not engine.layer.server:
            break
        await asyncio.sleep(0.01)
    # what the server holds, not what the test harness keeps: log records captured by pytest (every
    # `user_unregistered reason=replaced` line of the flood, when an earlier test left INFO logging on)
    # are allocated in logging and _pytest and are left out
    held = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, "*/logging/*"),
                                                      tracemalloc.Filter(False, "*/_pytest/*"),
                                                      tracemalloc.Filter(False, tracemalloc.__file__)])
    figures["held_after_kb"] = max(0, sum(t.size for t in held.traces) - before) // 1024
    tracemalloc.stop()
    figures["bindings"] = len(engine.registrar.lookup("alice", engine.now()))
    figures["binding_bytes"] = sum(len(b.contact) + len(b.call_id) + len(b.user_agent or "")
                                   for b in engine.registrar.lookup("alice", engine.now()))
    phone.close()
    await engine.stop()
    return figures


def test_a_register_flood_from_one_user_holds_a_bounded_number_of_small_bindings() -> None:
    # the events' log lines would be kept by pytest's log capture and counted as held memory
    events_log = logging.getLogger("callflow.events")
    level = events_log.level
    events_log.setLevel(logging.WARNING)
    try:
        figures = asyncio.run(flood_session(2000))
    finally:
        events_log.setLevel(level)
    print(f"\nregister flood: 2000 REGISTERs from one authenticated user -> {figures}")
    assert figures["ok"] == 1000 and figures["refused"] == 1000
    assert figures["bindings"] == MAX_CONTACTS
    assert figures["largest_200"] < 6 * 1024           # every 200 lists at most 10 bindings of <= 512 bytes
    assert figures["binding_bytes"] < MAX_CONTACTS * 600
    # once the transactions are over, what the flood left behind is the ten bindings and little else
    assert figures["held_after_kb"] < 2048


async def register_once() -> list:  # type: ignore[type-arg]
    engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1", rtp_ports=(37700, 37799))
    engine.bus.history = []
    await engine.start()
    engine.add_user("alice", "alice-pw")
    loop = asyncio.get_running_loop()
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone.bind(("127.0.0.1", 0))
    phone.setblocking(False)
    port = phone.getsockname()[1]
    client = DigestClient("alice", "alice-pw")
    challenge = None
    for seq in (1, 2):
        auth = client.authorize(challenge, "REGISTER", "sip:127.0.0.1") if challenge else None
        await loop.sock_sendto(phone, register(seq, f"sip:alice@127.0.0.1:{port}", auth, port),
                               ("127.0.0.1", engine.port))
        resp = parse_message(await asyncio.wait_for(loop.sock_recv(phone, 65535), 5))
        challenge = select_challenge(resp.headers.get_all("www-authenticate"))
    history = list(engine.bus.history)
    phone.close()
    await engine.stop()
    return history


def test_a_phone_registering_is_reported_with_its_granted_expiry() -> None:
    (event,) = [e for e in asyncio.run(register_once()) if e.name == "user_registered"]
    assert event.fields["user"] == "alice" and event.fields["expires"] == 3600
