"""Message-level acceptance (RFC 3261 8.2 and 16.3): what a UAS refuses before any routing sees a
request, and with which response. Pure functions of the request; no I/O.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import NamedTuple

from .errors import REASONS, SipSyntaxError
from .model import Request

SUPPORTED_OPTIONS = frozenset({"replaces", "timer"})  # timer: session timers, RFC 4028 (runtime/calls)
URI_SCHEMES = frozenset({"sip", "sips"})
BODY_TYPES = ("application/sdp",)
# Methods this server always answers itself, so Max-Forwards: 0 does not stop them (a registrar is
# the final recipient of REGISTER). Add "OPTIONS" to answer OPTIONS at zero hops (RFC 3261 16.3 2).
FINAL_METHODS = frozenset({"REGISTER"})
_SESSION_METHODS = frozenset({"INVITE", "UPDATE"})


class Refusal(NamedTuple):
    """The response a well-formed but unacceptable request deserves, with the headers it must carry."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


def check_request(req: Request, *, supported: Collection[str] = SUPPORTED_OPTIONS,
                  schemes: Collection[str] = URI_SCHEMES, body_types: Collection[str] = BODY_TYPES,
                  final_methods: Collection[str] = FINAL_METHODS) -> Refusal | None:
    """What a UAS must refuse before any routing logic sees `req`, in RFC 3261 8.2 order; None if nothing.

    Syntax (400, via `validate`), Request-URI scheme (416), Max-Forwards 0 (483), Require with
    option-tags not in `supported` (420 + Unsupported), an INVITE/UPDATE body type not in `body_types`
    (415 + Accept), an INVITE whose Accept excludes every type we could answer with (406). Never
    raises: the server only has to send what comes back. An ACK gets None (it is never answered)
    unless it is unreadable, and then the caller drops it.
    """
    try:
        req.validate()
        return _refusal(req, supported, schemes, body_types, final_methods)
    except SipSyntaxError as exc:  # a list header with broken quoting, say: still only a 400
        return Refusal(exc.status, exc.reason)


def _refusal(req: Request, supported: Collection[str], schemes: Collection[str],
             body_types: Collection[str], final_methods: Collection[str]) -> Refusal | None:
    method = req.method
    if method == "ACK":
        return None
    scheme = req.uri.partition(":")[0].lower()
    if scheme not in schemes:
        return Refusal(416, f"Unsupported URI Scheme ({scheme[:40]})")
    if method == "CANCEL":
        return None
    if req.max_forwards == 0 and method not in final_methods:
        return Refusal(483, "Too Many Hops")
    required = req.headers.values("require")
    if required:
        known = {s.lower() for s in supported}
        unknown = [tag for tag in required if tag.lower() not in known]
        if unknown:
            return Refusal(420, REASONS[420], (("Unsupported", ", ".join(unknown)),))
    if method in _SESSION_METHODS:
        if req.body:
            ctype = req.content_type
            if ctype is not None and ctype not in body_types:
                return Refusal(415, REASONS[415], (("Accept", ", ".join(body_types)),))
        if method == "INVITE":
            accepted = req.headers.values("accept")
            if accepted and not any(_media_match(a, body_types) for a in accepted):
                return Refusal(406, "Not Acceptable", (("Accept", ", ".join(body_types)),))
    return None


def _media_match(accept: str, types: Collection[str]) -> bool:
    """Whether one Accept media-range (RFC 3261 20.1, wildcards allowed) covers one of `types`."""
    media, _, params = accept.partition(";")
    media = media.strip(" \t").lower()
    if "q=0" in params.replace(" ", "") and "q=0." not in params.replace(" ", ""):
        return False
    if media == "*/*":
        return True
    major, _, minor = media.partition("/")
    for t in types:
        t_major, _, t_minor = t.partition("/")
        if major == t_major and minor in ("*", t_minor):
            return True
    return False
