"""The control endpoint as an operator's tools see it: JSON views, reload, /metrics, the token rule,
and the `callflow status | calls | reload | version` commands, on a real engine over loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from callflow.flowrun.dialplan import Dialplan
from callflow.flowrun.reload import Reloader
from callflow.sdk import SipServer
from flowlang import FlowError, compile_source
from runtime.control import ControlAddress, ControlError, ControlServer, make_state
from runtime.control.client import render_calls, render_status
from runtime.control.server import check_exposure
from runtime.engine import Engine
from runtime.registrar import Binding
from runtime.transport import ListenSpec

ROOT = Path(__file__).resolve().parents[2]
FLOW = """user alice password "alice-pw"
user bob password "bob-pw"
line itsp1 {
    server "127.0.0.1:9"
    username "trunk1"
    password "s3cret"
    register every 60s
}
on incoming from user any to /^[0-9]+$/ accept to line itsp1
"""


def callflow(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "runtime.cli", *args], capture_output=True, text=True,
                          timeout=30, cwd=ROOT, env=dict(os.environ, **(env or {})))


Scenario = Callable[[Engine, str, Any], Awaitable[None]]


def with_server(scenario: Scenario, *, flow_path: Path | None = None, token: str | None = None) -> None:
    """Run `scenario(engine, base_url, state)` against a started engine (program loaded, no line
    registration sent) and its control endpoint on 127.0.0.1:<free port>."""

    async def main() -> None:
        engine = Engine(listen=[ListenSpec("udp", "127.0.0.1", 0)], advertise="127.0.0.1",
                        rtp_ports=(36700, 36719), admission_control=False)
        await engine.start()
        loop = asyncio.get_running_loop()
        dialplan = Dialplan(SipServer(engine=engine))
        reloader = None
        if flow_path is not None:
            reloader = Reloader(flow_path, dialplan.load, loop)
            program = reloader.load_initial()
        else:
            program = compile_source(FLOW, "office.flow")
        # the program's users and lines, without starting the line's registrations
        engine.program = program
        for name, user in program.users.items():
            engine.add_user(name, user.password)
        state = make_state(engine, reloader)
        control = ControlServer(state, ControlAddress("127.0.0.1", 0), token)
        host, port = await control.start()
        try:
            await scenario(engine, f"http://{host}:{port}", state)
        finally:
            await control.stop()
            state.metrics.detach()
            await engine.stop()

    asyncio.run(main())


async def get_json(url: str, **kwargs: Any) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url, **kwargs) as response:
        assert response.status == 200, await response.text()
        return await response.json()


def test_program_view_gives_the_version_id_and_files() -> None:
    async def scenario(engine: Engine, base: str, state: Any) -> None:
        program = await get_json(base + "/api/program")
        assert program["version"] == engine.program.source_hash[:12]  # type: ignore[attr-defined]
        assert program["files"] == ["office.flow"]
        assert program["last_reload_error"] is None and program["loaded_at"] > 0

    with_server(scenario)


def test_users_view_lists_each_user_with_its_live_contacts_and_expiry() -> None:
    async def scenario(engine: Engine, base: str, state: Any) -> None:
        engine.registrar.store.put(Binding("alice", "sip:alice@192.0.2.7:5062", ("192.0.2.7", 5062), "udp",
                                           engine.now() + 120, "cid", 1, "baresip"))
        users = {u["user"]: u for u in await get_json(base + "/api/users")}
        assert users["bob"]["contacts"] == []
        (contact,) = users["alice"]["contacts"]
        assert contact["contact"] == "sip:alice@192.0.2.7:5062" and contact["address"] == "192.0.2.7:5062"
        assert 100 < contact["expires_in"] <= 120

    with_server(scenario)


class _Provider(asyncio.DatagramProtocol):
    """A scripted provider: answers every REGISTER with 503 (a failure that is retried with backoff)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        head = data.decode().split("\r\n\r\n", 1)[0].split("\r\n")
        keep = [h for h in head[1:] if h.split(":", 1)[0].lower() in ("via", "from", "to", "call-id", "cseq")]
        answer = "\r\n".join(["SIP/2.0 503 Service Unavailable", *keep, "Content-Length: 0", "", ""])
        self.transport.sendto(answer.encode(), addr)  # type: ignore[attr-defined]


def test_lines_view_shows_the_last_failure_and_the_backoff_before_the_next_attempt() -> None:
    async def scenario(engine: Engine, base: str, state: Any) -> None:
        from runtime.lines import LineConfig

        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(_Provider, local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        try:
            engine.add_line(LineConfig("itsp1", "127.0.0.1", port, "trunk1", "s3cret"))
            engine.register_line("itsp1")
            for _ in range(100):  # bounded: the 503 comes back within milliseconds
                if engine.lines["itsp1"].state == "failed_waiting":
                    break
                await asyncio.sleep(0.02)
            (line,) = await get_json(base + "/api/lines")
        finally:
            transport.close()
        assert line["line"] == "itsp1" and line["server"] == f"127.0.0.1:{port}"
        assert line["state"] == "failed_waiting" and line["last_response"] == "503 Service Unavailable"
        assert line["backoff"] > 0 and line["next_attempt"] is not None and line["failures"] == 1

    with_server(scenario)


class _Call:
    """A call session as the call layer will give it: only its snapshot matters here."""

    id = "3f2a9c01"
    peer_type, peer_name = "USER", "alice"

    def snapshot(self) -> dict[str, Any]:
        return {"call": self.id, "state": "connected", "created_at": 1000.0, "answered_at": 1002.0,
                "duration": 12.5, "caller": "alice", "to": "+15557654321",
                "legs": [{"channel": "ZERO", "peer_type": "USER", "peer": "alice", "address": "127.0.0.1:5062",
                          "transport": "udp", "codec": "PCMU"},
                         {"channel": "ONE", "peer_type": "LINE", "peer": "itsp1", "address": "127.0.0.1:5080",
                          "transport": "udp", "codec": "PCMU"}]}


def test_calls_view_lists_active_calls_with_their_legs() -> None:
    async def scenario(engine: Engine, base: str, state: Any) -> None:
        engine.calls["3f2a9c01"] = _Call()  # type: ignore[assignment]
        try:
            (call,) = await get_json(base + "/api/calls")
        finally:
            engine.calls.clear()
        assert call["call"] == "3f2a9c01" and call["state"] == "connected"
        assert [leg["peer"] for leg in call["legs"]] == ["alice", "itsp1"]

    with_server(scenario)


class _Records:
    """The call-records store as the records layer gives it: recent(limit), newest first."""

    def recent(self, limit: int) -> list[dict[str, Any]]:
        return [{"call": "c9", "outcome": "answered", "code": 200, "duration": 42.0}][:limit]


def test_state_carries_recent_call_records_when_the_server_keeps_them() -> None:
    async def scenario(engine: Engine, base: str, state: Any) -> None:
        assert (await get_json(base + "/api/state"))["records"] is None  # none kept: the page hides them
        engine.records = _Records()  # type: ignore[attr-defined]
        records = (await get_json(base + "/api/state?limit=5"))["records"]
        assert records == [{"call": "c9", "outcome": "answered", "code": 200, "duration": 42.0}]

    with_server(scenario)


def test_calls_table_reads_at_a_glance() -> None:
    text = render_calls([_Call().snapshot()])
    header, row = text.splitlines()
    assert header.split()[:3] == ["CALL", "STATE", "AGE"]
    assert "3f2a9c01" in row and "user alice" in row and "line itsp1" in row and "12s" in row and "PCMU" in row
    assert render_calls([]) == "no active calls"


def test_status_text_names_the_program_lines_and_phones() -> None:
    state = {"program": {"version": "abc123def456", "files": ["office.flow"], "loaded_at": 100.0,
                         "started_at": 90.0, "last_reload_error": None, "server_version": "0.1.0"},
             "lines": [{"line": "itsp1", "state": "failed", "server": "127.0.0.1:5080",
                        "last_response": "403 Forbidden", "next_attempt": 130.0, "backoff": 30.0}],
             "users": [{"user": "alice", "contacts": []}], "calls": []}
    text = render_status(state, now=110.0)
    assert "program abc123def456" in text and "office.flow" in text
    assert "itsp1" in text and "403 Forbidden" in text and "in 20s" in text and "30s" in text
    assert "alice" in text and "not registered" in text and "0 active calls" in text


def test_metrics_count_calls_by_outcome_hangup_cause_and_sip_messages() -> None:
    async def scenario(engine: Engine, base: str, state: Any) -> None:
        from runtime.lines import LineConfig

        engine.add_line(LineConfig("itsp1", "127.0.0.1", 9, "trunk1", "s3cret"))
        bus = engine.bus
        bus.emit("created", call="c1")
        bus.emit("connected", call="c1", peer_type="LINE", peer="itsp1")
        bus.emit("hangup", call="c1", channel="ONE")
        bus.emit("closed", call="c1", reason="hangup")
        bus.emit("created", call="c2")
        bus.emit("failed", call="c2", code=486, reason="Busy Here")
        bus.emit("closed", call="c2", reason="failed")
        bus.emit("attack_detected", kind="scan", ip="192.0.2.9", action="dropped")
        metrics = state.metrics
        metrics.on_message("in", "udp", ("127.0.0.1", 5062), b"INVITE sip:1@x SIP/2.0\r\nVia: x\r\n\r\n")
        metrics.on_message("out", "udp", ("127.0.0.1", 5062),
                           b"SIP/2.0 503 Service Unavailable (overloaded)\r\nVia: x\r\n\r\n")
        async with aiohttp.ClientSession() as session, session.get(base + "/metrics") as response:
            assert response.status == 200
            text = await response.text()
        for sample in ('callflow_calls_total{outcome="answered"} 1.0',
                       'callflow_calls_total{outcome="busy"} 1.0',  # 486: the word `callflow cdr` uses
                       'callflow_call_failures_total{code="486"} 1.0',
                       'callflow_call_hangups_total{cause="bye",channel="ONE"} 1.0',
                       "callflow_call_setup_seconds_count 1.0",
                       'callflow_attacks_detected_total{kind="scan"} 1.0',
                       'callflow_sip_requests_total{direction="in",method="INVITE"} 1.0',
                       'callflow_sip_responses_total{code="503",direction="out"} 1.0',
                       "callflow_admission_sheds_total 1.0",
                       "callflow_calls_active 0.0",
                       'callflow_line_state{line="itsp1",state="unregistered"} 1.0',
                       "callflow_relay_packets_total 0.0"):
            assert sample in text, sample
        counters = await get_json(base + "/api/counters")
        assert counters['callflow_calls_total{outcome=answered}'] == 1.0

    with_server(scenario)


def test_a_message_sent_again_to_the_same_address_counts_as_a_retransmission() -> None:
    from runtime.control.metrics import Metrics

    metrics = Metrics()
    metrics.observing_sip = True
    invite = b"INVITE sip:1@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n"
    metrics.on_message("out", "udp", ("127.0.0.1", 5080), invite)
    metrics.on_message("out", "udp", ("127.0.0.1", 5081), invite)  # elsewhere: a fork, not a resend
    metrics.on_message("out", "udp", ("127.0.0.1", 5080), invite)  # timer A fired
    metrics.on_message("in", "udp", ("127.0.0.1", 5080), invite)   # what peers resend is theirs
    metrics.on_message("in", "udp", ("127.0.0.1", 5080), invite)
    assert metrics.retransmissions == 1
    assert 'callflow_sip_requests_total{direction="out",method="INVITE"} 3.0' in metrics.render().decode()


def test_reload_through_the_endpoint_says_unchanged_reloaded_or_failed(tmp_path: Path) -> None:
    path = tmp_path / "office.flow"
    path.write_text(FLOW)

    async def post(base: str) -> dict[str, Any]:
        async with aiohttp.ClientSession() as session, session.post(base + "/api/reload") as response:
            return await response.json()

    async def scenario(engine: Engine, base: str, state: Any) -> None:
        assert (await post(base))["result"] == "unchanged"
        path.write_text(FLOW + 'user carol password "carol-pw"\n')
        answer = await post(base)
        assert answer["result"] == "reloaded" and answer["version"] != answer["previous_version"]
        path.write_text(FLOW + "user dave\n")
        answer = await post(base)
        assert answer["result"] == "failed" and "office.flow:" in answer["error"]
        program = await get_json(base + "/api/program")
        assert "office.flow:" in program["last_reload_error"]
        async with aiohttp.ClientSession() as session, session.get(base + "/metrics") as response:
            text = await response.text()
        assert 'callflow_reloads_total{result="reloaded"} 1.0' in text
        assert 'callflow_reloads_total{result="failed"} 1.0' in text

    with_server(scenario, flow_path=path)


def test_with_a_token_every_request_needs_it() -> None:
    async def scenario(engine: Engine, base: str, state: Any) -> None:
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/api/program") as response:
                assert response.status == 401
                assert "token" in (await response.json())["error"]
            async with session.get(base + "/api/program", headers={"Authorization": "Bearer sesame"}) as response:
                assert response.status == 200
            async with session.get(base + "/?token=sesame") as response:
                assert response.status == 200 and "<title>Callflow</title>" in await response.text()

    with_server(scenario, token="sesame")


# ---- a web page the operator opens (bench attack 12) ---------------------------------------------------
async def status_of(method: str, url: str, headers: dict[str, str]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.request(method, url, headers=headers) as response:
        return response.status, await response.text()


def test_a_page_reading_the_endpoint_through_dns_rebinding_gets_421_and_no_data() -> None:
    async def scenario(engine: Engine, base: str, state: Any) -> None:
        port = base.rsplit(":", 1)[1]
        for host in ("rebound.attacker.example", f"rebound.attacker.example:{port}", "127.0.0.1:1"):
            status, text = await status_of("GET", base + "/api/state", {"Host": host})
            assert status == 421, host
            assert "alice" not in text and "itsp1" not in text

    with_server(scenario)


def test_the_endpoint_answers_its_own_address_localhost_and_loopback_literals() -> None:
    async def scenario(engine: Engine, base: str, state: Any) -> None:
        port = base.rsplit(":", 1)[1]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LocalHost:{port}", f"[::1]:{port}"):
            status, text = await status_of("GET", base + "/api/state", {"Host": host})
            assert status == 200 and "alice" in text, host

    with_server(scenario)


def test_a_cross_site_post_cannot_reload_the_program(tmp_path: Path) -> None:
    path = tmp_path / "office.flow"
    path.write_text(FLOW)

    async def scenario(engine: Engine, base: str, state: Any) -> None:
        host = base.split("//", 1)[1]
        path.write_text(FLOW + 'user carol password "carol-pw"\n')
        for headers in ({"Origin": "http://attacker.example"}, {"Origin": "null"},
                        {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                        {"Origin": f"http://{host}", "Sec-Fetch-Site": "cross-site"}):
            status, text = await status_of("POST", base + "/api/reload",
                                           {**headers, "Content-Type": "application/x-www-form-urlencoded"})
            assert status == 403 and "another web page" in text, headers
        assert "carol" not in engine.users
        # the live page (same origin) and tools (no Origin) still reload
        status, _ = await status_of("POST", base + "/api/reload",
                                    {"Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"})
        assert status == 200 and "carol" in engine.users

    with_server(scenario, flow_path=path)


def test_the_reload_command_still_works(tmp_path: Path) -> None:
    path = tmp_path / "office.flow"
    path.write_text(FLOW)

    async def scenario(engine: Engine, base: str, state: Any) -> None:
        result = await asyncio.get_running_loop().run_in_executor(
            None, lambda: callflow("reload", "--control", base.split("//", 1)[1]))
        assert result.returncode == 0, result.stderr

    with_server(scenario, flow_path=path)


def test_listening_beyond_loopback_without_a_token_is_refused() -> None:
    with pytest.raises(ControlError, match="without a token"):
        check_exposure(ControlAddress("0.0.0.0", 5065), None)
    check_exposure(ControlAddress("0.0.0.0", 5065), "sesame")
    check_exposure(ControlAddress("localhost", 5065), None)


def test_run_refuses_a_public_control_address_without_a_token_and_says_how() -> None:
    result = callflow("run", str(ROOT / "flows" / "office.flow"), "--listen", "127.0.0.1:0",
                      "--rtp-ports", "36720-36729", "--control", "0.0.0.0:0")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "--control-token" in result.stderr


def test_run_says_clearly_when_the_chosen_control_port_is_taken() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = callflow("run", str(ROOT / "flows" / "office.flow"), "--listen", "127.0.0.1:0",
                          "--rtp-ports", "36730-36739", "--control", f"127.0.0.1:{port}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"control endpoint: cannot listen on 127.0.0.1:{port}" in result.stderr


def test_the_scripts_server_block_chooses_the_control_address(tmp_path: Path) -> None:
    """`server { control "HOST:PORT" }` applies when the command line gives none: an address the
    operator chose must work, so a taken one stops the server with a clear message naming it."""
    import socket

    (tmp_path / "script").mkdir()
    flow = tmp_path / "script" / "office.flow"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        office = (ROOT / "flows" / "office.flow").read_text()
        flow.write_text(f'server {{\n    control "127.0.0.1:{port}"\n}}\n' + office)
        result = callflow("run", str(flow), "--listen", "127.0.0.1:0", "--rtp-ports", "36740-36749",
                          "--state-dir", str(tmp_path / "state"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"control endpoint: cannot listen on 127.0.0.1:{port}" in result.stderr


def test_a_control_address_beyond_loopback_without_a_token_is_a_compile_error() -> None:
    with pytest.raises(FlowError, match=r'office.flow:2:5: .*listens beyond loopback.*control token'):
        compile_source('server {\n    control "0.0.0.0:5065"\n}\n', "office.flow")
    compile_source('server {\n    control "0.0.0.0:5065"\n    control token "a-long-secret-token"\n}\n', "office.flow")


def test_a_control_setting_that_is_not_an_address_is_a_compile_error() -> None:
    with pytest.raises(FlowError, match=r'office.flow:2:5: .*control "nope" is not HOST:PORT'):
        compile_source('server {\n    control "nope"\n}\n', "office.flow")


@pytest.mark.parametrize("command", ["status", "calls", "reload", "version"])
def test_commands_say_clearly_when_no_server_runs_there(command: str) -> None:
    result = callflow(command, "--control", "127.0.0.1:9")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "no Callflow server answers at 127.0.0.1:9" in result.stderr


def test_check_prints_the_version_id_the_running_server_shows(tmp_path: Path) -> None:
    path = tmp_path / "office.flow"
    path.write_text(FLOW)
    result = callflow("check", str(path))
    assert result.returncode == 0, result.stderr

    async def scenario(engine: Engine, base: str, state: Any) -> None:
        program = await get_json(base + "/api/program")
        assert f"ok, version {program['version']}" in result.stdout

    with_server(scenario, flow_path=path)


def test_version_flag_prints_the_version() -> None:
    result = callflow("--version")
    assert result.returncode == 0 and result.stdout.startswith("callflow ")


def test_listen_on_a_host_name_resolves_it() -> None:
    from runtime.cli import _resolve_host

    assert _resolve_host("localhost") == "127.0.0.1"
    assert _resolve_host("127.0.0.2") == "127.0.0.2"


def test_listen_on_a_name_that_does_not_resolve_is_a_clear_error() -> None:
    result = callflow("run", str(ROOT / "flows" / "office.flow"), "--listen", "no-such-host.invalid:5060")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "'no-such-host.invalid'" in result.stderr and "does not resolve" in result.stderr


def test_json_flag_gives_the_servers_answer(tmp_path: Path) -> None:
    # a server on a free port, asked by the real command in a child process
    async def scenario(engine: Engine, base: str, state: Any) -> None:
        address = base.removeprefix("http://")
        result = await asyncio.to_thread(callflow, "status", "--json", "--control", address)
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout)
        assert {u["user"] for u in answer["users"]} == {"alice", "bob"}
        result = await asyncio.to_thread(callflow, "status", "--control", address)
        assert "USER" in result.stdout and "alice" in result.stdout

    with_server(scenario)
