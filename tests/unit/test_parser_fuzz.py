"""Mutated torture messages: whatever arrives, only SipSyntaxError leaves the parser.

Each example takes a corpus message and applies a few mutations (byte flips, truncations,
duplicated or deleted spans, inserted CR/LF/NUL/quotes/angle brackets/separators); then it goes
through everything the server calls on a received message: parse_message (datagram and stream),
validate, check_request, every typed view, serialising back, and the stream framer.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.sip.errors import SipSyntaxError
from runtime.sip.message import Request, StreamFramer, check_request, parse_message

CORPUS = sorted((Path(__file__).resolve().parent.parent / "conformance").glob("*/*.dat"))
SAMPLES = [p.read_bytes() for p in CORPUS]
INSERTS = [b"\r", b"\n", b"\r\n", b"\r\n ", b"\x00", b'"', b"\\", b"<", b">", b";", b",", b":", b"@",
           b"[", b"]", b" ", b"\t", b"=", b"%", b"\xff", b"\xc3", b"SIP/2.0", b"\r\n\r\n", b"9" * 12]


def exercise(data: bytes) -> None:
    """Everything a received message goes through; anything but SipSyntaxError fails the test."""
    for stream in (False, True):
        try:
            msg = parse_message(data, stream=stream)
        except SipSyntaxError:
            continue
        for view in ("call_id", "cseq", "vias", "top_via", "from_", "to", "contacts", "contact_star",
                     "routes", "record_routes", "content_type", "expires", "max_forwards"):
            try:
                getattr(msg, view)
            except SipSyntaxError:
                pass
        try:
            msg.validate()
        except SipSyntaxError:
            pass
        if isinstance(msg, Request):
            check_request(msg)
            try:
                msg.request_uri  # noqa: B018
            except SipSyntaxError:
                pass
            for contact in _safe(lambda m=msg: m.contacts):
                try:
                    contact.expires  # noqa: B018
                except SipSyntaxError:
                    pass
        out = bytes(msg)
        again = parse_message(out, stream=stream)  # what we send must read back
        assert bytes(again) == out
    framer = StreamFramer(max_size=4096)
    try:
        framer.feed(data)
        framer.feed(b"")
    except SipSyntaxError:
        pass


def _safe(fn):  # type: ignore[no-untyped-def]
    try:
        return fn()
    except SipSyntaxError:
        return []


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        kind = draw(st.integers(0, 5))
        i = draw(st.integers(0, len(data) - 1))
        if kind == 0:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == 1:
            del data[i:]
        elif kind == 2:
            j = draw(st.integers(i, min(len(data), i + 64)))
            data[i:i] = data[i:j]
        elif kind == 3:
            data[i:i] = draw(st.sampled_from(INSERTS))
        elif kind == 4:
            j = draw(st.integers(i, min(len(data), i + 16)))
            del data[i:j]
        else:
            data[i] = draw(st.integers(0, 255))
    return bytes(data)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_only_sip_syntax_errors_escape_for_mutated_corpus_messages(data: bytes) -> None:
    exercise(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_only_sip_syntax_errors_escape_for_arbitrary_bytes(data: bytes) -> None:
    exercise(data)


def test_every_corpus_message_goes_through_without_other_exceptions() -> None:
    for data in SAMPLES:
        exercise(data)
