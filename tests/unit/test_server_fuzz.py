"""Mutated messages into the running server's entry point: it answers or drops them, never fails.

Where test_parser_fuzz stops at the parser, this feeds the whole path a datagram takes in
`callflow run`: transport adapter, transaction layer, engine (registrar, auth, call sessions). An
internal error there would be logged with a traceback: the test counts such log records.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.engine import Engine
from runtime.lines import LineConfig
from runtime.transport import ListenSpec
from tests.unit.test_parser_fuzz import mutated


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


LOOP = asyncio.new_event_loop()
ERRORS = _Errors()


@pytest.fixture(autouse=True, scope="module")
def _count_errors_of_this_module_only() -> Iterator[None]:
    """Errors logged by other test modules (which provoke some on purpose) are not ours."""
    logger = logging.getLogger("callflow")
    ERRORS.records.clear()
    logger.addHandler(ERRORS)
    yield
    logger.removeHandler(ERRORS)


async def _engine() -> Engine:
    # no admission control: hammering the engine in a loop is exactly what it would (rightly) shed
    engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1", rtp_ports=(36900, 36999),
                    admission_control=False)
    await engine.start()
    engine.add_user("alice", "alice-pw")
    # datagrams are fed as if from 127.0.0.1:9, this line's provider: INVITEs become call sessions
    engine.add_line(LineConfig("fuzz", "127.0.0.1", 9, register_every=None))
    engine.register_line("fuzz")
    for _ in range(100):
        if engine.lines["fuzz"].state == "not_registering":
            break
        await asyncio.sleep(0.01)
    engine.router = lambda call: call.reject(486, "Busy Here")
    return engine


ENGINE = LOOP.run_until_complete(_engine())


async def _receive(data: bytes) -> None:
    ENGINE.endpoint.message_received(data, ("127.0.0.1", 9), "udp")  # as the UDP protocol does, in the loop
    await asyncio.sleep(0)


def feed(data: bytes) -> None:
    LOOP.run_until_complete(_receive(data))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_messages_never_cause_an_internal_error(data: bytes) -> None:
    feed(data)
    assert not ERRORS.records, ERRORS.records[0].getMessage()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_cause_an_internal_error(data: bytes) -> None:
    feed(data)
    assert not ERRORS.records, ERRORS.records[0].getMessage()


def test_fuzzed_invites_reached_call_sessions() -> None:
    assert ENGINE.lines["fuzz"].state == "not_registering"
    ENGINE.bus.history = []
    feed(b"INVITE sip:+1555@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKcall\r\n"
          b"Max-Forwards: 70\r\nFrom: <sip:p@x>;tag=1\r\nTo: <sip:+1555@x>\r\nCall-ID: call\r\n"
          b"CSeq: 1 INVITE\r\nContact: <sip:p@127.0.0.1:9>\r\nContent-Length: 0\r\n\r\n")
    LOOP.run_until_complete(asyncio.sleep(0.05))
    assert [e.name for e in ENGINE.bus.history][:2] == ["created", "incoming"]


def test_the_server_still_answers_after_the_fuzzing() -> None:
    probe = (b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKalive\r\n"
             b"Max-Forwards: 70\r\nFrom: <sip:p@x>;tag=1\r\nTo: <sip:x@x>\r\nCall-ID: alive\r\n"
             b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    sent: list[bytes] = []
    layer = ENGINE.layer
    original = layer.datagrams_to_send

    def capture() -> list:  # type: ignore[type-arg]
        out = original()
        sent.extend(data for _, _, data in out)
        return out

    layer.datagrams_to_send = capture  # type: ignore[method-assign]
    try:
        feed(probe)
    finally:
        layer.datagrams_to_send = original  # type: ignore[method-assign]
    assert any(d.startswith(b"SIP/2.0 200 OK") for d in sent)
