"""Keys pressed in calls whose media is in rtpengine: its DTMF reports, fed to the calls as RFC 4733 digits.

With ``--media rtpengine`` the RTP, and so the RFC 4733 telephone-events, flow through rtpengine, never
through Callflow: a `gather` menu and `on dtmf` would hear nothing. rtpengine can report each event
it relays, once at its end, as one JSON datagram to the address given by its own option
``--dtmf-log-dest=HOST:PORT`` (rtpengine's manual; Debian 12's 10.5 does)::

    {"callid":"PREFIX-CALLID","source_tag":"zero","tags":["one","zero"],"type":"DTMF",
     "timestamp":1796009350,"source_ip":"127.0.0.1","event":1,"duration":180,"volume":10}

Callflow listens there (``--rtpengine-dtmf HOST:PORT``), maps the ng call-id back to its call (our
per-process prefix, runtime/media/rtpengine.py) and the tag to the leg (``zero`` -> channel ZERO,
``one`` -> ONE), and hands the digit to the backend's ``dtmf_listener``, the seam the Python relay
feeds: the call reports a `dtmf` event and a gather takes the digit. One report per event (rtpengine
folds the repeated end packets of RFC 4733 2.5.1.4 into one), so nothing is de-duplicated here.

Only datagrams from rtpengine's host (its ng address) are taken, so another host cannot press keys in
a call; others, and datagrams that are not DTMF reports, are refused (``rtpengine_dtmf_refused``,
logged for the first and then every REFUSED_LOG_EVERY-th). Reports of calls that are not ours (another
node sharing the rtpengine, whose prefix differs) or no longer live are dropped at debug level: with
one ``--dtmf-log-dest`` per rtpengine, nodes that share an rtpengine hear only the keys of the node
that rtpengine reports to.

Without ``--rtpengine-dtmf`` the backend says why keys go unheard (``keys_unheard``): logged at start
(``rtpengine_dtmf_off``) and by each gather (``gather_deaf``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from runtime.events import logfmt_value
from runtime.media.base import MediaBackend
from runtime.media.dtmf import DIGITS
from runtime.media.rtpengine import KEYS_UNHEARD, TAGS, RtpengineBackend

__all__ = ["DtmfReport", "DtmfReports", "deliver", "listen", "parse_report"]

log = logging.getLogger("callflow.media")

REFUSED_LOG_EVERY = 100  # refused datagrams: the first is logged, then one in this many


@dataclass(frozen=True, slots=True)
class DtmfReport:
    """One key rtpengine saw end: in its call ``ng_call_id``, from the party ``tag``; ``duration`` in ms."""

    ng_call_id: str
    tag: str
    digit: str
    duration: int


def parse_report(data: bytes) -> DtmfReport | None:
    """One datagram of rtpengine's ``--dtmf-log-dest`` -> the report; None for an RFC 4733 event that
    is not a digit (flash, tones: events 16 and up). Raises ValueError saying what is wrong with a
    datagram that is not a DTMF report (not JSON, another type, a field missing or of the wrong type)."""
    try:
        report = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(report, dict):
        raise ValueError(f"a JSON {type(report).__name__}, not an object")
    if report.get("type", "DTMF") != "DTMF":
        raise ValueError(f"type {report.get('type')!r}, not DTMF")
    call_id, tag, event = report.get("callid"), report.get("source_tag"), report.get("event")
    duration = report.get("duration", 0)
    if not isinstance(call_id, str) or not call_id:
        raise ValueError("no callid")
    if not isinstance(tag, str):
        raise ValueError("no source_tag")
    if not isinstance(event, int) or isinstance(event, bool) or event < 0:
        raise ValueError("no event number")
    if not isinstance(duration, int) or isinstance(duration, bool) or duration < 0:
        raise ValueError("duration is not a whole number of milliseconds")
    if event >= len(DIGITS):
        return None
    return DtmfReport(call_id, tag, DIGITS[event], duration)


def deliver(backend: RtpengineBackend, report: DtmfReport) -> bool:
    """Hand ``report`` to ``backend.dtmf_listener`` as (call id, leg, digit, duration in ms) when it is a
    key of one of this node's live calls; False (nothing done) when it is another node's call, a call
    no longer here, a tag we do not use, or nobody listens."""
    prefix = backend.client.prefix + "-"
    if not report.ng_call_id.startswith(prefix):
        log.debug("rtpengine DTMF report of another node's call %s ignored", report.ng_call_id)
        return False
    call_id = report.ng_call_id[len(prefix):]
    session = backend.sessions.get(call_id)
    listener = backend.dtmf_listener
    if session is None or session.closed or report.tag not in TAGS or listener is None:
        log.debug("rtpengine DTMF report for call %s tag %s dropped (no live call or leg)", call_id, report.tag)
        return False
    listener(call_id, TAGS.index(report.tag), report.digit, report.duration)
    return True


class DtmfReports(asyncio.DatagramProtocol):
    """The UDP socket rtpengine's ``--dtmf-log-dest`` points at, feeding ``backend``'s calls.
    ``source``: the only IP address reports are taken from (rtpengine's)."""

    def __init__(self, backend: RtpengineBackend, source: str) -> None:
        self.backend = backend
        self.source = source
        self.transport: asyncio.DatagramTransport | None = None
        self.address = ""   # HOST:PORT bound, for messages
        self.delivered = 0  # digits handed to calls
        self.refused = 0    # datagrams refused (foreign source, not a report)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr[0] != self.source:
            self._refuse(addr, f"not from rtpengine's address {self.source}")
            return
        try:
            report = parse_report(data)
        except ValueError as exc:
            self._refuse(addr, f"not a DTMF report: {exc}")
            return
        if report is not None and deliver(self.backend, report):
            self.delivered += 1

    def _refuse(self, addr: tuple[str, int], reason: str) -> None:
        self.refused += 1
        if self.refused == 1 or self.refused % REFUSED_LOG_EVERY == 0:
            log.warning("event=rtpengine_dtmf_refused address=%s source=%s refused=%d reason=%s", self.address,
                        f"{addr[0]}:{addr[1]}", self.refused, logfmt_value(reason))

    def close(self) -> None:
        """Close the socket. Idempotent."""
        if self.transport is not None:
            self.transport.close()
            self.transport = None


async def listen(backend: MediaBackend | None, address: tuple[str, int] | None) -> DtmfReports | None:
    """Make ``backend`` (an RtpengineBackend; None or the relay: nothing to do) hear keys: bind ``address``
    (host, port) for rtpengine's DTMF reports and attach the socket as ``backend.dtmf_reports`` (the
    backend closes it). With ``address`` None, log ``rtpengine_dtmf_off`` with the backend's
    ``keys_unheard`` and return None. Raises ValueError when ``address`` is given without rtpengine or
    cannot be bound."""
    if not isinstance(backend, RtpengineBackend):
        if address is not None:
            raise ValueError("the address takes rtpengine's DTMF reports, so it goes with --media "
                             "rtpengine:HOST:PORT (the Python relay hears keys itself)")
        return None
    if address is None:
        log.warning("event=rtpengine_dtmf_off reason=%s", logfmt_value(KEYS_UNHEARD))
        return None
    host, port = address
    source = backend.client.address[0]
    loop = asyncio.get_running_loop()
    try:
        _transport, receiver = await loop.create_datagram_endpoint(lambda: DtmfReports(backend, source),
                                                                   local_addr=(host, port))
    except OSError as exc:
        raise ValueError(f"cannot listen for rtpengine's DTMF reports on {host}:{port}: "
                         f"{exc.strerror or exc}") from None
    bound: Any = receiver.transport.get_extra_info("sockname") if receiver.transport else (host, port)
    receiver.address = f"{bound[0]}:{bound[1]}"
    backend.dtmf_reports = receiver
    log.info("event=rtpengine_dtmf_listening address=%s source=%s hint=%s", receiver.address, source,
             logfmt_value(f"rtpengine must run with --dtmf-log-dest={receiver.address}"))
    return receiver

