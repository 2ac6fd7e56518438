"""The registrar and location service (RFC 3261 section 10): where each user's phones can be reached.

Bindings live behind a small store interface: in memory by default, written through to SQLite
with `--location-db` (runtime/location_db.py) so they survive a restart, without the REGISTER logic
knowing which.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .sip.errors import SipSyntaxError
from .sip.message import Request, Response, create_response
from .sip.transaction import Address, new_tag

MIN_EXPIRES = 60
MAX_EXPIRES = 3600
DEFAULT_EXPIRES = 3600


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
    def __init__(self, store: LocationStore | None = None) -> None:
        self.store: LocationStore = store or MemoryLocationStore()

    def lookup(self, user: str, now: float) -> list[Binding]:
        """Live bindings, most recent first; expired ones are dropped on the way."""
        live = []
        for b in self.store.bindings(user):
            if b.expires_at > now:
                live.append(b)
            else:
                self.store.remove(user, b.contact)
        live.sort(key=lambda b: b.expires_at, reverse=True)
        return live

    def register(self, user: str, req: Request, source: Address, transport: str,
                 now: float) -> tuple[Response, list[str], list[str]]:
        """Apply an authenticated REGISTER; returns the response and the contacts added and removed."""
        try:
            default = req.expires
            contacts = req.contacts
            star = req.contact_star
        except SipSyntaxError as exc:
            return create_response(req, 400, exc.reason, to_tag=new_tag()), [], []
        if default is None:
            default = DEFAULT_EXPIRES
        added: list[str] = []
        removed: list[str] = []
        call_id = req.call_id
        cseq = req.cseq[0]
        if star:
            if contacts or default != 0:
                return create_response(req, 400, "Bad Request (Contact * needs Expires: 0 and no other "
                                                 "contact)", to_tag=new_tag()), [], []
            for b in self.store.bindings(user):
                removed.append(b.contact)
            self.store.remove_user(user)
        current = {b.contact: b for b in self.lookup(user, now)}
        for c in contacts:
            expires_param = c.params.get("expires")
            try:
                expires = int(expires_param) if expires_param is not None else default
            except ValueError:
                return create_response(req, 400, "Bad Request (unreadable contact expires)",
                                       to_tag=new_tag()), [], []
            expires = min(expires, MAX_EXPIRES)
            if 0 < expires < MIN_EXPIRES:
                return create_response(req, 423, "Interval Too Brief", to_tag=new_tag(),
                                       headers=[("Min-Expires", str(MIN_EXPIRES))]), [], []
            key = c.raw_uri or str(c.uri)
            old = current.get(key)
            if old is not None and old.call_id == call_id and cseq <= old.cseq:
                continue  # an out-of-order REGISTER must not undo a newer one (RFC 3261 10.3 step 7)
            if expires == 0:
                if old is not None:
                    self.store.remove(user, key)
                    removed.append(key)
                continue
            self.store.put(Binding(user, key, source, transport, now + expires, call_id, cseq,
                                   req.headers.get("user-agent")))
            if old is None:
                added.append(key)
        live = self.lookup(user, now)
        headers = [("Contact", f"<{b.contact}>;expires={max(0, int(b.expires_at - now))}") for b in live]
        return create_response(req, 200, "OK", to_tag=new_tag(), headers=headers), added, removed

    def drop_user(self, user: str) -> None:
        self.store.remove_user(user)
