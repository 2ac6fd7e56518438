"""The dialplan runs `send dtmf`: in a rule it asks the call session to press the keys on the caller's
leg and goes on at once; in `on connected` it presses them on the leg the handler names."""

from __future__ import annotations

import asyncio
from typing import Any

from callflow.flowrun.dialplan import Dialplan, _PlanRun
from callflow.sdk import Channel, Event, SipServer
from flowlang import CallInfo, compile_source
from runtime.calls import Failure

FLOW = '''user alice password "alice-pw-2026"
line itsp { server "sip.provider.example" }
on incoming from line itsp {
    play "hello.wav" answered
    send dtmf "12#"
    hangup
}
on connected { send dtmf "9" to channel ONE }
'''


class PressingCall:
    """What the dialplan asks of a call session, recorded (a unit-test stand-in for CallSession)."""

    id = "c1"
    last_failure = Failure(480, "Temporarily Unavailable")

    def __init__(self, program: object = None) -> None:
        self.asked: list[tuple[str, Any]] = []
        self.program = program

    def play(self, path: str, answered: bool, on_done: Any) -> None:
        self.asked.append(("play", path))
        on_done()

    def send_dtmf(self, channel: Channel, digits: str, duration: float) -> None:
        self.asked.append(("send_dtmf", (channel, digits, duration)))

    def hangup(self) -> None:
        self.asked.append(("hangup", None))


def test_a_rule_presses_the_keys_on_the_callers_leg_then_goes_on() -> None:
    program = compile_source(FLOW, "<dtmf>")
    decision = program.decide(CallInfo("line", "itsp", "+15557654321", None, "+15551230000"))
    assert decision is not None
    call = PressingCall()
    _PlanRun(call, decision).step(None)  # type: ignore[arg-type]
    assert call.asked == [("play", "hello.wav"), ("send_dtmf", (Channel.ZERO, "12#", 0.1)), ("hangup", None)]


def test_on_connected_presses_the_keys_on_the_leg_it_names() -> None:
    async def scenario() -> PressingCall:
        server = SipServer(listen="udp:127.0.0.1:0", rtp_ports=(40000, 40003))  # never started: nothing is bound
        plan = Dialplan(server)
        program = compile_source(FLOW, "<dtmf>")
        plan.load(program)
        call = PressingCall(program)
        server.engine.calls["c1"] = call  # a live session of the server, as the engine holds it
        server.engine.bus.history = sent = []  # type: ignore[assignment]
        plan.on_event(Event("connected", {"call": "c1", "peer_type": "USER", "peer": "alice"}, call))  # type: ignore[arg-type]
        assert [(e.name, e.fields) for e in sent] == [("dtmf_sent", {"call": "c1", "channel": "ONE", "digits": "9"})]
        return call

    call = asyncio.run(scenario())
    assert call.asked == [("send_dtmf", (Channel.ONE, "9", 0.1))]


def test_dtmf_metrics_count_digits_received_by_source_sent_dropped_and_unexpected() -> None:
    from runtime.control.metrics import Metrics
    from runtime.events import EngineEvent

    metrics = Metrics()
    for name, fields in (("dtmf", {"call": "c1", "channel": "ZERO", "digit": "5", "duration": 100, "source": "info"}),
                         ("dtmf", {"call": "c1", "channel": "ONE", "digit": "#", "duration": 80}),
                         ("dtmf_sent", {"call": "c1", "channel": "ZERO", "digits": "1234"}),
                         ("dtmf_dropped", {"call": "c1", "channel": "ZERO", "digit": "34", "reason": "INFO 415"}),
                         ("dtmf_unexpected", {"call": "c1", "channel": "ONE", "digit": "7"})):
        metrics.on_event(EngineEvent(name, fields))
    seen = metrics.snapshot()
    assert seen["callflow_dtmf_digits_received_total{source=info}"] == 1
    assert seen["callflow_dtmf_digits_received_total{source=rfc4733}"] == 1
    assert seen["callflow_dtmf_digits_sent_total"] == 4
    assert seen["callflow_dtmf_digits_dropped_total"] == 2
    assert seen["callflow_dtmf_unexpected_total"] == 1
