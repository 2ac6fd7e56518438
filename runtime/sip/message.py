"""SIP messages (RFC 3261 section 7): the one place the rest of Callflow imports them from.

Each job lives in its own module beside this one; this module only gathers their public names, so
callers write `from runtime.sip.message import Request, parse_message` whatever the layout below:

- headers.py    header names and compact forms, the `Headers` multidict (received lines kept so an
                untouched field is written back byte for byte), typed values: `Via`, CSeq, `tag_of`.
- model.py      `Message`, `Request`, `Response`: typed views cached until the headers change,
                `validate()`, serialising back; `create_response` (RFC 3261 8.2.6).
- parser.py     `parse_message`: octets -> Request or Response, a fast path for the common shapes
                and the general grammar for the rest; `MAX_MESSAGE_SIZE`, `MAX_HEADERS`.
- screening.py  `check_request` / `Refusal`: what a UAS refuses before routing (RFC 3261 8.2, 16.3).
- framing.py    `StreamFramer`: a TCP/TLS byte stream cut into messages (RFC 3261 18.3, RFC 5626).

The imports point one way (headers <- model <- parser, screening; parser <- framing), and none of
them reads a socket or a clock.
"""

from __future__ import annotations

from .framing import StreamFramer
from .headers import COMPACT, LIST_HEADERS, Headers, Via, header_key, tag_of
from .model import Message, Request, Response, create_response
from .parser import MAX_HEADERS, MAX_MESSAGE_SIZE, parse_message
from .screening import (
    BODY_TYPES,
    FINAL_METHODS,
    SUPPORTED_OPTIONS,
    URI_SCHEMES,
    Refusal,
    check_request,
)

__all__ = [
    "BODY_TYPES",
    "COMPACT",
    "FINAL_METHODS",
    "LIST_HEADERS",
    "MAX_HEADERS",
    "MAX_MESSAGE_SIZE",
    "SUPPORTED_OPTIONS",
    "URI_SCHEMES",
    "Headers",
    "Message",
    "Refusal",
    "Request",
    "Response",
    "StreamFramer",
    "Via",
    "check_request",
    "create_response",
    "header_key",
    "parse_message",
    "tag_of",
]
