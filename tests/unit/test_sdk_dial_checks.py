"""dial_call_session refuses a call whose second part cannot happen before channel ZERO rings (issue 12,
trial bugs 1 and 2): an unknown then_user or then_line, a line that is not registered, a file to play
that is not there. ZERO (alice) has a phone registered, so only the second part is at fault."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from callflow.sdk import DialError, SipServer
from tests.rig.ports import ports


def alice_can_be_rung(check: Callable[[SipServer], None]) -> None:
    """Run `check` on a server built inside an event loop, never started, whose user alice has a phone."""
    async def scenario() -> None:
        server = SipServer(listen="udp:127.0.0.1:0", rtp_ports=ports.rtp_range(10))
        server.add_user("alice", "alice-pw")
        server.add_user("bob", "bob-pw")
        server.add_line("itsp1", server="127.0.0.1:5080", username="trunk1")
        server.engine.registrar.lookup = lambda user, now: [object()] if user == "alice" else []  # type: ignore[method-assign]
        check(server)

    asyncio.run(scenario())


def refused(server: SipServer, **kwargs: object) -> DialError:
    with pytest.raises(DialError) as info:
        server.dial_call_session(to_user="alice", **kwargs)  # type: ignore[arg-type]
    assert not server.call_sessions()  # nothing was dialled
    return info.value


def test_bridging_to_an_unknown_line_is_refused_with_404_naming_the_lines() -> None:
    def check(server: SipServer) -> None:
        error = refused(server, then_line="nosuch", then_number="+15557654321")
        assert error.code == 404 and "no line 'nosuch' (lines: itsp1)" in str(error)
    alice_can_be_rung(check)


def test_bridging_through_a_line_that_is_not_registered_is_refused_with_409() -> None:
    def check(server: SipServer) -> None:
        error = refused(server, then_line="itsp1", then_number="+15557654321")
        assert error.code == 409 and "not registered" in str(error)
    alice_can_be_rung(check)


def test_bridging_to_an_unknown_user_is_refused_with_404_naming_the_users() -> None:
    def check(server: SipServer) -> None:
        error = refused(server, then_user="carol")
        assert error.code == 404 and "no user 'carol'" in str(error) and "alice, bob" in str(error)
    alice_can_be_rung(check)


def test_playing_a_file_that_is_not_there_is_refused_with_400_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "none.wav"

    def check(server: SipServer) -> None:
        error = refused(server, play=str(missing))
        assert error.code == 400 and str(missing) in str(error)
    alice_can_be_rung(check)
