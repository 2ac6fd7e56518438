"""dial_call_session and transfer_call_session (issue 12): what a program asking the impossible is
told, before anything is sent. The calls themselves: tests/unit/test_originate.py (the machine) and
tests/integration/test_originate_real_phones.py (baresip and Kamailio)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from callflow.sdk import DialError, Failure, SipServer
from tests.rig.ports import ports


def offline(check: Callable[[SipServer], None]) -> None:
    """Run `check` on a server built inside an event loop, never started."""
    async def scenario() -> None:
        server = SipServer(listen="udp:127.0.0.1:0", rtp_ports=ports.rtp_range(10))
        server.add_user("alice", "alice-pw")
        server.add_line("itsp1", server="127.0.0.1:5080", username="trunk1")
        check(server)

    asyncio.run(scenario())


def test_dialling_an_unknown_user_is_refused_naming_the_users() -> None:
    def check(server: SipServer) -> None:
        with pytest.raises(DialError, match="no user 'bob' \\(users: alice\\)") as info:
            server.dial_call_session(to_user="bob", route="+15551234567")
        assert info.value.code == 404 and not server.call_sessions()
    offline(check)


def test_dialling_a_user_with_no_phone_registered_is_refused() -> None:
    def check(server: SipServer) -> None:
        with pytest.raises(DialError, match="alice.* no phone registered") as info:
            server.dial_call_session(to_user="alice", then_line="itsp1", then_number="+15551234567")
        assert info.value.code == 409 and not server.call_sessions()
    offline(check)


def test_dialling_through_a_line_that_is_not_registered_is_refused() -> None:
    def check(server: SipServer) -> None:
        with pytest.raises(DialError, match="line 'itsp1' is not registered"):
            server.dial_call_session(to_line="itsp1", number="+15551234567", play="hello.wav")
    offline(check)


@pytest.mark.parametrize("number", ["+1 555", "15551234567\r\nX: y", "x" * 65])
def test_a_bad_number_is_refused_saying_what_a_number_holds(number: str) -> None:
    def check(server: SipServer) -> None:
        with pytest.raises(DialError, match="bad number"):
            server.dial_call_session(to_line="itsp1", number=number, play="hello.wav")
    offline(check)


def test_dial_needs_one_first_leg_and_one_thing_to_do_after() -> None:
    def check(server: SipServer) -> None:
        with pytest.raises(ValueError, match="exactly one of to_user= and to_line="):
            server.dial_call_session(to_user="alice", to_line="itsp1", route="1")
        with pytest.raises(ValueError, match="exactly one of then_user=.*got route, play"):
            server.dial_call_session(to_user="alice", route="1", play="x.wav")
        with pytest.raises(ValueError, match="then_number="):
            server.dial_call_session(to_user="alice", then_line="itsp1")
    offline(check)


def test_transferring_a_closed_session_resolves_to_481_at_once() -> None:
    async def scenario() -> None:
        server = SipServer(listen="udp:127.0.0.1:0", rtp_ports=ports.rtp_range(10))
        future = server.transfer_call_session("gone", to_user="alice")
        assert future.done() and future.result() == Failure(
            481, "Call/Transaction Does Not Exist (the call session has closed)")
        with pytest.raises(ValueError, match="exactly one"):
            server.transfer_call_session("gone")

    asyncio.run(scenario())
