"""What the operator reads from the `callflow` command and /metrics names the same things the same
way: `fmt` names the file it read, `check --json` carries the version id a server running the files
shows, calls nobody picked up are `no_answer` in the metrics as in `callflow cdr`, and a transport
Callflow does not have is named as such in `--listen`'s error, with the ones it has."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from runtime.control.metrics import Metrics
from runtime.records.cdr import OUTCOMES

ROOT = Path(__file__).resolve().parents[2]
OFFICE = ROOT / "flows" / "office.flow"


def callflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runtime.cli", *args], capture_output=True, text=True,
                          timeout=30, cwd=ROOT)


def test_fmt_names_the_file_it_could_not_format(tmp_path: Path) -> None:
    bad = tmp_path / "broken.flow"
    bad.write_text('user alice password "pw"\non incoming from user alice {\n')
    result = callflow("fmt", str(bad))
    assert result.returncode == 1
    assert f"{bad}:" in result.stderr and "<fmt>" not in result.stderr and "Traceback" not in result.stderr


def test_check_json_carries_the_version_id_a_server_shows() -> None:
    shown = callflow("check", str(OFFICE)).stdout   # "...: ok, version ID"
    result = callflow("check", "--json", str(OFFICE))
    report = json.loads(result.stdout)
    assert result.returncode == 0
    assert report["version"] and shown.strip().endswith(f"version {report['version']}")
    assert report["versions"] == {str(OFFICE): report["version"]}
    assert report["diagnostics"] == []


def outcomes_of(*calls: list[tuple[str, dict[str, object]]]) -> dict[str, float]:
    metrics = Metrics()
    for n, events in enumerate(calls):
        for name, fields in [("created", {}), *events, ("closed", {"reason": "x"})]:
            metrics.on_event(SimpleNamespace(name=name, fields={"call": f"c{n}", **fields}))
    snapshot = metrics.snapshot()
    return {o: snapshot.get(f"callflow_calls_total{{outcome={o}}}", -1.0) for o in OUTCOMES}


def test_metrics_count_calls_by_the_outcomes_callflow_cdr_lists() -> None:
    counted = outcomes_of(
        [("connected", {"peer_type": "LINE", "peer": "itsp1"}), ("hangup", {"channel": "ONE"})],
        [("failed", {"code": 480, "reason": "Temporarily Unavailable"})],
        [("failed", {"code": 408, "reason": "Request Timeout"})],
        [("failed", {"code": 486, "reason": "Busy Here"})],
        [("hangup", {"channel": "ZERO", "reason": "cancelled"}), ("failed", {"code": 487, "reason": "x"})],
        [("failed", {"code": 404, "reason": "Not Found"})])
    assert counted == {"answered": 1.0, "busy": 1.0, "no_answer": 2.0, "cancelled": 1.0, "failed": 1.0}


def test_metrics_have_no_unanswered_outcome_beside_no_answer() -> None:
    assert "unanswered" not in Metrics().render().decode()


def test_listen_with_a_transport_callflow_lacks_names_the_ones_it_has() -> None:
    result = callflow("run", str(OFFICE), "--listen", "sctp:127.0.0.1:5060")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "unknown transport 'sctp'" in result.stderr and "udp, tcp, tls, ws, wss" in result.stderr
