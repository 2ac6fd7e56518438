"""The one log format: logfmt, one line per record, every line with time, level and event.

Every logger of Callflow goes through `LogfmtFormatter` (installed by `callflow run`), so a line an
operator greps or ships to Loki is always `time=... level=... event=... key=value ...`, whatever the
module wrote: a message that is not logfmt becomes `event=log msg="..."`, extra lines of a message
(a diagnostic's caret line) go into a quoted `detail=` field, and a traceback into `traceback=`.
"""

from __future__ import annotations

import logging
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
            parts.append(first)
        elif "event=" in first and _is_logfmt(first):
            # `call=... event=...` style: keep the pairs, put the event first
            pairs = first.split(" ")
            event = next(p for p in pairs if p.startswith("event="))
            parts.append(event)
            parts.extend(p for p in pairs if p is not event)
        else:
            parts.append("event=log")
            parts.append(f"logger={record.name}")
            parts.append(f"msg={logfmt_value(first)}")
        if rest.strip():
            parts.append(f"detail={logfmt_value(rest.strip())}")
        if record.exc_info:
            parts.append(f"traceback={logfmt_value(self.formatException(record.exc_info))}")
        elif record.exc_text:
            parts.append(f"traceback={logfmt_value(record.exc_text)}")
        return " ".join(parts)


def _is_logfmt(text: str) -> bool:
    """True when every space-separated word is key=value (values with spaces must be quoted, so a
    quoted value makes this False and the message is carried whole in msg=)."""
    return '"' not in text and all("=" in word for word in text.split(" ") if word)


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
