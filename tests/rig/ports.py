"""Port allocation for test peers, safe across fixtures, threads and pytest-xdist workers.

Why: baresip binds SIP_PORT (UDP+TCP) *and* SIP_PORT+1 (TLS), its ctrl_tcp port and a whole RTP
range; Kamailio binds its SIP port. Asking the kernel for "port 0" does not work for ranges and
offsets, so each process claims a block of ports with an exclusive flock on a per-block lock file
(released when the process dies, however it dies) and hands ports out of it sequentially, skipping
any that are already bound. Blocks sit below Linux's ephemeral range (32768+), so client sockets of
unrelated programs cannot steal them between allocation and bind.
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
import threading
from pathlib import Path

HOST = "127.0.0.1"
FIRST_PORT = 21000
LAST_PORT = 32000  # exclusive; the kernel's ephemeral range starts at 32768
BLOCK_SIZE = 250


def port_is_free(port: int, host: str = HOST) -> bool:
    """True when both UDP and TCP `port` can be bound on `host` right now."""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        s = socket.socket(socket.AF_INET, kind)
        try:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


class PortAllocator:
    """Hands out loopback ports from blocks this process holds exclusively (thread-safe)."""

    def __init__(self, first: int = FIRST_PORT, last: int = LAST_PORT, block_size: int = BLOCK_SIZE,
                 lock_dir: Path | None = None) -> None:
        self._first, self._last, self._block = first, last, block_size
        self._lock_dir = lock_dir or Path(tempfile.gettempdir()) / "callflow-rig-ports"
        self._mutex = threading.Lock()
        self._held: list[int] = []  # fds of the lock files we hold (kept open for our lifetime)
        self._blocks: list[int] = []  # the first port of each block we hold, in claim order
        self._claimed: dict[int, int] = {}  # claim()ed well-known port -> lock file fd
        self._next = 0
        self._end = 0
        self._wraps = 0  # times we went round our own blocks again

    def _claim_block(self) -> None:
        self._lock_dir.mkdir(parents=True, exist_ok=True)
        for start in range(self._first, self._last - self._block + 1, self._block):
            if start in self._blocks:  # a block of ours is gone round again only when no other is free
                continue
            fd = os.open(self._lock_dir / f"{start}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            self._held.append(fd)
            self._blocks.append(start)
            self._next, self._end = start, start + self._block
            return
        if self._blocks:
            # every block is held (several test runs at once): go round the blocks we hold again,
            # taking the ports earlier tests have let go of (_take checks each is free)
            current = self._end - self._block
            index = self._blocks.index(current) if current in self._blocks else -1
            start = self._blocks[(index + 1) % len(self._blocks)]
            self._next, self._end = start, start + self._block
            self._wraps += 1
            return
        raise RuntimeError(f"no free port block left in {self._first}-{self._last} "
                           f"(lock files in {self._lock_dir})")

    def _take(self, count: int, align: int = 1) -> int:
        """Return the first of `count` consecutive free ports, all inside one block."""
        if count > self._block:
            raise ValueError(f"cannot allocate {count} consecutive ports (block size {self._block})")
        with self._mutex:
            wraps = self._wraps
            while True:
                if self._next % align:
                    self._next += align - self._next % align
                if self._next + count > self._end:
                    self._claim_block()
                    if self._wraps - wraps > 2 * len(self._blocks):  # bounded: round all our blocks twice
                        raise RuntimeError(f"no {count} free consecutive ports in the blocks this process "
                                           f"holds, and no free block left in {self._first}-{self._last}")
                    continue
                start = self._next
                self._next += count
                if all(port_is_free(p) for p in range(start, start + count)):
                    return start

    def claim(self, port: int) -> bool:
        """Reserve a well-known port (e.g. 5080) against other rig users until release(port).

        Needed because Kamailio binds with SO_REUSEADDR: two test runs could both bind 5080 and
        split its traffic, so "is it free" alone is not enough. Returns False if someone holds it.
        """
        with self._mutex:
            if port in self._claimed:
                return False
            self._lock_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._lock_dir / f"fixed-{port}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
            if not port_is_free(port):
                os.close(fd)
                return False
            self._claimed[port] = fd
            return True

    def release(self, port: int) -> None:
        """Give back a port taken with claim()."""
        with self._mutex:
            fd = self._claimed.pop(port, None)
        if fd is not None:
            os.close(fd)

    def port(self) -> int:
        """One free port (UDP and TCP), e.g. for a ctrl_tcp socket or a Kamailio listener."""
        return self._take(1)

    def sip_port(self) -> int:
        """A SIP port P with P+1 also free: baresip binds TLS on P+1, so phones must stay 2 apart."""
        return self._take(2, align=2)

    def rtp_range(self, size: int = 20) -> tuple[int, int]:
        """An even-aligned (first, last) RTP range of `size` ports; RTCP uses RTP+1 (no rtcp-mux)."""
        size += size % 2
        start = self._take(size, align=2)
        return start, start + size - 1


ports = PortAllocator()
"""The process-wide allocator that every fixture should share."""
