"""The one log format: logfmt, one line per record, every line with time, level and event.

Every logger of Callflow goes through `LogfmtFormatter` (installed by `callflow run`), so a line an
operator greps or ships to Loki is always `time=... level=... event=... key=value ...`, whatever the
module wrote: a message that is not logfmt becomes `event=note logger=... msg="..."` (`log` is the
script's own `log` statement), extra lines of a message (a diagnostic's caret line) go into a
quoted `detail=` field, and a traceback into `traceback=`.
"""

from __future__ import annotations

import logging
import re
import sys
import time

from .events import logfmt_value

# the logger name's last part stands in for the event of a message that has none
_LEVELS = {"WARNING": "warning", "CRITICAL": "critical"}


class LogfmtFormatter(logging.Formatter):
    """`time=2026-11-30T00:01:02.345Z level=info event=... fields`, never more than one line."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        first, _, rest = message.partition("\n")
        first = first.strip()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        level = _LEVELS.get(record.levelname, record.levelname.lower())
        parts = [f"time={stamp}", f"level={level}"]
        if first.startswith("event="):
            parts.append(first if _is_logfmt(first) else _repair(first))
        elif "event=" in first and _is_logfmt(first):
            # `call=... event=...` style: keep the pairs, put the event first
            pairs = first.split(" ")
            event = next(p for p in pairs if p.startswith("event="))
            parts.append(event)
            parts.extend(p for p in pairs if p is not event)
        else:
            parts.append("event=note")
            parts.append(f"logger={record.name}")
            parts.append(f"msg={logfmt_value(first)}")
        if rest.strip():
            parts.append(f"detail={logfmt_value(rest.strip())}")
        if record.exc_info:
            parts.append(f"traceback={logfmt_value(self.formatException(record.exc_info))}")
        elif record.exc_text:
            parts.append(f"traceback={logfmt_value(record.exc_text)}")
        return " ".join(parts)


_PAIR = re.compile(r'\s*([A-Za-z_][\w.\-+~]*)=("(?:[^"\\]|\\.)*"(?=\s|$)|\S*)')
_WORD = re.compile(r"\s*(\S+)")


def _repair(text: str) -> str:
    """Make `key=value ...` text valid logfmt: a word that is no pair belongs to the value before it
    (a `%s` value with spaces), and the value is then quoted; a `%r` value ('...') gets double quotes."""
    pairs: list[list[str]] = []
    pos = 0
    for _ in range(len(text) + 1):  # bounded: every step consumes at least one character
        if pos >= len(text) or not text[pos:].strip():
            break
        match = _PAIR.match(text, pos)
        if match and match.end() > pos:
            pairs.append([match.group(1), match.group(2)])
            pos = match.end()
            continue
        word = _WORD.match(text, pos)
        if word is None:
            break
        if pairs:
            pairs[-1][1] += " " + word.group(1)
        else:
            pairs.append(["msg", word.group(1)])
        pos = word.end()
    out = []
    for key, value in pairs:
        if value.startswith('"') and value.endswith('"') and len(value) > 1:
            out.append(f"{key}={value}")
            continue
        if len(value) > 1 and value[0] == value[-1] == "'":
            value = value[1:-1]
        out.append(f"{key}={logfmt_value(value)}")
    return " ".join(out)


def _is_logfmt(text: str) -> bool:
    """True when every space-separated word is key=value with no quote (the fast, common case)."""
    return '"' not in text and "'" not in text and all("=" in word for word in text.split(" ") if word)


def setup_logging(level: str = "info", stream: object = None) -> None:
    """Send every Callflow log record to `stream` (default stderr) as one logfmt line.

    level: debug | info | warning | error. Replaces handlers set earlier (one format in one place).
    """
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(LogfmtFormatter())
    # the level is the handler's too: a logger set lower on purpose (metrics count the reloader's
    # INFO records) still prints nothing below it
    handler.setLevel(getattr(logging, level.upper()))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    # aiohttp logs each HTTP request at INFO in its own format: the control endpoint's requests are
    # not events an operator needs in the SIP server's log
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
