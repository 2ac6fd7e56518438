"""The `callflow` command as an operator uses it: exit codes, messages, never a traceback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OFFICE = ROOT / "flows" / "office.flow"
BROKEN = 'user alice password "pw"\non incoming from user alice to "1" accept to line nowhere\n'


def callflow(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runtime.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_help_lists_the_commands() -> None:
    out = callflow("--help").stdout
    for command in ("run", "check", "explain", "fmt", "graph"):
        assert command in out


def test_check_accepts_the_example_flow() -> None:
    result = callflow("check", str(OFFICE))
    assert result.returncode == 0, result.stderr


def test_check_reports_file_line_col_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.flow"
    bad.write_text(BROKEN)
    result = callflow("check", str(bad))
    assert result.returncode == 1
    assert f"{bad}:2:46: error: unknown line nowhere" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_json_is_machine_readable(tmp_path: Path) -> None:
    bad = tmp_path / "bad.flow"
    bad.write_text(BROKEN)
    result = callflow("check", "--json", str(bad))
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["version"] is None
    diagnostics = report["diagnostics"]
    assert {"file": str(bad), "line": 2, "col": 46, "severity": "error"}.items() <= diagnostics[-1].items()


def test_run_refuses_a_broken_script_with_its_position(tmp_path: Path) -> None:
    bad = tmp_path / "bad.flow"
    bad.write_text(BROKEN)
    result = callflow("run", str(bad), "--listen", "127.0.0.1:0")
    assert result.returncode == 1
    assert f"{bad}:2:46:" in result.stderr and "Traceback" not in result.stderr


def test_run_says_clearly_when_the_port_is_taken() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        result = callflow("run", str(OFFICE), "--listen", f"udp:127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"cannot listen on udp:127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_rejects_a_malformed_listen_address() -> None:
    result = callflow("run", str(OFFICE), "--listen", "nonsense")
    assert result.returncode == 2 and "expected [udp|tcp|tls|ws|wss:]HOST:PORT" in result.stderr


def test_missing_script_is_a_clear_error(tmp_path: Path) -> None:
    result = callflow("check", str(tmp_path / "nope.flow"))
    assert result.returncode == 1 and "nope.flow" in result.stderr and "Traceback" not in result.stderr


def test_explain_names_the_deciding_rule() -> None:
    result = callflow("explain", str(OFFICE), "--from", "user:alice", "--to", "+15557654321")
    assert result.returncode == 0
    assert "office.flow:15:1 decides" in result.stdout and "line itsp1" in result.stdout


def test_fmt_is_idempotent_on_the_example() -> None:
    once = callflow("fmt", str(OFFICE)).stdout
    assert once.strip()
    assert "accept to line itsp1" in once


def test_run_refuses_rtp_ports_outside_1024_65535_as_the_script_does() -> None:
    result = callflow("run", "flows/office.flow", "--rtp-ports", "0-10")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "1024-65535" in result.stderr


def test_run_refuses_an_advertised_address_that_is_not_an_ip() -> None:
    result = callflow("run", "flows/office.flow", "--advertise", "nonsense")
    assert result.returncode == 2 and "Traceback" not in result.stderr and "IP address" in result.stderr


def test_an_ipv6_advertised_address_is_bracketed_in_via_and_contact() -> None:
    import asyncio

    from runtime.engine import Engine
    from runtime.transport import ListenSpec

    async def build() -> tuple[str, str]:
        engine = Engine(listen=[ListenSpec("udp", "::1", 5060)], advertise="::1", admission_control=False)
        return engine.via(), engine.contact()

    via, contact = asyncio.run(build())
    assert via == "SIP/2.0/UDP [::1]:5060;rport"
    assert contact == "<sip:callflow@[::1]:5060>"


def test_the_control_address_may_be_given_as_the_pages_url() -> None:
    from runtime.control import parse_address

    address = parse_address("http://127.0.0.1:5065/")
    assert (address.host, address.port) == ("127.0.0.1", 5065)
