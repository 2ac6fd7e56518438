"""Flood and scanner defence, before a message costs a parse.

A token bucket per source IP: a source that sends more than `rate` messages a second (beyond a
`burst`) is ignored for `block` seconds, and the first refusal is reported once. Lines' providers
are exempt (a busy trunk is not a flood). Known SIP scanners (by User-Agent) are dropped without an
answer, so they learn nothing, and reported once per source.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

SCANNER_RE = re.compile(rb"\r\n(?:User-Agent|User-agent|user-agent):[ \t]*"
                        rb"(?:friendly-scanner|sipvicious|sipcli|sip-scan|sipsak|VaxSIPUserAgent|pplsip|"
                        rb"iWar|sundayddr|SIPScan|smap|Cisco-SIPGateway/IOS-12\.x)", re.I)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float
    blocked_until: float = 0.0


class FloodGuard:
    def __init__(self, rate: float = 200.0, burst: float = 400.0, block: float = 60.0,
                 exempt: Callable[[str], bool] = lambda ip: False, max_sources: int = 100_000) -> None:
        self.rate, self.burst, self.block = rate, burst, block
        self.exempt = exempt
        self.max_sources = max_sources
        self._buckets: dict[str, _Bucket] = {}
        self._scanners: dict[str, float] = {}

    def admit(self, ip: str, data: bytes, now: float) -> tuple[bool, str | None]:
        """Whether to process a message; the second item names an attack to report (once per block)."""
        if self.exempt(ip):
            return True, None
        bucket = self._buckets.get(ip)
        if bucket is None:
            if len(self._buckets) >= self.max_sources:
                self._prune(now)
            bucket = _Bucket(self.burst, now)
            if len(self._buckets) < self.max_sources:
                self._buckets[ip] = bucket
            # else every tracked source is blocked: this one is judged on a full bucket of its own,
            # untracked, rather than by freeing a blocked source's entry
        if bucket.blocked_until > now:
            return False, None
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if bucket.tokens < 1.0:
            bucket.blocked_until = now + self.block
            return False, "flood"
        bucket.tokens -= 1.0
        if SCANNER_RE.search(data, 0, 2048) is not None:
            first = self._scanners.get(ip, 0.0) <= now
            self._scanners[ip] = now + self.block
            if len(self._scanners) > self.max_sources:
                # only the scanners whose quiet time is over go: they would be reported again anyway
                for old in [k for k, until in self._scanners.items() if until <= now]:
                    del self._scanners[old]
                while len(self._scanners) > self.max_sources:
                    del self._scanners[next(iter(self._scanners))]  # the longest known
            return False, "scan" if first else None
        return True, None

    def _prune(self, now: float) -> None:
        """Make room, never by forgetting a block: a flood of packets from new (perhaps spoofed)
        addresses must not lift the block on a real flooder. Idle sources go first, then the
        oldest unblocked ones (a tenth of the table at a time, so pruning stays rare)."""
        buckets = self._buckets
        for ip in [ip for ip, b in buckets.items() if b.blocked_until <= now and now - b.stamp > 10]:
            del buckets[ip]
        if len(buckets) >= self.max_sources:
            room = max(1, self.max_sources // 10)
            for ip in [ip for ip, b in buckets.items() if b.blocked_until <= now][:room]:
                del buckets[ip]
