"""Locating a provider as RFC 3263 says, against a real DNS server (dnsmasq, Debian package
dnsmasq-base) started by the test on 127.0.0.1: NAPTR -> SRV -> A, priority and weight order, a
port that skips SRV, and a line that fails over to the second server when the first is down."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dns.asyncresolver
import pytest

from runtime.engine import Engine
from runtime.lines import LineConfig
from runtime.lines import dns as line_dns
from runtime.sip.message import create_response, parse_message
from runtime.transport import ListenSpec
from tests.rig import ports

ZONE = "itsp.test"


def dnsmasq_binary() -> str | None:
    return shutil.which("dnsmasq") or next((p for p in ("/usr/sbin/dnsmasq",) if os.path.exists(p)), None)


@pytest.fixture
def dns_server(tmp_path: Path) -> Iterator[tuple[int, int, int]]:
    """dnsmasq answering for itsp.test: NAPTR -> _sip._udp.itsp.test -> gw1 (priority 10) and gw2
    (priority 20), both 127.0.0.1 on their own ports; `direct.itsp.test` has only an A record.
    Yields (dns port, gw1 port, gw2 port); the resolver of runtime.lines.dns points at it."""
    binary = dnsmasq_binary()
    if binary is None:
        message = "dnsmasq not installed (Debian package dnsmasq-base; .ci/install-peers.sh installs it)"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"CI: {message}", pytrace=False)
        pytest.skip(message)
    port, gw1, gw2 = ports.port(), ports.port(), ports.port()
    cmd = [binary, "--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-poll", "--pid-file=",
           f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces", "--log-facility=-",
           f"--host-record=gw1.{ZONE},127.0.0.1", f"--host-record=gw2.{ZONE},127.0.0.1",
           f"--host-record=direct.{ZONE},127.0.0.1",
           f"--srv-host=_sip._udp.{ZONE},gw1.{ZONE},{gw1},10,0",
           f"--srv-host=_sip._udp.{ZONE},gw2.{ZONE},{gw2},20,0",
           f"--naptr-record={ZONE},10,10,S,SIP+D2U,,_sip._udp.{ZONE}",
           f"--naptr-record={ZONE},20,10,S,SIP+D2T,,_sip._tcp.{ZONE}"]
    if os.geteuid() == 0:
        cmd.append("--user=root")
    log = open(tmp_path / "dnsmasq.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port
    resolver.lifetime = 2.0
    try:
        for _ in range(100):  # bounded: until it answers
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                    probe.bind(("127.0.0.1", port))
                time.sleep(0.05)  # still free: dnsmasq has not bound it yet
            except OSError:
                break
        line_dns.set_resolver(resolver)
        yield port, gw1, gw2
    finally:
        line_dns.set_resolver(None)
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def test_a_name_is_located_through_naptr_and_srv_in_priority_order(dns_server: tuple[int, int, int]) -> None:
    _, gw1, gw2 = dns_server
    targets = asyncio.run(line_dns.locate(ZONE, 5060, "udp"))
    assert [(t.host, t.port) for t in targets] == [("127.0.0.1", gw1), ("127.0.0.1", gw2)]
    assert targets[0].source == f"SRV _sip._udp.{ZONE}"


def test_a_name_with_its_own_port_is_an_a_lookup(dns_server: tuple[int, int, int]) -> None:
    targets = asyncio.run(line_dns.locate(f"direct.{ZONE}", 5099, "udp"))
    assert [(t.host, t.port, t.source) for t in targets] == [("127.0.0.1", 5099, f"A direct.{ZONE}")]


def test_a_name_dns_does_not_know_is_an_error_naming_it(dns_server: tuple[int, int, int]) -> None:
    with pytest.raises(line_dns.LocateError, match=f"nothere.{ZONE}"):
        asyncio.run(line_dns.locate(f"nothere.{ZONE}", 5060, "udp"))


@pytest.mark.parametrize(("pick", "first"), [(0.3, "b"), (0.5, "a")])
def test_srv_records_of_one_priority_are_picked_by_weight(pick: float, first: str) -> None:
    # running sums in RFC 2782's order: b 40, a 100; a draw of 30 picks b, one of 50 picks a
    records = [(10, 60, 5060, "a"), (10, 40, 5060, "b"), (20, 0, 5060, "c")]
    assert [t for _, t in line_dns.order_srv(records, rng=lambda: pick)][0] == first
    assert [t for _, t in line_dns.order_srv(records, rng=lambda: pick)][-1] == "c"


async def failover_session(gw2: socket.socket) -> list:  # type: ignore[type-arg]
    engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1", rtp_ports=(36700, 36799))
    engine.bus.history = []
    await engine.start()
    engine.add_line(LineConfig("itsp1", ZONE, 5060, "trunk1", "s3cret", register_every=60))
    engine.register_line("itsp1")
    for _ in range(800):  # bounded: gw1's port is closed (ICMP), the 2 s backoff, then gw2
        try:
            data, addr = gw2.recvfrom(65535)
        except BlockingIOError:
            await asyncio.sleep(0.01)
            continue
        req = parse_message(data)
        gw2.sendto(bytes(create_response(req, 200, "OK", to_tag="g2",
                                         headers=[("Contact", f"{req.headers.get('contact')};expires=60")])), addr)
        await asyncio.sleep(0.05)
        break
    history = list(engine.bus.history)
    engine.lines.clear()
    await engine.stop()
    return history


def test_a_line_fails_over_to_the_next_srv_target_when_the_first_is_down(dns_server: tuple[int, int, int]) -> None:
    _, gw1, gw2_port = dns_server
    gw2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    gw2.bind(("127.0.0.1", gw2_port))
    gw2.setblocking(False)
    try:
        history = asyncio.run(failover_session(gw2))
    finally:
        gw2.close()
    names = [e.name for e in history if e.name in ("line_register_failed", "line_failover", "line_registered")]
    assert names == ["line_register_failed", "line_failover", "line_registered"]
    (failover,) = [e for e in history if e.name == "line_failover"]
    assert failover.fields["failed"] == f"127.0.0.1:{gw1}" and failover.fields["next"] == f"127.0.0.1:{gw2_port}"
