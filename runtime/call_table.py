"""The table of active calls, with the index that makes per-user and per-line call limits cheap.

`CallTable` is the engine's `calls` (call id -> CallSession, closed calls removed) and keeps, per
peer (`("USER", name)` or `("LINE", name)`), the live calls that may count against that peer's
`max calls`: the calls whose channel ZERO is that peer (noted when the call enters the table), and
the calls that dialled it (noted when the engine builds forks towards it, or hands a leg over to a
call in an attended transfer). Whether such a call counts right now is still the call's own rule
(`CallMachine.involves_user`, engine `_on_line`: a fork still ringing counts, a settled one does
not, ONE once answered), so a count over the index equals a scan of every active call; it only
costs the calls of that peer instead of all of them (issue 8: a new call's limit check scanned
every active call). A call leaves every index the moment it leaves the table.

No asyncio, no clock: plain bookkeeping on the engine's loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .calls import CallMachine, CallSession

__all__ = ["CallTable"]

Peer = tuple[str, str]  # ("USER" | "LINE", name)


class CallTable(dict[str, "CallSession"]):
    """dict of call id -> CallSession, plus the per-peer index (`note`, `count`). Reading is plain
    dict speed; adding and removing a call keep the index in step (`calls[id] = call`, `pop`,
    `del`, `clear`)."""

    def __init__(self) -> None:
        super().__init__()
        self._by_peer: dict[Peer, dict[str, CallMachine]] = {}
        self._peers_of: dict[str, set[Peer]] = {}

    def __setitem__(self, call_id: str, call: CallSession) -> None:
        super().__setitem__(call_id, call)
        machine = getattr(call, "machine", None)  # a CallSession; anything else is not indexed
        if machine is not None:
            self._index(call_id, machine, machine.peer_type, machine.peer_name)
            # a call that enters the table with legs already built (none does in the engine today)
            for leg in (getattr(machine, "one", None), *getattr(machine, "forks", ())):
                if leg is not None:
                    self._index(call_id, machine, leg.peer_type, leg.peer)

    def note(self, machine: CallMachine, peer_type: str, name: str | None) -> None:
        """Call `machine` may count against peer (`peer_type` "USER"/"LINE", `name`) from now on:
        a fork it dials, a leg handed over to it. Ignored for a call not in the table."""
        if machine.id in self:
            self._index(machine.id, machine, peer_type, name)

    def _index(self, call_id: str, machine: CallMachine, peer_type: str, name: str | None) -> None:
        if name is None:
            return
        peer = (peer_type, name)
        self._by_peer.setdefault(peer, {})[call_id] = machine
        self._peers_of.setdefault(call_id, set()).add(peer)

    def count(self, peer_type: str, name: str, counts: Callable[[CallMachine], bool],
              besides: CallMachine | None = None) -> int:
        """How many indexed calls of that peer `counts(machine)` says are on it, `besides` not counted."""
        found = self._by_peer.get((peer_type, name))
        if not found:
            return 0
        return sum(1 for m in found.values() if m is not besides and counts(m))

    def candidates(self, peer_type: str, name: str) -> list[CallMachine]:
        """The calls indexed under that peer (for specs and status)."""
        return list(self._by_peer.get((peer_type, name), {}).values())

    def _forget(self, call_id: str) -> None:
        for peer in self._peers_of.pop(call_id, ()):
            calls = self._by_peer.get(peer)
            if calls is not None:
                calls.pop(call_id, None)
                if not calls:
                    del self._by_peer[peer]

    def pop(self, call_id: str, *default: Any) -> Any:  # type: ignore[override]
        found = super().pop(call_id, *default)
        self._forget(call_id)
        return found

    def __delitem__(self, call_id: str) -> None:
        super().__delitem__(call_id)
        self._forget(call_id)

    def clear(self) -> None:
        super().clear()
        self._by_peer.clear()
        self._peers_of.clear()

    def indexed(self) -> int:
        """Index entries held (0 once every call has ended: nothing left behind)."""
        return len(self._peers_of)
