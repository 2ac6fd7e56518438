"""A line in a cluster: two Callflow nodes share one PostgreSQL, one line, and the shipped Kamailio edge.

Every process is real and started here on 127.0.0.1: PostgreSQL (Debian's), the Kamailio provider rig
(the line's registrar, and its own phone `pstn`), two `callflow run` nodes with `--location-dsn`, the
edge (deploy/kamailio-edge.cfg) in front of them, and baresip phones.

What an operator observes: exactly one node registers the line (the provider holds one contact, the
edge's); when that node is killed, the other takes the lease once it runs out and registers the line,
and a call from the provider's side reaches the phone through the surviving node.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.callflow_server import CallflowServer
from tests.integration.conftest import kamailio_problem, require_peer
from tests.rig import CALL_CLOSED, CALL_ESTABLISHED, CALL_INCOMING, Kamailio, PhoneFactory, account_line, ports
from tests.rig.edge import Edge
from tests.rig.kamailio import TRUNK_DID
from tests.rig.postgres import Postgres, postgres_problem

LEASE_SECONDS = 6  # short, so the take-over happens within a test's patience
WAIT_TAKEOVER = LEASE_SECONDS * 4 + 15  # bounded wait for the survivor's lease and registration


def flow(provider: str) -> str:
    # the provider's calls come through the edge: the line trusts the edge's address
    return f"""user alice password "alice-pw"

line itsp1 {{
    server   "{provider}"
    username "trunk1"
    password "s3cret"
    register every 60s
    trust    "127.0.0.1"
}}

on incoming from line itsp1 accept to user alice
"""


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    require_peer("PostgreSQL", postgres_problem())
    server = Postgres(ports.port())
    try:
        server.start()
        yield server
    finally:
        server.stop()


class Cluster:
    def __init__(self, nodes: list[CallflowServer], edge: Edge, provider_mark: int) -> None:
        self.nodes, self.edge = nodes, edge
        self.provider_mark = provider_mark  # the provider's log before the nodes started


@pytest.fixture
def cluster(postgres: Postgres, kamailio: Kamailio, tmp_path: Path) -> Iterator[Cluster]:
    require_peer("kamailio", kamailio_problem())
    edge_port = ports.port()
    mark = kamailio.log_mark()
    nodes = [CallflowServer(flow(kamailio.hostport), tmp_path / f"node{i}", ports.sip_port(), ports.rtp_range(20),
                            extra_args=["--location-dsn", postgres.dsn, "--node-id", f"node{i}",
                                        "--lease-seconds", str(LEASE_SECONDS),
                                        "--line-contact", f"127.0.0.1:{edge_port}"])
             for i in range(2)]
    edge = Edge(edge_port, [node.hostport for node in nodes], tmp_path / "edge")
    try:
        for node in nodes:
            node.start()
        edge.start()
        yield Cluster(nodes, edge, mark)
    finally:
        edge.stop()
        for node in nodes:
            node.stop()


def kill(node: CallflowServer) -> None:
    """The node dies at once (no BYE, no un-REGISTER, no lease released): SIGKILL to its process group."""
    proc = node._proc
    assert proc is not None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(5)


def first_holder(cluster: Cluster) -> int:
    """Wait (bounded) until one node registered the line; return its index."""
    for _ in range(300):  # 30 s at most
        for i, node in enumerate(cluster.nodes):
            if node.events("line_registered", line="itsp1"):
                return i
        time.sleep(0.1)
    raise AssertionError("no node registered the line:\n" + cluster.nodes[0].log_text()[-3000:])


def lines_api(node: CallflowServer) -> list[dict]:
    with urllib.request.urlopen(f"http://{node.control}/api/lines", timeout=5) as answer:
        return json.loads(answer.read())


def test_one_node_registers_the_line_and_the_other_takes_it_over_when_the_first_is_killed(
        cluster: Cluster, kamailio: Kamailio, phone_factory: PhoneFactory) -> None:
    mark = cluster.provider_mark
    first = first_holder(cluster)
    other = 1 - first
    edge_contact = f"127.0.0.1:{cluster.edge.port}"
    contact = kamailio.wait_registered("trunk1", since=mark)
    assert edge_contact in contact  # the edge's address: the provider's calls reach either node

    # only the holder registers; the other knows who holds the line
    cluster.nodes[first].wait_event("line_lease_acquired", line="itsp1", node=f"node{first}")
    assert not cluster.nodes[other].events("line_registered")
    assert not cluster.nodes[other].events("line_lease_acquired")
    [line] = lines_api(cluster.nodes[other])
    assert line["lease"]["holder"] == f"node{first}" and not line["lease"]["held_here"]
    [line] = lines_api(cluster.nodes[first])
    assert line["lease"]["held_here"] and line["state"] == "registered"

    alice = phone_factory(account_line("alice", cluster.edge.hostport, auth_pass="alice-pw"), name="alice")
    alice.wait_registered()
    pstn = phone_factory(kamailio.account_line("pstn"), name="pstn")
    pstn.wait_registered()

    kill(cluster.nodes[first])
    survivor = cluster.nodes[other]
    acquired = survivor.wait_event("line_lease_acquired", timeout=WAIT_TAKEOVER, line="itsp1", node=f"node{other}")
    registered = survivor.wait_event("line_registered", timeout=WAIT_TAKEOVER, line="itsp1")
    assert acquired and registered["code"] == "200"
    names = [e["event"] for e in survivor.events() if e.get("event") in ("line_lease_acquired", "line_registered")]
    assert names[:2] == ["line_lease_acquired", "line_registered"]  # the lease first, then the REGISTER
    # every binding the provider granted for the line was the edge's one contact
    contacts = {c for c, expires in kamailio.registrations("trunk1", since=mark) if expires}
    assert contacts and all(edge_contact in c for c in contacts), contacts

    # a call from the provider's side reaches alice through the surviving node (alice did not register again)
    mark_calls = len(survivor.events("connected"))
    pstn.dial(f"sip:{TRUNK_DID}@{kamailio.hostport}")
    alice.wait_event(CALL_INCOMING, 20)
    alice.accept()
    pstn.wait_event(CALL_ESTABLISHED, 10)
    alice.wait_event(CALL_ESTABLISHED, 10)
    pstn.hangup()
    pstn.wait_event(CALL_CLOSED, 10)
    alice.wait_event(CALL_CLOSED, 10)
    assert len(survivor.events("connected")) > mark_calls
    survivor.assert_alive()


def test_a_clean_stop_unregisters_the_line_and_hands_the_lease_over(
        cluster: Cluster, kamailio: Kamailio) -> None:
    first = first_holder(cluster)
    other = 1 - first
    cluster.nodes[first].stop()
    unregistered = cluster.nodes[first].wait_event("line_unregistered", line="itsp1")
    assert unregistered["code"] == "200"
    survivor = cluster.nodes[other]
    survivor.wait_event("line_lease_acquired", timeout=WAIT_TAKEOVER, line="itsp1")
    survivor.wait_event("line_registered", timeout=WAIT_TAKEOVER, line="itsp1")
    survivor.assert_alive()
