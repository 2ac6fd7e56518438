"""A menu (`gather`) on a node whose media is in rtpengine (`--media rtpengine:HOST:PORT`,
docs/scaling.md), tried with a baresip caller pressing a key as RFC 4733 telephone-events.

rtpengine relays the keys; it reports each one to Callflow when started with
`--dtmf-log-dest=HOST:PORT` and Callflow with `--rtpengine-dtmf HOST:PORT`. Without them the menu
cannot hear, and says so (`rtpengine_dtmf_off` at start, `gather_deaf` at the gather)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.callflow_server import CallflowServer
from tests.integration.conftest import require_peer
from tests.rig import CALL_ESTABLISHED, PhoneFactory, account_line, ports
from tests.rig.rtpengine import Rtpengine, rtpengine_problem

pytestmark = pytest.mark.integration

FLOW = '''user caller password "caller-pw-2026"
user alice password "alice-pw-2026"
on incoming from user caller to "menu" {
    gather max 1 timeout 4s {
        when "1" accept to user alice
        else hangup
    }
}
'''


class ReportingRtpengine(Rtpengine):
    """The rig's rtpengine, also reporting the DTMF events it relays to `dtmf_log_dest` (HOST:PORT)."""

    def __init__(self, *args: object, dtmf_log_dest: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.dtmf_log_dest = dtmf_log_dest

    def command(self) -> list[str]:
        return [*super().command(), f"--dtmf-log-dest={self.dtmf_log_dest}"]


Node = Callable[[bool], CallflowServer]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    """`node(reports)`: a Callflow node with its media in a fresh rtpengine; `reports`: whether
    rtpengine reports keys to it (--dtmf-log-dest / --rtpengine-dtmf)."""
    require_peer("rtpengine", rtpengine_problem())
    started: list[Rtpengine | CallflowServer] = []

    def make(reports: bool) -> CallflowServer:
        dest = f"127.0.0.1:{ports.port()}"
        relay = (ReportingRtpengine(ports.port(), ports.rtp_range(40), tmp_path / "rtpengine.log", dtmf_log_dest=dest)
                 if reports else Rtpengine(ports.port(), ports.rtp_range(40), tmp_path / "rtpengine.log"))
        relay.start()
        started.append(relay)
        args = ["--media", f"rtpengine:{relay.address}"] + (["--rtpengine-dtmf", dest] if reports else [])
        server = CallflowServer(FLOW, tmp_path / "cf", ports.sip_port(), ports.rtp_range(10), extra_args=args)
        started.append(server)
        return server.start()

    try:
        yield make
    finally:
        for process in reversed(started):
            process.stop()


def _press_1_in_the_menu(server: CallflowServer, phone_factory: PhoneFactory) -> dict[str, str]:
    caller = phone_factory(account_line("caller", server.hostport, auth_pass="caller-pw-2026"), name="caller")
    caller.wait_registered()
    caller.dial(f"sip:menu@{server.hostport}")
    caller.wait_event(CALL_ESTABLISHED, 10)         # Callflow answers to collect the keys
    caller.command("sndcode", "1")
    return server.wait_event("gather", 15)


def test_a_key_pressed_in_a_menu_through_rtpengine_is_heard_when_rtpengine_reports_keys(
        node: Node, phone_factory: PhoneFactory) -> None:
    server = node(True)
    assert server.events("rtpengine_dtmf_listening")
    gathered = _press_1_in_the_menu(server, phone_factory)
    assert gathered["digits"] == "1", gathered
    assert [e["digit"] for e in server.events("dtmf", call=gathered["call"])] == ["1"]
    assert not server.events("gather_deaf")


def test_a_menu_through_rtpengine_without_its_key_reports_says_why_it_hears_nothing(
        node: Node, phone_factory: PhoneFactory) -> None:
    server = node(False)
    assert "--rtpengine-dtmf" in server.events("rtpengine_dtmf_off")[0]["reason"]
    gathered = _press_1_in_the_menu(server, phone_factory)
    deaf = server.events("gather_deaf", call=gathered["call"])
    assert deaf and "rtpengine does not report keys" in deaf[0]["reason"], deaf
