"""The relay's RTP port range: which even port (RTP, RTCP on the odd one above) a new leg may bind.

Sans-IO bookkeeping only; binding sockets is the relay's job (``runtime.media.relay``).
"""

from __future__ import annotations

from collections import deque

from runtime.media.base import MediaError

__all__ = ["PortPool"]


class PortPool:
    """Even RTP ports in [lo, hi]; RTCP is the odd port above, so both must fit in the range.

    Free ports are handed out oldest-released first, so a port just given back is reused last and late
    packets of the call that had it do not land in a new call. A port is never handed out twice: the
    pool tracks which ports are out and refuses to release one it did not hand out.

    A port can also be parked: its call ended but its sockets stay bound, waiting on the relay's free
    list for the next call. A parked port counts as free (a new call can have it) but ``allocate``
    does not hand it out; the relay takes it back with ``unpark``, or closes its sockets and
    ``release``s it.
    """

    def __init__(self, lo: int, hi: int) -> None:
        if not 0 < lo <= hi <= 65535:
            raise ValueError(f"bad port range {lo}-{hi}")
        first = lo + (lo & 1)
        self._ports = range(first, hi, 2)  # p + 1 <= hi
        if not self._ports:
            raise ValueError(f"port range {lo}-{hi} holds no even RTP port with its RTCP port")
        self._range = f"{lo}-{hi}"
        self._free: deque[int] = deque(self._ports)
        self._in_use: set[int] = set()
        self._parked: set[int] = set()

    def allocate(self) -> int:
        """An even RTP port nobody holds or has parked; raises MediaError when there is none."""
        if not self._free:
            if self._parked:
                raise MediaError(f"no unbound RTP port left in {self._range}: {len(self._parked)} are parked")
            raise MediaError(f"RTP port pool exhausted: all {len(self._ports)} pairs in {self._range} are in use")
        port = self._free.popleft()
        self._in_use.add(port)
        return port

    def release(self, port: int) -> None:
        """Give a port back (in use or parked); releasing one that is not out is a bug: MediaError."""
        if port in self._in_use:
            self._in_use.remove(port)
        elif port in self._parked:
            self._parked.remove(port)
        else:
            raise MediaError(f"port {port} released but not allocated")
        self._free.append(port)

    def park(self, port: int) -> None:
        """A port in use whose sockets stay bound for the next call: free, but not for ``allocate``."""
        if port not in self._in_use:
            raise MediaError(f"port {port} parked but not in use")
        self._in_use.remove(port)
        self._parked.add(port)

    def unpark(self, port: int) -> None:
        """A parked port goes back into use (a new call took its bound sockets)."""
        if port not in self._parked:
            raise MediaError(f"port {port} unparked but not parked")
        self._parked.remove(port)
        self._in_use.add(port)

    @property
    def capacity(self) -> int:
        return len(self._ports)

    @property
    def free(self) -> int:
        """Ports a new call can have: never bound or given back, plus parked ones."""
        return len(self._free) + len(self._parked)

    @property
    def unbound(self) -> int:
        """Free ports with no socket bound on them: what ``allocate`` can hand out."""
        return len(self._free)

    @property
    def parked(self) -> int:
        return len(self._parked)

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    def __contains__(self, port: object) -> bool:
        return port in self._in_use
