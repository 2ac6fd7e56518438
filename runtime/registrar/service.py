"""The registrar and location service (RFC 3261 section 10): where each user's phones can be reached.

Bindings live behind a small store interface: in memory by default, written through to SQLite
with `--location-db` (runtime/registrar/sqlite.py) so they survive a restart, without the REGISTER logic
knowing which.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol

from ..sip.errors import SipError, SipSyntaxError
from ..sip.message import Request, Response, create_response
from ..sip.transaction import Address, new_tag
from ..sip.uri import NameAddr

MIN_EXPIRES = 60
MAX_EXPIRES = 3600
DEFAULT_EXPIRES = 3600
# Bounds on what one user's phones can make the server hold (issue 9: one authenticated user sent
# 2,000 REGISTERs with large Contacts and every 200, listing every binding, grew with them):
MAX_CONTACTS = 10          # bindings per user; a new one beyond replaces the one closest to expiry
MAX_CONTACT_BYTES = 512    # a Contact URI longer than this is refused (400)
MAX_USER_AGENT = 200       # characters of User-Agent kept with a binding
MAX_PATH = 5               # Path entries kept with a binding (RFC 3327): an edge adds one, a chain a few
MAX_PATH_BYTES = 1024      # their total size; a REGISTER with more is refused (400)

@dataclass(slots=True)
class Binding:
    user: str
    contact: str          # the Contact URI exactly as the phone wrote it
    source: Address       # where the REGISTER came from: we send there (NAT-friendly)
    transport: str
    expires_at: float
    call_id: str
    cseq: int
    user_agent: str | None = None
    # the Path header values of the REGISTER (RFC 3327), first is the proxy nearest to us: requests
    # to this contact carry them as a pre-loaded Route set and go to the first one (loose routing)
    path: tuple[str, ...] = ()

    def next_hop(self) -> tuple[Address, str]:
        """Where a request to this contact is sent, and over which transport (RFC 3327 5.3, RFC 3261
        8.1.2): the first Path entry's host and port when the REGISTER had a Path (the edge that holds
        the phone's connection or NAT binding), else the REGISTER's source. A Path entry naming a host
        by name (which would need DNS) or unreadable falls back to the source."""
        if self.path:
            try:
                uri = NameAddr.parse(self.path[0]).uri
            except (SipError, ValueError):
                return self.source, self.transport
            host = uri.bare_host
            if _is_ip(host):
                transport = uri.params.get("transport")
                transport = transport.lower() if transport else self.transport
                default = 5061 if transport in ("tls", "wss") or uri.scheme == "sips" else 5060
                return (host, uri.port or default), transport
        return self.source, self.transport

    def route_headers(self) -> list[tuple[str, str]]:
        """The pre-loaded Route set for a request to this contact: one Route per Path entry, in order
        (RFC 3327 5.3); empty without a Path."""
        return [("Route", value) for value in self.path]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    return True


def path_supported(req: Request) -> bool:
    """Whether the UA lists `path` in Supported (RFC 3327 5.3: only then does the 200 echo the Path)."""
    return any(tag.lower() == "path" for tag in req.headers.values("supported"))


class LocationStore(Protocol):
    def bindings(self, user: str) -> list[Binding]: ...
    def put(self, binding: Binding) -> None: ...
    def remove(self, user: str, contact: str) -> None: ...
    def remove_user(self, user: str) -> None: ...
    def users(self) -> list[str]: ...


class MemoryLocationStore:
    def __init__(self) -> None:
        self._by_user: dict[str, dict[str, Binding]] = {}

    def bindings(self, user: str) -> list[Binding]:
        return list(self._by_user.get(user, {}).values())

    def put(self, binding: Binding) -> None:
        self._by_user.setdefault(binding.user, {})[binding.contact] = binding

    def remove(self, user: str, contact: str) -> None:
        entries = self._by_user.get(user)
        if entries:
            entries.pop(contact, None)
            if not entries:
                del self._by_user[user]

    def remove_user(self, user: str) -> None:
        self._by_user.pop(user, None)

    def users(self) -> list[str]:
        return list(self._by_user)


class Registrar:
    """The location service's REGISTER logic (RFC 3261 10.3), bounded per user.

    Times are seconds on the engine's monotonic clock. `min_expires`/`max_expires` bound a
    binding's life (shorter: 423 with Min-Expires; longer: cut down), `max_contacts` the bindings a
    user holds at once, `max_contact_bytes` the size of each.
    """

    def __init__(self, store: LocationStore | None = None, *, min_expires: int = MIN_EXPIRES,
                 max_expires: int = MAX_EXPIRES, max_contacts: int = MAX_CONTACTS,
                 max_contact_bytes: int = MAX_CONTACT_BYTES) -> None:
        self.store: LocationStore = store or MemoryLocationStore()
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.max_contacts = max_contacts
        self.max_contact_bytes = max_contact_bytes

    def lookup(self, user: str, now: float) -> list[Binding]:
        """Live bindings, most recent first. Lapsed ones are left for `expire`, which reports them."""
        live = [b for b in self.store.bindings(user) if b.expires_at > now]
        live.sort(key=lambda b: b.expires_at, reverse=True)
        return live

    def expire(self, now: float) -> list[Binding]:
        """Remove every binding that has lapsed by `now` and return them (for `user_unregistered`
        with reason=expired). O(bindings): the engine calls it every few seconds."""
        gone = []
        for user in self.store.users():
            for b in self.store.bindings(user):
                if b.expires_at <= now:
                    self.store.remove(user, b.contact)
                    gone.append(b)
        return gone

    def register(self, user: str, req: Request, source: Address, transport: str,
                 now: float) -> tuple[Response, list[str], list[tuple[str, str]]]:
        """Apply an authenticated REGISTER (RFC 3261 10.3 steps 6-8).

        Returns the response, the contacts added, and the contacts removed each with why
        ("unregistered": Expires 0 or `*`; "replaced": pushed out by a newer one beyond
        `max_contacts`). The Path header values (RFC 3327) are stored with each binding and echoed in
        the 200 when the UA lists `path` in Supported. A request that breaks a bound changes nothing:
        400 (unreadable, a Contact over `max_contact_bytes`, a Path over MAX_PATH/MAX_PATH_BYTES), 403
        (more contacts in one request than a user may hold), 423.
        """
        try:
            default = req.expires
            contacts = req.contacts
            star = req.contact_star
        except SipSyntaxError as exc:
            return self._refuse(req, 400, exc.reason)
        path = tuple(v.strip() for v in req.headers.values("path") if v.strip())
        if len(path) > MAX_PATH or sum(len(v.encode()) for v in path) > MAX_PATH_BYTES:
            return self._refuse(req, 400, f"Bad Request (Path longer than {MAX_PATH} entries or "
                                          f"{MAX_PATH_BYTES} bytes)")
        if default is None:
            default = DEFAULT_EXPIRES
        if star:
            if contacts or default != 0:
                return self._refuse(req, 400, "Bad Request (Contact * needs Expires: 0 and no other contact)")
            removed = [(b.contact, "unregistered") for b in self.store.bindings(user)]
            self.store.remove_user(user)
            return create_response(req, 200, "OK", to_tag=new_tag()), [], removed
        if len(contacts) > self.max_contacts:
            return self._refuse(req, 403, f"Forbidden (more than {self.max_contacts} contacts in one "
                                          f"registration)")
        wanted: list[tuple[str, int]] = []
        for c in contacts:
            key = c.raw_uri or str(c.uri)
            if len(key.encode()) > self.max_contact_bytes:
                return self._refuse(req, 400, f"Bad Request (Contact URI longer than {self.max_contact_bytes} "
                                              f"bytes)")
            expires_param = c.params.get("expires")
            try:
                expires = int(expires_param) if expires_param is not None else default
            except ValueError:
                return self._refuse(req, 400, "Bad Request (unreadable contact expires)")
            if 0 < expires < self.min_expires:
                return create_response(req, 423, "Interval Too Brief", to_tag=new_tag(),
                                       headers=[("Min-Expires", str(self.min_expires))]), [], []
            wanted.append((key, min(expires, self.max_expires)))
        added: list[str] = []
        removed: list[tuple[str, str]] = []
        call_id = req.call_id
        cseq = req.cseq[0]
        user_agent = req.headers.get("user-agent")
        if user_agent is not None:
            user_agent = user_agent[:MAX_USER_AGENT]
        current = {b.contact: b for b in self.lookup(user, now)}
        for key, expires in wanted:
            old = current.get(key)
            if old is not None and old.call_id == call_id and cseq <= old.cseq:
                continue  # an out-of-order REGISTER must not undo a newer one (RFC 3261 10.3 step 7)
            if expires == 0:
                if old is not None:
                    self.store.remove(user, key)
                    del current[key]
                    removed.append((key, "unregistered"))
                continue
            if old is None and len(current) >= self.max_contacts:
                # the user's phones hold every slot: the binding closest to lapsing makes room
                oldest = min(current.values(), key=lambda b: b.expires_at)
                self.store.remove(user, oldest.contact)
                del current[oldest.contact]
                removed.append((oldest.contact, "replaced"))
            binding = Binding(user, key, source, transport, now + expires, call_id, cseq, user_agent, path)
            self.store.put(binding)
            current[key] = binding
            if old is None:
                added.append(key)
        live = sorted(current.values(), key=lambda b: b.expires_at, reverse=True)
        headers = [("Contact", f"<{b.contact}>;expires={max(0, int(b.expires_at - now))}") for b in live]
        if path and path_supported(req):
            # RFC 3327 5.3: the Path as stored goes back to a UA that supports it, so it learns its route
            headers += [("Path", value) for value in path]
        return create_response(req, 200, "OK", to_tag=new_tag(), headers=headers), added, removed

    @staticmethod
    def _refuse(req: Request, code: int, reason: str) -> tuple[Response, list[str], list[tuple[str, str]]]:
        return create_response(req, code, reason, to_tag=new_tag()), [], []

    def drop_user(self, user: str) -> None:
        self.store.remove_user(user)
