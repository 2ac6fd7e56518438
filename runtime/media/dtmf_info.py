"""DTMF carried in SIP INFO bodies, parsed with strict bounds and built for phones that want them.

Two bodies are in use (neither has an RFC; RFC 6086 only frames INFO itself):

- ``application/dtmf-relay`` (Cisco, Asterisk, baresip, most phones)::

      Signal=5
      Duration=160

  Signal is the key ("0"-"9", "*", "#", "A"-"D"; some gateways write 10 for "*" and 11 for "#"),
  Duration how long it was held, in milliseconds (optional).
- ``application/dtmf``: the key alone ("5"), or its RFC 4733 event number ("10").

A body that is neither, too long, or with a key or duration out of bounds raises DtmfInfoError:
the call layer answers 400 with its message, never a traceback.
"""

from __future__ import annotations

from runtime.media.dtmf import DIGITS

__all__ = ["DTMF_TYPES", "DEFAULT_DURATION", "DtmfInfoError", "info_body", "is_dtmf_info", "parse_info_body"]

DTMF_TYPES = frozenset({"application/dtmf-relay", "application/dtmf"})
MAX_BODY = 256            # bytes: a digit and a duration take about 25
MAX_LINES = 8
MAX_DURATION_MS = 10_000  # a longer "key press" is a broken sender
DEFAULT_DURATION = 250    # ms, when the body names none (what Asterisk assumes)


class DtmfInfoError(ValueError):
    """An INFO body that does not carry one DTMF key we can read; the message says why."""


def is_dtmf_info(content_type: str | None) -> bool:
    """Whether an INFO's Content-Type (parameters ignored, any case) is one of DTMF_TYPES."""
    if not content_type:
        return False
    return content_type.partition(";")[0].strip().lower() in DTMF_TYPES


def _key(text: str) -> str:
    text = text.strip()
    if text.isdigit() and len(text) <= 2:
        number = int(text)
        if number >= len(DIGITS):
            raise DtmfInfoError(f"event {number} is not a DTMF key (0-15)")
        return DIGITS[number]
    upper = text.upper()
    if len(upper) != 1 or upper not in DIGITS:
        raise DtmfInfoError(f"{text[:16]!r} is not a DTMF key (0-9, *, #, A-D)")
    return upper


def parse_info_body(content_type: str | None, body: bytes) -> tuple[str, int]:
    """(key, duration in ms) from an INFO body of a DTMF_TYPES content type; the duration is
    DEFAULT_DURATION when the body gives none. Raises DtmfInfoError for another content type, a
    body over MAX_BODY bytes or MAX_LINES lines, not ASCII, without a Signal, with a repeated or
    unknown key, or with a Duration that is not a whole number of 1-MAX_DURATION_MS ms."""
    if not is_dtmf_info(content_type):
        raise DtmfInfoError(f"content type {content_type!r} is not a DTMF body")
    if len(body) > MAX_BODY:
        raise DtmfInfoError(f"body of {len(body)} bytes: a DTMF body has at most {MAX_BODY}")
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise DtmfInfoError("body is not ASCII text") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > MAX_LINES:
        raise DtmfInfoError(f"body of {len(lines)} lines: a DTMF body has at most {MAX_LINES}")
    kind = (content_type or "").partition(";")[0].strip().lower()
    if kind == "application/dtmf":
        if len(lines) != 1:
            raise DtmfInfoError("an application/dtmf body is one key")
        return _key(lines[0]), DEFAULT_DURATION
    fields: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition("=")
        name = name.strip().lower()
        if not sep or not name:
            raise DtmfInfoError(f"line {line[:32]!r} is not name=value")
        if name in fields:
            raise DtmfInfoError(f"{name.capitalize()} given twice")
        fields[name] = value.strip()
    if "signal" not in fields:
        raise DtmfInfoError("no Signal= line")
    key = _key(fields["signal"])
    duration = DEFAULT_DURATION
    if "duration" in fields:
        value = fields["duration"]
        if not value.isdigit() or len(value) > 6 or not 1 <= int(value) <= MAX_DURATION_MS:
            raise DtmfInfoError(f"Duration={value[:16]!r}: milliseconds, 1-{MAX_DURATION_MS}")
        duration = int(value)
    return key, duration


def info_body(key: str, duration_ms: int) -> tuple[str, bytes]:
    """(content type, body) of an INFO carrying `key` held `duration_ms` ms, as application/dtmf-relay
    (the form phones understand most widely). Raises ValueError for a key that is not a DTMF key."""
    if len(key) != 1 or key.upper() not in DIGITS:
        raise ValueError(f"{key!r} is not a DTMF key (0-9, *, #, A-D)")
    duration_ms = max(1, min(int(duration_ms), MAX_DURATION_MS))
    return "application/dtmf-relay", f"Signal={key.upper()}\r\nDuration={duration_ms}\r\n".encode("ascii")
