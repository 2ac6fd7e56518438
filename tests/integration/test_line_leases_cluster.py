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
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.callflow_server import CallflowServer
from tests.integration.conftest import kamailio_problem, require_peer
from tests.integration.test_seed_flows import MIN_PACKETS
from tests.rig import CALL_CLOSED, CALL_ESTABLISHED, CALL_INCOMING, Kamailio, Phone, PhoneFactory, account_line, ports
from tests.rig.edge import HOST, Edge
from tests.rig.kamailio import TRUNK_DID
from tests.rig.postgres import Postgres, postgres_problem

LEASE_SECONDS = 6  # short, so the take-over happens within a test's patience
WAIT_TAKEOVER = LEASE_SECONDS * 4 + 15  # bounded wait for the survivor's lease and registration


def flow(provider: str, providers_socket: str) -> str:
    # the provider's calls come through the edge's providers' socket (same IP as its phones' socket,
    # another port): the line trusts that socket only, so the phones' calls (through the phones'
    # socket) are the phones' whatever the order of the rules: the line's rule comes first on purpose
    return f"""user alice password "alice-pw"
user bob password "bob-pw"
user carol password "carol-pw"
user dave password "dave-pw"

line itsp1 {{
    server   "{provider}"
    username "trunk1"
    password "s3cret"
    register every 60s
    trust    "{providers_socket}"
}}

on incoming from line itsp1 accept to user alice
on incoming from user any to /^\\+?[0-9]{{7,15}}$/ accept to line itsp1
on incoming from user any to "alice" accept to user alice
on incoming from user any to "bob" accept to user bob
on incoming from user any to "carol" accept to user carol
on incoming from user any to "dave" accept to user dave
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
    edge_port, provider_port = ports.port(), ports.port()
    mark = kamailio.log_mark()
    providers_socket = f"{HOST}:{provider_port}"
    nodes = [CallflowServer(flow(kamailio.hostport, providers_socket), tmp_path / f"node{i}", ports.sip_port(),
                            ports.rtp_range(20),
                            extra_args=["--location-dsn", postgres.dsn, "--cdr-dsn", postgres.dsn,
                                        "--node-id", f"node{i}",
                                        "--lease-seconds", str(LEASE_SECONDS),
                                        "--line-contact", providers_socket])
             for i in range(2)]
    edge = Edge(edge_port, [node.hostport for node in nodes], tmp_path / "edge", provider_port=provider_port,
                provider_nets=kamailio.host + "/32")
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


def cli(node: CallflowServer, *args: str) -> str:
    """`callflow ARGS --control NODE` as an operator runs it against one node: its output."""
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-m", "runtime.cli", *args, "--control", node.control],
                          capture_output=True, text=True, timeout=30, cwd=root, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def lines_api(node: CallflowServer) -> list[dict]:
    with urllib.request.urlopen(f"http://{node.control}/api/lines", timeout=5) as answer:
        return json.loads(answer.read())


def test_one_node_registers_the_line_and_the_other_takes_it_over_when_the_first_is_killed(
        cluster: Cluster, kamailio: Kamailio, phone_factory: PhoneFactory) -> None:
    mark = cluster.provider_mark
    first = first_holder(cluster)
    other = 1 - first
    edge_contact = cluster.edge.provider_hostport
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


# ---- a node killed during traffic (issue 13) ------------------------------------------------------------
ATTEMPTS = 10  # calls placed at most to get one on a given node (the edge picks by Call-ID hash: 1 in 2)


def connected_ids(node: CallflowServer) -> list[str]:
    return [e["call"] for e in node.events("connected")]


def place(caller: Phone, callee: Phone, number: str, cluster: Cluster) -> tuple[int, str]:
    """Dial `number` from `caller` through the edge, `callee` answers; returns (node index, call id)."""
    before = [connected_ids(node) for node in cluster.nodes]
    caller.dial(f"sip:{number}@{cluster.edge.hostport}")
    callee.wait_event(CALL_INCOMING, 20)
    callee.accept()
    caller.wait_event(CALL_ESTABLISHED, 10)
    callee.wait_event(CALL_ESTABLISHED, 10)
    for _ in range(100):  # the node logs `connected` as it relays the 200; bounded, 10 s
        for i, node in enumerate(cluster.nodes):
            new = [c for c in connected_ids(node) if c not in before[i]]
            if new:
                return i, new[0]
        time.sleep(0.1)
    raise AssertionError("no node logged the call as connected")


def end(caller: Phone, callee: Phone) -> None:
    """Both sides hang up (a call on a dead node: nobody relays the BYE, so each side ends its own)."""
    caller.hangup()
    caller.wait_event(CALL_CLOSED, 10)
    try:
        callee.hangup()
    except AssertionError:
        pass  # already closed by the caller's BYE
    callee.wait_event(CALL_CLOSED, 40)


def place_on(node_index: int, caller: Phone, callee: Phone, number: str, cluster: Cluster) -> str:
    """Place calls until one is carried by node `node_index` (bounded); the others are ended."""
    for _ in range(ATTEMPTS):
        where, call = place(caller, callee, number, cluster)
        if where == node_index:
            return call
        caller.hangup()
        caller.wait_event(CALL_CLOSED, 10)
        callee.wait_event(CALL_CLOSED, 10)
    raise AssertionError(f"no call reached node{node_index} in {ATTEMPTS} attempts")


def cdr_rows(postgres: Postgres) -> dict[str, list[tuple]]:
    """call id -> its rows (ended_at, hangup_reason, node)."""
    import psycopg

    with psycopg.connect(postgres.dsn) as conn:
        rows = conn.execute("SELECT call_id, ended_at, hangup_reason, node FROM call_record").fetchall()
    out: dict[str, list[tuple]] = {}
    for call_id, *rest in rows:
        out.setdefault(call_id, []).append(tuple(rest))
    return out


def test_a_node_killed_during_traffic_loses_only_its_own_calls_and_no_call_record_is_lost_or_doubled(
        cluster: Cluster, kamailio: Kamailio, postgres: Postgres, phone_factory: PhoneFactory) -> None:
    edge = cluster.edge.hostport
    holder = first_holder(cluster)
    survivor_index = 1 - holder
    killed, survivor = cluster.nodes[holder], cluster.nodes[survivor_index]
    phones = {name: phone_factory(account_line(name, edge, auth_pass=f"{name}-pw"), name=name)
              for name in ("alice", "bob", "carol", "dave")}
    for phone in phones.values():
        phone.wait_registered()
    pstn = phone_factory(kamailio.account_line("pstn"), name="pstn")
    pstn.wait_registered()
    alice, bob, carol, dave = (phones[n] for n in ("alice", "bob", "carol", "dave"))

    # traffic: a call on each node, up at once
    on_survivor = place_on(survivor_index, bob, alice, "alice", cluster)
    on_killed = place_on(holder, dave, carol, "carol", cluster)
    time.sleep(1.0)  # both calls talking (RTP) when the node dies
    kill(killed)

    # the call on the other node goes on: it is still up, ends with a BYE through the edge, voice both ways
    time.sleep(1.0)
    end(bob, alice)
    survivor.wait_event("closed", call=on_survivor)
    assert alice.rtp_stats().rx_packets >= MIN_PACKETS and bob.rtp_stats().rx_packets >= MIN_PACKETS
    end(dave, carol)  # the killed node's call: its phones give up on it

    # the survivor takes the line within a lease period, and a provider's call reaches alice through it
    survivor.wait_event("line_lease_acquired", timeout=WAIT_TAKEOVER, line="itsp1")
    survivor.wait_event("line_registered", timeout=WAIT_TAKEOVER, line="itsp1")
    before = connected_ids(survivor)
    pstn.dial(f"sip:{TRUNK_DID}@{kamailio.hostport}")
    alice.wait_event(CALL_INCOMING, 20)
    alice.accept()
    pstn.wait_event(CALL_ESTABLISHED, 10)
    pstn.hangup()
    pstn.wait_event(CALL_CLOSED, 10)
    alice.wait_event(CALL_CLOSED, 10)
    # and a new call between phones (neither registered again) is taken by the survivor
    where, _ = place(dave, carol, "carol", cluster)
    assert where == survivor_index
    end(dave, carol)
    new_calls = [c for c in connected_ids(survivor) if c not in before]
    assert len(new_calls) == 2, new_calls
    survivor.assert_alive()

    # the records: every call answered on either node has exactly one row; the survivor's are complete,
    # the killed node's call in progress has its row from the answer, without an end
    killed_calls = connected_ids(killed)
    closed_on_killed = {e["call"] for e in killed.events("closed")}
    survivor_calls = connected_ids(survivor)
    survivor.stop()  # its writer flushes the last records
    rows = cdr_rows(postgres)
    for call in survivor_calls + killed_calls:
        assert len(rows.get(call, [])) == 1, (call, rows.get(call))
    for call in survivor_calls:
        assert rows[call][0][0] is not None, (call, rows[call])
    assert on_killed not in closed_on_killed
    assert rows[on_killed][0][0] is None and rows[on_killed][0][2] == f"node{holder}"

    # the killed node, started again under its name, marks that call's record: its end is unknown
    killed.start()
    killed.wait_event("cdr_orphans", node=f"node{holder}")
    assert cdr_rows(postgres)[on_killed][0][1] == "node_lost"


# ---- calls out through a line another node registers (issue 13) -----------------------------------------
OUT_NUMBER = "+15557654321"


def test_a_phone_on_the_node_without_the_lease_calls_out_through_the_line_with_voice_both_ways(
        cluster: Cluster, kamailio: Kamailio, phone_factory: PhoneFactory) -> None:
    holder = first_holder(cluster)
    other = 1 - holder
    kamailio.wait_registered("trunk1", since=cluster.provider_mark)
    carrier = cluster.nodes[other]
    # the node without the lease says it carries the line's calls, registered by the holder
    for _ in range(100):  # bounded: 10 s for its lease machine to learn the holder
        [line] = lines_api(carrier)
        if line["lease"].get("carried"):
            break
        time.sleep(0.1)
    assert line["lease"]["carried"] and line["lease"]["holder"] == f"node{holder}", line
    assert f"carried, registered by node{holder}" in cli(carrier, "status")
    assert not carrier.events("line_registered")  # carrying calls is not registering

    alice = phone_factory(account_line("alice", cluster.edge.hostport, auth_pass="alice-pw"), name="alice")
    alice.wait_registered()
    pstn = phone_factory(kamailio.account_line("pstn"), name="pstn")
    pstn.wait_registered()
    # the edge picks a node by Call-ID: place calls until one is carried by the node without the lease
    call = place_on(other, alice, pstn, OUT_NUMBER, cluster)
    time.sleep(1.5)  # talk
    alice.hangup()
    alice.wait_event(CALL_CLOSED, 10)
    pstn.wait_event(CALL_CLOSED, 10)
    closed = carrier.wait_event("closed", call=call)
    assert closed
    assert alice.rtp_stats().rx_packets >= MIN_PACKETS and pstn.rtp_stats().rx_packets >= MIN_PACKETS
    # the provider saw the INVITE authenticated with the line's account, from the node without the lease
    assert "trunk call to" in kamailio.log_text()
    assert not carrier.events("line_registered")
    carrier.assert_alive()


# ---- the providers' calls told apart at the edge (issue 13) ----------------------------------------------
def test_a_phone_cannot_make_its_call_look_like_the_providers_through_the_providers_socket(
        cluster: Cluster) -> None:
    """The nodes trust the edge's providers' socket as the line's: the edge serves there only the
    providers' networks (PROVIDER_NETS) and the nodes, so a phone that found that address is refused
    and no node ever sees its request."""
    from tests.rig.edge import RawPhone

    first_holder(cluster)
    phone = RawPhone("mallory", "guess", bind="127.0.0.3")  # not in PROVIDER_NETS (the provider's 127.0.0.1)
    try:
        provider_socket = cluster.edge.provider_hostport
        answer = phone.request(provider_socket, "INVITE", f"sip:{TRUNK_DID}@{provider_socket}")
        assert answer.status == 403 and "provider" in answer.reason.lower(), answer
        # through the phones' socket the same INVITE is a phone's: challenged, not taken for the line's
        answer = phone.request(cluster.edge.hostport, "INVITE", f"sip:{TRUNK_DID}@{cluster.edge.hostport}")
        assert answer.status in (403, 404), answer  # a wrong password / nobody to call: not the line's route
    finally:
        phone.close()
    for node in cluster.nodes:
        assert not [e for e in node.events("incoming") if e.get("peer_type") == "LINE"], node.events("incoming")
    assert "not in PROVIDER_NETS" in cluster.edge.log_text()
