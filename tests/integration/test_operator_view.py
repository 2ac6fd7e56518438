"""An operator looking into a running server while a call is up: `callflow status` and `callflow calls`
(tables and --json), the HTTP JSON views, Prometheus /metrics, and the live page in headless Chromium
(a screenshot is written by the test). Real peers: Kamailio as the provider, baresip as the phones."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.callflow_server import CallflowServer
from tests.integration.conftest import require_peer
from tests.integration.test_seed_flows import OUT_NUMBER, callflow, office  # noqa: F401 - the fixture
from tests.rig import CALL_CLOSED, CALL_ESTABLISHED, CALL_INCOMING, Kamailio, Phone, PhoneFactory
from tests.rig.proc import wait_until

ROOT = Path(__file__).resolve().parents[2]


def cli(server: CallflowServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "runtime.cli", *args, "--control", server.control],
                          capture_output=True, text=True, timeout=30, cwd=ROOT, env=env)


def http(server: CallflowServer, path: str) -> str:
    with urllib.request.urlopen(f"http://{server.control}{path}", timeout=5) as response:  # noqa: S310
        return response.read().decode()


@pytest.fixture
def call_up(kamailio: Kamailio, phone_factory: PhoneFactory,
            callflow: Callable[..., CallflowServer]) -> Iterator[tuple[CallflowServer, Phone, Phone]]:  # noqa: F811
    """alice (registered to Callflow) talking to pstn (at the provider) through line itsp1."""
    server, alice, pstn = office(kamailio, phone_factory, callflow)
    alice.dial(f"sip:{OUT_NUMBER}@{server.hostport}")
    pstn.wait_event(CALL_INCOMING, 10)
    pstn.accept()
    alice.wait_event(CALL_ESTABLISHED, 10)
    yield server, alice, pstn
    alice.hangup()
    pstn.wait_event(CALL_CLOSED, 10)


def test_status_calls_and_metrics_show_the_running_call(call_up: tuple[CallflowServer, Phone, Phone]) -> None:
    server, alice, pstn = call_up
    status = cli(server, "status")
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert any(row.split()[:2] == ["itsp1", "registered"] for row in lines), status.stdout
    assert any(row.startswith("alice ") and "sip:alice" in row for row in lines), status.stdout
    assert "1 active call" in status.stdout

    calls = json.loads(cli(server, "calls", "--json").stdout)
    assert len(calls) == 1
    call = calls[0]
    assert call["to"] == OUT_NUMBER
    legs = {leg["channel"]: leg for leg in call["legs"]}
    assert (legs["ZERO"]["peer_type"], legs["ZERO"]["peer"]) == ("USER", "alice")
    assert (legs["ONE"]["peer_type"], legs["ONE"]["peer"]) == ("LINE", "itsp1")
    table = cli(server, "calls").stdout
    assert call["call"] in table and "user alice" in table and "line itsp1" in table

    metrics = http(server, "/metrics")
    assert "callflow_calls_active 1.0" in metrics
    assert 'callflow_line_state{line="itsp1",state="registered"} 1.0' in metrics
    assert "callflow_registered_contacts 1.0" in metrics
    assert "callflow_call_setup_seconds_count 1.0" in metrics

    users = json.loads(http(server, "/api/users"))
    assert [u["user"] for u in users if u["contacts"]] == ["alice"]
    server.assert_alive()


def test_a_closed_call_is_counted_by_its_outcome(call_up: tuple[CallflowServer, Phone, Phone]) -> None:
    server, alice, pstn = call_up
    pstn.hangup()
    alice.wait_event(CALL_CLOSED, 10)
    server.wait_event("closed")
    assert wait_until(lambda: 'callflow_calls_total{outcome="answered"} 1.0' in http(server, "/metrics"), 5)
    metrics = http(server, "/metrics")
    assert "callflow_calls_active 0.0" in metrics
    assert 'callflow_call_hangups_total{cause="bye",channel="ONE"} 1.0' in metrics
    assert "no active calls" in cli(server, "calls").stdout
    alice.dial(f"sip:{OUT_NUMBER}@{server.hostport}")  # so the fixture's hang-up has a call to end
    pstn.wait_event(CALL_INCOMING, 10)
    pstn.accept()
    alice.wait_event(CALL_ESTABLISHED, 10)


def chromium_binary() -> str | None:
    return os.environ.get("RIG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    """Debian's Chromium, headless, with a fresh profile; root needs --no-sandbox."""
    exe = chromium_binary()
    assert exe is not None
    with tempfile.TemporaryDirectory(prefix="callflow-chromium-") as profile:
        return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                               "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}",
                               "--window-size=1280,900", "--virtual-time-budget=5000", *args],
                              capture_output=True, text=True, timeout=90)


def test_live_page_shows_lines_phones_the_call_and_the_routing(call_up: tuple[CallflowServer, Phone, Phone],
                                                               tmp_path: Path) -> None:
    require_peer("chromium", None if chromium_binary() else "no chromium executable")
    server, alice, pstn = call_up
    url = f"http://{server.control}/"
    dom = chromium("--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    assert 'id="status" class="">live' in page, page[-3000:]  # the page's script fetched and rendered
    calls = json.loads(http(server, "/api/calls"))
    assert calls and calls[0]["call"] in page                   # the active call, by its id
    for text in ("itsp1", "registered", "alice", "sip:alice", OUT_NUMBER, "accept to line itsp1"):
        assert text in page, text
    shot = tmp_path / "control-page.png"
    result = chromium(f"--screenshot={shot}", url)
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    artifacts = os.environ.get("CALLFLOW_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / shot.name)
    server.assert_alive()
