"""Locating a provider's SIP servers as RFC 3263 section 4 says: NAPTR, then SRV, then A records.

A line's server may be a name. `locate()` returns the addresses to try in order: NAPTR records for
the line's transport (ordered by order, then preference) lead to SRV names; without NAPTR the SRV
name for the transport is asked directly (`_sip._udp`, `_sip._tcp`, `_sips._tcp`); SRV targets come
in priority order, weighted at random within a priority (RFC 2782); without SRV, the name's A
records with the port. A name written with a port other than the transport's default skips NAPTR
and SRV (RFC 3263 4.2: a port in the URI means an A lookup). IP literals need no DNS at all.

The lookups use dnspython (a well-kept DNS library) on the system's resolver configuration, or on
the resolver `set_resolver()` installed (tests point it at their own DNS server).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver

DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
SERVICES = {"udp": ("SIP+D2U", "_sip._udp"), "tcp": ("SIP+D2T", "_sip._tcp"), "tls": ("SIPS+D2T", "_sips._tcp")}
LOOKUP_LIFETIME = 3.0   # seconds one query may take, retries included
MAX_TARGETS = 16        # a hostile or broken zone cannot make us hold or try more than this

log = logging.getLogger("callflow.lines")

_resolver: dns.asyncresolver.Resolver | None = None
_custom = False   # set_resolver() was called: A records come from it too, not from getaddrinfo


class LocateError(Exception):
    """No address for the provider: the message says which name and what DNS answered."""


@dataclass(frozen=True, slots=True)
class Target:
    """One address to try: `source` says how it was found ("SRV _sip._udp.example.com", "A ...")."""

    host: str
    port: int
    source: str

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)


def set_resolver(resolver: dns.asyncresolver.Resolver | None) -> None:
    """Use `resolver` for every later lookup, A records included (None: the system's configuration
    again, with A records from getaddrinfo so that /etc/hosts counts)."""
    global _resolver, _custom
    _resolver = resolver
    _custom = resolver is not None


def _get_resolver() -> dns.asyncresolver.Resolver | None:
    global _resolver
    if _resolver is None:
        try:
            _resolver = dns.asyncresolver.Resolver()
        except dns.exception.DNSException as exc:  # no /etc/resolv.conf: A records via getaddrinfo only
            log.warning("event=dns_unconfigured error=%r action=\"NAPTR and SRV not looked up\"", str(exc))
            return None
        _resolver.lifetime = LOOKUP_LIFETIME
    return _resolver


def order_srv(records: Sequence[tuple[int, int, int, str]], rng: Callable[[], float] = random.random
              ) -> list[tuple[int, str]]:
    """(priority, weight, port, target) records -> [(port, target)] in the order RFC 2782 gives:
    lowest priority first; within a priority, picked at random with chances in proportion to
    weight (weight 0 only after the others, as the RFC's running sum makes it)."""
    out: list[tuple[int, str]] = []
    for priority in sorted({r[0] for r in records}):
        group = sorted((r for r in records if r[0] == priority), key=lambda r: r[1])  # zeros first
        while group:
            total = sum(r[1] for r in group)
            pick = rng() * total if total else 0.0
            running = 0
            chosen = group[-1]
            for record in group:
                running += record[1]
                if running > pick or (total == 0):
                    chosen = record
                    break
            group.remove(chosen)
            out.append((chosen[2], chosen[3]))
    return out


async def locate(host: str, port: int, transport: str = "udp") -> list[Target]:
    """The provider's addresses to try, in order (see the module docstring). Raises LocateError when
    DNS gives none."""
    try:
        ipaddress.ip_address(host)
        return [Target(host, port, "address")]
    except ValueError:
        pass
    resolver = _get_resolver()
    targets: list[Target] = []
    if resolver is not None and port == DEFAULT_PORTS.get(transport, 5060):
        try:
            for srv_name in await _naptr(resolver, host, transport) or [f"{SERVICES[transport][1]}.{host}"]:
                for srv_port, target in await _srv(resolver, srv_name):
                    for address in await _a(resolver, target):
                        targets.append(Target(address, srv_port, f"SRV {srv_name}"))
                if targets:
                    break
        except LocateError as exc:
            # a DNS server that cannot answer NAPTR/SRV must not cost us the A record
            log.warning("event=dns_failed name=%s error=%r action=\"trying A records\"", host, str(exc))
    if not targets:
        targets = [Target(address, port, f"A {host}") for address in await _a(resolver, host)]
    if not targets:
        raise LocateError(f"DNS has no address for {host} (NAPTR, SRV and A looked up)")
    unique = list(dict.fromkeys(targets))  # one address reached through two SRV names: try it once
    return unique[:MAX_TARGETS]


async def _naptr(resolver: dns.asyncresolver.Resolver, host: str, transport: str) -> list[str]:
    service = SERVICES[transport][0]
    answer = await _query(resolver, host, "NAPTR")
    records = []
    for r in answer:
        if r.flags.decode().lower() == "s" and r.service.decode().upper() == service:
            records.append((r.order, r.preference, r.replacement.to_text(omit_final_dot=True)))
    return [name for _, _, name in sorted(records)]


async def _srv(resolver: dns.asyncresolver.Resolver, name: str) -> list[tuple[int, str]]:
    answer = await _query(resolver, name, "SRV")
    records = [(r.priority, r.weight, r.port, r.target.to_text(omit_final_dot=True)) for r in answer]
    # "." as the only target: the service is decidedly not available at this domain (RFC 2782)
    return [(p, t) for p, t in order_srv(records) if t not in ("", ".")]


async def _a(resolver: dns.asyncresolver.Resolver | None, name: str) -> list[str]:
    try:
        ipaddress.ip_address(name)
        return [name]
    except ValueError:
        pass
    if resolver is not None and _custom:
        return [r.address for r in await _query(resolver, name, "A")]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(name, None, type=socket.SOCK_DGRAM,
                                                             family=socket.AF_INET)
    except OSError as exc:
        raise LocateError(f"cannot resolve {name}: {exc}") from None
    return list(dict.fromkeys(info[4][0] for info in infos))


async def _query(resolver: dns.asyncresolver.Resolver, name: str, rdtype: str) -> list:  # type: ignore[type-arg]
    """The records, or [] when the name or the type does not exist; other DNS failures raise
    LocateError (a timeout must not look like 'no SRV, use A')."""
    try:
        answer = await resolver.resolve(name, rdtype, search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as exc:
        raise LocateError(f"DNS {rdtype} lookup of {name} failed: {exc}") from None
    return list(answer)[: MAX_TARGETS * 4]
