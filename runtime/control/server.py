"""The control endpoint: HTTP (aiohttp) serving the JSON views, /metrics, reload, and the live page.

Routes (all GET unless said):
  /                  the live page (page.html, self-contained: no CDN, nothing fetched but our JSON)
  /api/state         everything the page shows, in one answer (program, lines, users, calls, records)
  /api/program       version id, load time, files, last reload error
  /api/users         users and their contacts with expiry
  /api/lines         lines: state, last response, next attempt, backoff
  /api/calls         active calls with their legs
  /api/counters      every metric sample as JSON
  /api/graph         the running program's routing (rules as data, and Graphviz dot)
  /api/records       recent call records, when the server keeps them
  POST /api/reload   recompile the script now: {"result": "reloaded" | "unchanged" | "failed", ...}
  POST /api/calls    click-to-call {"from_user": NAME, "to": NUMBER[, "ring_timeout": S]}: ring the
                     user's phones, then dial NUMBER through the rules as a call from that user;
                     202 {"call", "state", "from_user", "to"}, or 400/403/404/409/503 {"error"}
  /metrics           Prometheus text exposition

Listening beyond loopback needs a token (refused otherwise, see `check_exposure`); with a token every
route wants `Authorization: Bearer TOKEN` (or `?token=TOKEN`, for the page in a browser).

A web page the operator opens must not drive it (see `foreign_host`, `cross_site`): a Host header
naming anything but the endpoint's own address (an IP literal, `localhost`, or the name it listens
on; any name when it listens on a wildcard address with a token) gets 421, which defeats DNS
rebinding; a POST whose Origin is not the endpoint itself, or that the browser marks as coming from
another site (Sec-Fetch-Site), gets 403, which defeats a cross-site form POST.
"""

from __future__ import annotations

import hmac
import inspect
import ipaddress
import json as json_module
import logging
import socket
from dataclasses import dataclass
from importlib import resources
from typing import Any

from aiohttp import web

from ..events import logfmt_value
from . import views
from .metrics import CONTENT_TYPE, Metrics

log = logging.getLogger("callflow.control")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5065
TOKEN_ENV = "CALLFLOW_CONTROL_TOKEN"
ADDRESS_ENV = "CALLFLOW_CONTROL"


class ControlError(Exception):
    """The control endpoint cannot start as configured; the message says what to do."""


@dataclass(frozen=True, slots=True)
class ControlAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(text: str) -> ControlAddress:
    """HOST:PORT, :PORT or PORT (host 127.0.0.1); raises ValueError naming the expected form."""
    text = text.strip()
    if "://" in text:  # the page's URL pasted as the address: http://127.0.0.1:5065/ is 127.0.0.1:5065
        text = text.split("://", 1)[1].split("/", 1)[0].rpartition("@")[2]
    if text.isdigit():
        host, port = DEFAULT_HOST, text
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError(f"expected HOST:PORT for the control endpoint, e.g. 127.0.0.1:{DEFAULT_PORT}, "
                             f"got {text!r}")
        host = host.strip("[]") or DEFAULT_HOST
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT for the control endpoint, e.g. 127.0.0.1:{DEFAULT_PORT}, got {text!r}")
    return ControlAddress(host, int(port))


def is_loopback(host: str) -> bool:
    """True when every address `host` resolves to is a loopback one (127.0.0.0/8, ::1).

    Raises ControlError when the name does not resolve."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise ControlError(f"control endpoint: cannot resolve {host!r}: {exc}") from exc
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a.partition("%")[0]).is_loopback for a in addresses)


def check_exposure(address: ControlAddress, token: str | None) -> None:
    """Refuse to listen beyond loopback without a token: the endpoint can reload the program and shows
    who is registered and calling. Raises ControlError with what to do."""
    if token:
        return
    if not is_loopback(address.host):
        raise ControlError(f"control endpoint: refusing to listen on {address} without a token: anyone "
                           f"who reaches it could read the calls and reload the program. Set "
                           f"--control-token TOKEN (or {TOKEN_ENV}), or listen on 127.0.0.1")


class ControlServer:
    """The running control endpoint; `await start()`, `await stop()`."""

    def __init__(self, state: views.ControlState, address: ControlAddress, token: str | None = None) -> None:
        self.state = state
        self.address = address
        self.token = token or None
        self.app = build_app(state, self.token, address)
        self._runner: web.AppRunner | None = None
        self.bound: tuple[str, int] | None = None

    async def start(self) -> tuple[str, int]:
        """Listen; returns the bound (host, port). Raises OSError when the address is taken."""
        check_exposure(self.address, self.token)
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.address.host, self.address.port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.bound = sockets[0].getsockname()[:2] if sockets else (self.address.host, self.address.port)
        return self.bound

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def _split_host(value: str) -> tuple[str, int | None]:
    """`name`, `name:port`, `[v6]` or `[v6]:port` -> (host lower-cased without brackets, port or None).
    Raises ValueError for what is none of these."""
    value = value.strip().lower()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else (None if not rest else "x")
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    else:
        host, port = value, None
    if not host or (port is not None and not (port.isdigit() and int(port) <= 65535)):
        raise ValueError(value)
    return host, int(port) if port is not None else None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def foreign_host(host_header: str | None, local_port: int | None, address: ControlAddress | None,
                 token: str | None) -> str | None:
    """Why a request's Host header does not name this endpoint (DNS rebinding: a page's own name
    resolving to our address), or None when it does. Ours: an IP literal, `localhost` or the name
    we listen on, with our port (80 when none is given); any name when we listen on a wildcard
    address and have a token (then the token, which the page cannot know, is the guard). No Host
    header (HTTP/1.0 tools) is ours: a browser always sends one."""
    if host_header is None:
        return None
    try:
        host, port = _split_host(host_header)
    except ValueError:
        return f"unreadable Host header {host_header!r}"
    if local_port is not None and (port or 80) != local_port:
        return f"Host {host_header!r} names another port than ours ({local_port})"
    listen = (address.host.lower() if address is not None else DEFAULT_HOST)
    wildcard = listen in ("0.0.0.0", "::", "")
    if _is_ip(host) or host in ("localhost", "localhost.", listen) or (wildcard and token):
        return None
    return f"Host {host_header!r} is not this endpoint's address"


def cross_site(method: str, origin: str | None, fetch_site: str | None, host_header: str | None) -> str | None:
    """Why a state-changing request comes from another web page (a cross-site form POST needs no
    preflight), or None. Refused: Sec-Fetch-Site other than same-origin or none (typed, a tool),
    and an Origin that is not http(s)://<our Host>. No Origin and no Sec-Fetch-Site: a tool (curl,
    `callflow reload`), allowed."""
    if method in ("GET", "HEAD", "OPTIONS"):
        return None
    if fetch_site is not None and fetch_site.lower() not in ("same-origin", "none"):
        return f"Sec-Fetch-Site: {fetch_site}"
    if origin is not None:
        ours = {f"http://{host_header}".lower(), f"https://{host_header}".lower()} if host_header else set()
        if origin.lower() not in ours:
            return f"Origin {origin!r} is not this endpoint"
    return None


def _refuse_token(request: web.Request, given: str) -> web.Response:
    """The 401 for a request without the control token, logged as `control_refused` (the source and
    whether a token came at all, never its text, which may be the operator's mistyped real one)."""
    reason = "wrong token" if given else "no token"
    log.warning("event=control_refused ip=%s reason=%s method=%s path=%s", request.remote or "unknown",
                logfmt_value(reason), request.method, logfmt_value(request.path))
    if given:
        return web.json_response({"error": "this control endpoint refused the token (wrong token?): "
                                           "Authorization: Bearer TOKEN"}, status=401)
    return web.json_response({"error": "this control endpoint needs its token: Authorization: Bearer TOKEN"},
                             status=401)


def build_app(state: views.ControlState, token: str | None = None,
              address: ControlAddress | None = None) -> web.Application:
    """The aiohttp application over `state` (exposed for tests with aiohttp's test client);
    `address` is what it listens on (the Host check accepts its name)."""

    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        host_header = request.headers.get("Host")
        sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
        local_port = sockname[1] if isinstance(sockname, tuple) and len(sockname) >= 2 else None
        why = foreign_host(host_header, local_port, address, token)
        if why is not None:
            log.warning("control endpoint: refused %s %s with 421: %s", request.method, request.path, why)
            return web.json_response({"error": f"421 Misdirected Request: {why}; use the address the control "
                                               "endpoint listens on (DNS rebinding is refused)"}, status=421)
        why = cross_site(request.method, request.headers.get("Origin"), request.headers.get("Sec-Fetch-Site"),
                         host_header)
        if why is not None:
            log.warning("control endpoint: refused %s %s with 403: %s", request.method, request.path, why)
            return web.json_response({"error": f"403 Forbidden: a request from another web page ({why})"},
                                     status=403)
        if token:
            given = request.headers.get("Authorization", "")
            given = given[7:] if given.lower().startswith("bearer ") else request.query.get("token", "")
            if not hmac.compare_digest(given.encode(), token.encode()):
                return _refuse_token(request, given)
        return await handler(request)

    app = web.Application(middlewares=[auth])

    def json(data: object) -> web.Response:
        return web.json_response(data, headers={"Cache-Control": "no-store"})

    async def page(_: web.Request) -> web.Response:
        html = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
        return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def program(_: web.Request) -> web.Response:
        return json(views.program_view(state))

    async def users(_: web.Request) -> web.Response:
        return json(views.users_view(state))

    async def lines(_: web.Request) -> web.Response:
        return json(views.lines_view(state))

    async def calls(_: web.Request) -> web.Response:
        return json(views.calls_view(state))

    async def counters(_: web.Request) -> web.Response:
        return json(state.metrics.snapshot() if state.metrics is not None else {})

    async def graph(_: web.Request) -> web.Response:
        return json(views.graph_view(state.engine.program))

    async def records(request: web.Request) -> web.Response:
        limit = _limit(request)
        return json({"records": views.records_view(state, limit)})

    async def full(request: web.Request) -> web.Response:
        return json({"program": views.program_view(state), "lines": views.lines_view(state),
                     "users": views.users_view(state), "calls": views.calls_view(state),
                     "records": views.records_view(state, _limit(request))})

    async def reload(_: web.Request) -> web.Response:
        return json(await reload_now(state))

    async def place_call(request: web.Request) -> web.Response:
        answer, status = await click_to_call_request(state, request)
        return web.json_response(answer, status=status, headers={"Cache-Control": "no-store"})

    async def metrics(_: web.Request) -> web.Response:
        body = state.metrics.render() if state.metrics is not None else b""
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    app.router.add_get("/", page)
    app.router.add_get("/api/state", full)
    app.router.add_get("/api/program", program)
    app.router.add_get("/api/users", users)
    app.router.add_get("/api/lines", lines)
    app.router.add_get("/api/calls", calls)
    app.router.add_get("/api/counters", counters)
    app.router.add_get("/api/graph", graph)
    app.router.add_get("/api/records", records)
    app.router.add_post("/api/reload", reload)
    app.router.add_post("/api/calls", place_call)
    app.router.add_get("/metrics", metrics)
    return app


def _limit(request: web.Request) -> int:
    text = request.query.get("limit", "20")
    return max(1, min(int(text), 1000)) if text.isdigit() else 20


async def reload_now(state: views.ControlState) -> dict[str, Any]:
    """Recompile the script now, as SIGHUP does, and wait for the outcome (the reloader compiles on
    a worker thread): {"result": "reloaded" | "unchanged" | "failed", "version", "previous_version",
    "error"}; a server without a reloader answers "failed" with why."""
    reloader = state.reloader
    if reloader is None:
        return {"result": "failed", "version": views.program_view(state)["version"],
                "error": "this server has no script to reload"}
    before = views.program_view(state)["version"]
    outcome = reloader.reload("control")
    if inspect.isawaitable(outcome):
        outcome = await outcome
    after = views.program_view(state)
    error = after["last_reload_error"]
    if isinstance(outcome, str) and outcome in ("reloaded", "unchanged", "failed"):
        result = outcome
    elif outcome is True:
        result = "reloaded"
    else:
        result = "failed" if error else "unchanged"
    return {"result": result, "version": after["version"], "previous_version": before,
            "error": error if result == "failed" else None}


async def click_to_call_request(state: views.ControlState, request: web.Request) -> tuple[dict[str, Any], int]:
    """POST /api/calls: (the JSON answer, the HTTP status). Bad input is a 4xx with an `error` a
    person can act on, never a traceback."""
    from ..originate import RING_TIMEOUT, DialError, click_to_call

    try:
        body = await request.json()
    except ValueError:
        return {"error": 'the body must be JSON: {"from_user": "alice", "to": "+15551234567"}'}, 400
    if not isinstance(body, dict):
        return {"error": 'the body must be a JSON object: {"from_user": "alice", "to": "+15551234567"}'}, 400
    user, number, ring = body.get("from_user"), body.get("to"), body.get("ring_timeout", RING_TIMEOUT)
    for key, value, what, example in (("from_user", user, "the user whose phone rings first", "alice"),
                                      ("to", number, "the number to dial when the phone answers", "+15551234567")):
        if value is None or value == "":
            return {"error": f'"{key}" ({what}) is missing'}, 400
        if not isinstance(value, str):  # e.g. "to": 123 -- a number must keep its "+" and leading zeros
            return {"error": f'"{key}" ({what}) must be text, e.g. "{key}": "{example}", not '
                             f'{json_module.dumps(value)}'}, 400
    if isinstance(ring, bool) or not isinstance(ring, int | float) or not 0 < ring <= 600:
        return {"error": '"ring_timeout": seconds, more than 0 and at most 600'}, 400
    try:
        call = click_to_call(state.engine, user, number, float(ring))
    except DialError as exc:
        return {"error": str(exc)}, exc.code
    return {"call": call.id, "state": call.state, "from_user": user, "to": number.strip()}, 202


def make_state(engine: Any, reloader: Any = None, records: Any = None) -> views.ControlState:
    """A ControlState with metrics attached to `engine`'s bus and transport."""
    metrics = Metrics()
    metrics.attach(engine)
    return views.ControlState(engine, reloader, metrics, records)
