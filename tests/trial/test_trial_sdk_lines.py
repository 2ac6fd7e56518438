"""The SDK from docs/sdk.md alone: a provider that trusts the trunk by its address (no registration,
like attendant.flow's `line itsp { server ... numbers ... }`) added from Python."""

from __future__ import annotations

import asyncio

import pytest

from callflow.sdk import SipServer


def test_a_line_that_does_not_register_needs_no_username() -> None:
    async def main() -> bool:
        server = SipServer(listen="127.0.0.1:0", rtp_ports=(33900, 33909))
        return server.add_line("itsp", server="127.0.0.1:5080", register_every=None, numbers=["+15551230000"])

    assert asyncio.run(main()) is True


def test_a_line_that_registers_without_a_username_is_refused_with_the_way_out() -> None:
    async def main() -> None:
        server = SipServer(listen="127.0.0.1:0", rtp_ports=(33910, 33919))
        server.add_line("itsp", server="127.0.0.1:5080", register_every=300)

    with pytest.raises(ValueError) as refused:
        asyncio.run(main())
    assert "no username" in str(refused.value) and "register_every=None" in str(refused.value)
