"""The CLI side of the control endpoint: `callflow status | calls | reload | version | call` ask a running
server over HTTP (stdlib urllib: the CLI needs no event loop) and print tables a person reads at a
glance, or the server's JSON with --json.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Any

from .server import ADDRESS_ENV, DEFAULT_HOST, DEFAULT_PORT, TOKEN_ENV, ControlAddress, parse_address

TIMEOUT = 5.0  # seconds; a server that answers slower than this is reported as not answering


class NoServer(Exception):
    """No server answers at the address; the message says where we looked and how to point elsewhere."""


class ControlClient:
    def __init__(self, address: str | None = None, token: str | None = None) -> None:
        text = address or os.environ.get(ADDRESS_ENV) or f"{DEFAULT_HOST}:{DEFAULT_PORT}"
        self.address: ControlAddress = parse_address(text)
        self.token = token if token is not None else os.environ.get(TOKEN_ENV)

    @property
    def base(self) -> str:
        return f"http://{self.address}"

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        """POST, with `body` as JSON when given."""
        return self._request("POST", path, b"" if body is None else json.dumps(body).encode("utf-8"))

    def _request(self, method: str, path: str, data: bytes | None = None) -> Any:
        """The JSON answer; raises NoServer when nothing answers, RuntimeError on an HTTP error."""
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if data:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310 - our own URL
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read().decode("utf-8")).get("error")
            except (ValueError, AttributeError):
                detail = None
            if exc.code == 401 and self.token:
                # a token went out and was not the one: say so, or the operator re-checks the flag, not
                # the value
                raise RuntimeError(f"the control endpoint at {self.address} refused the token (wrong token?): "
                                   f"give the server's --control-token with --token TOKEN or {TOKEN_ENV}") from None
            if exc.code == 401:
                raise RuntimeError(f"the server at {self.address} wants its control token: "
                                   f"--token TOKEN or {TOKEN_ENV}") from None
            raise RuntimeError(f"the server at {self.address} answered {exc.code}: {detail or exc.reason}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise NoServer(f"no Callflow server answers at {self.address} ({reason}). Is `callflow run` "
                           f"running? Point elsewhere with --control HOST:PORT or {ADDRESS_ENV}") from None


# ---- tables --------------------------------------------------------------------------------------------
def table(headers: list[str], rows: list[list[object]]) -> str:
    """Left-aligned columns separated by two spaces; None prints as '-'."""
    cells = [[("-" if v is None or v == "" else str(v)) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    lines += ["  ".join(v.ljust(widths[i]) for i, v in enumerate(row)).rstrip() for row in cells]
    return "\n".join(lines)


def ago(seconds: float | None) -> str | None:
    """A duration as a person says it: 42s, 5m12s, 3h04m, 2d05h."""
    if seconds is None:
        return None
    s = int(max(0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def clock(when: float | None) -> str | None:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when)) if when else None


def render_status(state: dict[str, Any], now: float | None = None) -> str:
    """`callflow status`: the program, then lines, users and a count of calls."""
    now = now if now is not None else time.time()
    p = state["program"]
    up = ago(now - p["started_at"]) if p.get("started_at") else "?"
    loaded = ago(now - p["loaded_at"]) if p.get("loaded_at") else "?"
    files = ", ".join(p.get("files") or []) or "-"
    out = [f"Callflow {p.get('server_version') or '?'}, up {up}",
           f"program {p.get('version') or '-'}, loaded {clock(p.get('loaded_at')) or '-'} ({loaded} ago), "
           f"files: {files}"]
    error = p.get("last_reload_error")
    if error:
        text = error if isinstance(error, str) else json.dumps(error)
        out.append("last reload failed, the program above kept running:")
        out.extend("  " + line for line in text.splitlines())
    else:
        out.append("last reload: ok")
    out.append("")
    rows = []
    for line in state["lines"]:
        next_attempt = line.get("next_attempt")
        state_text = line.get("state")
        lease = line.get("lease")
        if lease:  # a cluster: say which node registers the line
            holder = "this node" if lease.get("held_here") else lease.get("holder") or "nobody"
            if lease.get("carried"):  # another node registers it; calls go out through it from here too
                state_text = f"carried, registered by {holder}"
            else:
                state_text = f"{state_text} (lease: {holder})"
        rows.append([line["line"], state_text, line.get("server"), line.get("last_response"),
                     f"in {ago(next_attempt - now)}" if next_attempt else None,
                     f"{line['backoff']:.0f}s" if line.get("backoff") else None])
    out.append(table(["LINE", "STATE", "SERVER", "LAST RESPONSE", "NEXT ATTEMPT", "BACKOFF"], rows)
               if rows else "no lines")
    out.append("")
    rows = []
    for user in state["users"]:
        contacts = user.get("contacts") or []
        if not contacts:
            rows.append([user["user"], "not registered", None, None, None])
        for c in contacts:
            rows.append([user["user"], c.get("contact"), c.get("address"), c.get("transport"),
                         ago(c.get("expires_in"))])
    out.append(table(["USER", "CONTACT", "FROM", "TRANSPORT", "EXPIRES IN"], rows) if rows else "no users")
    out.append("")
    calls = state["calls"]
    out.append(f"{len(calls)} active call{'s' if len(calls) != 1 else ''}" + (" (callflow calls)" if calls else ""))
    return "\n".join(out)


def _leg(call: dict[str, Any], channel: str) -> dict[str, Any]:
    for leg in call.get("legs") or []:
        if leg.get("channel") == channel:
            return leg
    return {}


def _peer(leg: dict[str, Any]) -> str | None:
    if not leg:
        return None
    kind = (leg.get("peer_type") or "").lower()
    return f"{kind} {leg.get('peer')}".strip() if leg.get("peer") else None


def render_calls(calls: list[dict[str, Any]], now: float | None = None) -> str:
    """`callflow calls`: one row per active call."""
    if not calls:
        return "no active calls"
    now = now if now is not None else time.time()
    rows = []
    for c in calls:
        zero, one = _leg(c, "ZERO"), _leg(c, "ONE")
        duration = c.get("duration")
        if duration is None and c.get("created_at"):
            duration = now - c["created_at"]
        rows.append([c.get("call"), c.get("state"), ago(duration), _peer(zero), c.get("caller"), c.get("to"),
                     _peer(one), one.get("codec") or zero.get("codec")])
    return table(["CALL", "STATE", "AGE", "FROM (ZERO)", "CALLER", "TO", "DIALLED (ONE)", "CODEC"], rows)


def render_reload(answer: dict[str, Any]) -> str:
    result = answer.get("result")
    if result == "reloaded":
        return f"reloaded: program {answer.get('previous_version')} -> {answer.get('version')}"
    if result == "unchanged":
        return f"unchanged: program {answer.get('version')} is what the files say"
    return f"reload failed, program {answer.get('version')} kept:\n{answer.get('error')}"


def render_call(answer: dict[str, Any]) -> str:
    """`callflow call`: what was started."""
    return (f"call {answer.get('call')}: ringing {answer.get('from_user')}'s phone; when it answers, "
            f"{answer.get('to')} is dialled through the rules as a call from {answer.get('from_user')} "
            "(callflow calls to follow it)")
