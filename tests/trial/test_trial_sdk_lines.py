"""The SDK from docs/sdk.md alone: a provider that trusts the trunk by its address (no registration,
like attendant.flow's `line itsp { server ... numbers ... }`) added from Python."""

from __future__ import annotations

import asyncio

import pytest

from callflow.sdk import SipServer


@pytest.mark.xfail(strict=True, reason="add_line requires username= even for a line that never registers "
                                       "(TypeError); a .flow line needs a username only when it registers")
def test_a_line_that_does_not_register_needs_no_username() -> None:
    async def main() -> bool:
        server = SipServer(listen="127.0.0.1:0", rtp_ports=(33900, 33909))
        return server.add_line("itsp", server="127.0.0.1:5080", register_every=None, numbers=["+15551230000"])

    assert asyncio.run(main()) is True
