"""Two Callflow nodes behind the shipped Kamailio edge, bindings in PostgreSQL, media in rtpengine.

Every process is real and started here on 127.0.0.1: PostgreSQL (Debian's), rtpengine-daemon (user
space), two `callflow run` nodes on one `--location-dsn` and one `--media rtpengine:...`, Kamailio with
deploy/kamailio-edge.cfg as shipped, and baresip phones that know only the edge's address.

What a user would observe: phones register through the edge; a call between them rings and carries
voice both ways, relayed by rtpengine; when the node that carried a call is killed, the next call is
taken by the other node (after the edge's failover or its probing took the dead one out) and reaches
the phone without it registering again.
"""

from __future__ import annotations

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
from tests.integration.test_rtpengine_media import assert_voice_went_through_rtpengine
from tests.integration.test_seed_flows import MIN_PACKETS, TALK_SECONDS
from tests.rig import CALL_CLOSED, CALL_ESTABLISHED, CALL_INCOMING, Phone, PhoneFactory, account_line, ports
from tests.rig.edge import Edge, RawPhone
from tests.rig.postgres import Postgres, postgres_problem
from tests.rig.rtpengine import Rtpengine, rtpengine_problem

FLOW = """user alice password "alice-pw"
user bob password "bob-pw"
on incoming to "alice" accept to user alice
on incoming to "bob" accept to user bob
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


@pytest.fixture(scope="module")
def rtpengine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rtpengine]:
    require_peer("rtpengine", rtpengine_problem())
    relay = Rtpengine(ports.port(), ports.rtp_range(40), tmp_path_factory.mktemp("rtpengine") / "rtpengine.log")
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()


class Cluster:
    def __init__(self, nodes: list[CallflowServer], edge: Edge) -> None:
        self.nodes, self.edge = nodes, edge

    def node_that_connected(self, since: list[int]) -> int:
        """Index of the node whose log has a `connected` event after `since` (one offset per node)."""
        for i, node in enumerate(self.nodes):
            if any(True for _ in node.events("connected")[since[i]:]):
                return i
        raise AssertionError("no node connected the call:\n" + self.edge.log_text()[-3000:])

    def marks(self) -> list[int]:
        return [len(node.events("connected")) for node in self.nodes]


@pytest.fixture
def cluster(postgres: Postgres, rtpengine: Rtpengine, tmp_path: Path) -> Iterator[Cluster]:
    require_peer("kamailio", kamailio_problem())
    nodes = [CallflowServer(FLOW, tmp_path / f"node{i}", ports.sip_port(), ports.rtp_range(20),
                            extra_args=["--location-dsn", postgres.dsn, "--media", f"rtpengine:{rtpengine.address}"])
             for i in range(2)]
    edge = Edge(ports.port(), [node.hostport for node in nodes], tmp_path / "edge")
    try:
        for node in nodes:
            node.start()
        edge.start()
        yield Cluster(nodes, edge)
    finally:
        edge.stop()
        for node in nodes:
            node.stop()


def kill(node: CallflowServer) -> None:
    """The node dies at once (no BYE, no un-REGISTER): SIGKILL to its process group."""
    proc = node._proc
    assert proc is not None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(5)


def call(caller: Phone, callee: Phone, number: str, edge: Edge) -> None:
    caller.dial(f"sip:{number}@{edge.hostport}")
    callee.wait_event(CALL_INCOMING, 15)
    callee.accept()
    caller.wait_event(CALL_ESTABLISHED, 10)
    callee.wait_event(CALL_ESTABLISHED, 10)
    time.sleep(TALK_SECONDS)
    caller.hangup()
    caller.wait_event(CALL_CLOSED, 10)
    callee.wait_event(CALL_CLOSED, 10)


def test_phones_behind_the_edge_call_each_other_through_a_node_with_voice_in_rtpengine_and_survive_its_death(
        cluster: Cluster, phone_factory: PhoneFactory, rtpengine: Rtpengine) -> None:
    edge = cluster.edge
    alice = phone_factory(account_line("alice", edge.hostport, auth_pass="alice-pw"), name="alice")
    alice.wait_registered()
    bob = phone_factory(account_line("bob", edge.hostport, auth_pass="bob-pw"), name="bob")
    bob.wait_registered()
    assert "with Path" in edge.log_text()

    mark, log_mark = cluster.marks(), len(rtpengine.log.read_text(errors="replace"))
    call(bob, alice, "alice", edge)
    first = cluster.node_that_connected(mark)
    stats = alice.rtp_stats(), bob.rtp_stats()
    assert all(s.rx_packets >= MIN_PACKETS for s in stats), stats
    assert_voice_went_through_rtpengine(rtpengine, log_mark)

    kill(cluster.nodes[first])
    mark = cluster.marks()
    call(bob, alice, "alice", edge)  # no new REGISTER: alice's binding is in PostgreSQL
    assert cluster.node_that_connected(mark) == 1 - first
    stats = alice.rtp_stats(), bob.rtp_stats()
    assert all(s.rx_packets >= MIN_PACKETS for s in stats), stats
    cluster.nodes[1 - first].assert_alive()


def callflow_cli(node: CallflowServer, *args: str) -> str:
    """`callflow ARGS --control NODE`, as an operator runs it against one node: its output."""
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-m", "runtime.cli", *args, "--control", node.control],
                          capture_output=True, text=True, timeout=30, cwd=root, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_nodes_on_one_shared_script_folder_reload_an_edit_to_the_same_version(tmp_path: Path) -> None:
    shared = tmp_path / "flows"
    shared.mkdir()
    (shared / "main.flow").write_text(FLOW)
    nodes = [CallflowServer(FLOW, tmp_path / f"node{i}", ports.sip_port(), ports.rtp_range(20)) for i in range(2)]
    try:
        for node in nodes:
            node.flow_path = shared  # `callflow run FOLDER`: every node runs the shared folder
            node.start()
        (shared / "main.flow").write_text(FLOW + 'on incoming to "100" accept to user alice\n')
        versions = {node.wait_event("reloaded", timeout=15)["version"] for node in nodes}
        assert len(versions) == 1 and "" not in versions, versions
        [version] = versions
        # what the operator compares: `callflow status` against each node, and each node's /metrics
        for node in nodes:
            assert f"program {version}," in callflow_cli(node, "status")
            with urllib.request.urlopen(f"http://{node.control}/metrics", timeout=5) as answer:  # noqa: S310
                assert f'callflow_program_version{{version="{version}"}} 1.0' in answer.read().decode()
            node.assert_alive()
    finally:
        for node in nodes:
            node.stop()


PATH_FLOW = """user alice password "alice-pw"
user bob password "bob-pw"
on incoming from user bob to "alice" accept to user alice
"""


def test_a_phone_behind_the_edge_is_reached_from_either_node_through_its_stored_path(
        postgres: Postgres, tmp_path: Path) -> None:
    """alice's Contact names a port nobody listens on (her private address behind NAT): only the Path's
    `received`, which the edge wrote at REGISTER and the node stored in PostgreSQL, leads to her. bob
    sends a MESSAGE to each node in turn; each node finds her binding (whichever node took the REGISTER)
    and sends through the edge, which delivers to her real source."""
    require_peer("kamailio", kamailio_problem())
    nodes = [CallflowServer(PATH_FLOW, tmp_path / f"node{i}", ports.sip_port(), ports.rtp_range(10),
                            extra_args=["--location-dsn", postgres.dsn]) for i in range(2)]
    edge = Edge(ports.port(), [node.hostport for node in nodes], tmp_path / "edge")
    alice, bob = RawPhone("alice", "alice-pw"), RawPhone("bob", "bob-pw")
    try:
        for node in nodes:
            node.start()
        edge.start()
        assert alice.request(edge.hostport, "REGISTER", f"sip:{edge.hostport}").status == 200
        for i, node in enumerate(nodes):
            text = f"hello through node {i}"
            resp = bob.request(node.hostport, "MESSAGE", f"sip:alice@{node.hostport}", f"sip:alice@{node.hostport}",
                               body=text)
            assert resp.status == 200, (resp.status, resp.reason, node.log_text()[-2000:])
            got = alice.wait_request("MESSAGE")
            assert got.body == text.encode()
            assert got.uri == f"sip:alice@127.0.0.1:{alice.contact_port}"  # her Contact, reached by the Path
    finally:
        alice.close()
        bob.close()
        edge.stop()
        for node in nodes:
            node.stop()


def test_with_a_shared_nonce_secret_a_challenge_from_one_node_is_answered_on_the_other(tmp_path: Path) -> None:
    env = {"CALLFLOW_NONCE_SECRET": "a-secret-every-node-shares"}
    nodes = [CallflowServer(PATH_FLOW, tmp_path / f"node{i}", ports.sip_port(), ports.rtp_range(10), env=env)
             for i in range(2)]
    bob = RawPhone("bob", "bob-pw")
    try:
        for node in nodes:
            node.start()
        a, b = nodes[0].hostport, nodes[1].hostport
        resp = bob.request(a, "REGISTER", f"sip:{a}", answer_to=b)  # challenged by a, credentials to b
        assert resp.status == 200, (resp.status, resp.reason)
        assert nodes[1].events("user_registered", user="bob") and not nodes[0].events("user_registered")
    finally:
        bob.close()
        for node in nodes:
            node.stop()


def test_a_password_guesser_behind_the_edge_is_held_by_its_own_address_while_other_phones_register(
        tmp_path: Path) -> None:
    """The guesser sends from 127.0.0.5 and writes a forged `received=127.0.0.9` in its Via: the edge
    overwrites it, the node (started with --edge) holds 127.0.0.5, never the edge, and alice behind
    the same edge (from 127.0.0.6) still registers. One Call-ID for all, so the edge's hash sends them
    to one node."""
    require_peer("kamailio", kamailio_problem())
    edge_port = ports.port()
    nodes = [CallflowServer(PATH_FLOW, tmp_path / f"node{i}", ports.sip_port(), ports.rtp_range(10),
                            extra_args=["--edge", f"127.0.0.1:{edge_port}"]) for i in range(2)]
    edge = Edge(edge_port, [node.hostport for node in nodes], tmp_path / "edge")
    guesser = RawPhone("bob", "not-the-password", bind="127.0.0.5", via_params=";received=127.0.0.9")
    alice = RawPhone("alice", "alice-pw", bind="127.0.0.6")
    try:
        for node in nodes:
            node.start()
        edge.start()
        uri = f"sip:{edge.hostport}"
        codes = [guesser.request(edge.hostport, "REGISTER", uri, call_id="one-node").status for _ in range(11)]
        assert codes == [403] * 10 + [401], codes  # the 11th: held, challenged without a password check
        assert alice.request(edge.hostport, "REGISTER", uri, call_id="one-node").status == 200
        held = [e for node in nodes for e in node.events("attack_detected", kind="brute_force")]
        assert {e.get("ip") for e in held} == {"127.0.0.5"}, held
    finally:
        guesser.close()
        alice.close()
        edge.stop()
        for node in nodes:
            node.stop()
