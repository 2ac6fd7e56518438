"""SIP trace: every message sent and received, as one debug log entry each and/or HEP v3 packets.

`SipTracer` is an observer for `SipEndpoint.add_observer`: fn(direction "in"|"out", transport,
address (ip, port) of the peer, data: the message's bytes). It is attached only when something wants
the trace (`--log-level debug` or `--hep HOST:PORT`), so a server not tracing pays nothing.

Log entry (logger callflow.trace, DEBUG), one line per message:

    event=sip_trace direction=in transport=udp address=192.0.2.10:5060 local=192.0.2.1:5060
        call_id=3f2a9c01@host first_line="INVITE sip:+15557654321@... SIP/2.0" bytes=812
        message="INVITE sip:...\\nVia: ...\\n\\nv=0\\n..."

(line breaks of the message written as \\n, so the entry stays one line).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..events import logfmt_value
from .hep import HepSender, encode_hep3

log = logging.getLogger("callflow.trace")

Address = tuple[str, int]


def call_id_of(data: bytes) -> str | None:
    """The Call-ID (or compact `i`) header's value of a SIP message, None when it has none."""
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[:end]
    for line in head.split(b"\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() in (b"call-id", b"i"):
            return value.strip().decode("utf-8", "replace")
    return None


class SipTracer:
    """Turns each SIP message into a debug line and/or a HEP packet.

    `local(transport)` gives our (ip, port) for a transport (the listener's address, with the
    advertised address for a wildcard one); `clock` wall-clock seconds; `hep` an optional sender.
    """

    def __init__(self, local: Callable[[str], Address], *, hep: HepSender | None = None, capture_id: int = 2001,
                 clock: Callable[[], float] = time.time, log_messages: bool | None = None) -> None:
        self.local = local
        self.hep = hep
        self.capture_id = capture_id
        self.clock = clock
        self.log_messages = log.isEnabledFor(logging.DEBUG) if log_messages is None else log_messages

    def __call__(self, direction: str, transport: str, address: Address, data: bytes) -> None:
        transport = transport.lower()
        local = self.local(transport)
        call_id = call_id_of(data)
        if self.log_messages:
            first = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
            text = data.decode("utf-8", "replace").replace("\r\n", "\n")
            log.debug("event=sip_trace direction=%s transport=%s address=%s:%s local=%s:%s call_id=%s "
                      "first_line=%s bytes=%d message=%s", direction, transport, address[0], address[1],
                      local[0], local[1], logfmt_value(call_id or "-"), logfmt_value(first), len(data),
                      logfmt_value(text))
        if self.hep is not None:
            source, destination = (address, local) if direction == "in" else (local, address)
            try:
                packet = encode_hep3(source=source, destination=destination, transport=transport, payload=data,
                                     timestamp=self.clock(), capture_id=self.capture_id, correlation_id=call_id)
            except ValueError as exc:
                log.debug("event=hep_error reason=%s", logfmt_value(str(exc)))
                return
            self.hep.send(packet)
