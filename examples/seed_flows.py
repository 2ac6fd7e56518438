"""Both seed flows with the Python SDK and no `.flow` file at all.

1. Out: the office phone (user alice) dials a number; the call leaves through line itsp1.
2. In: the provider's call on line itsp1 rings alice's phone(s).

Run it (Ctrl-C or SIGTERM stops it: calls are ended, the line un-registers):

    python examples/seed_flows.py --listen 127.0.0.1:5060 --provider 127.0.0.1:5080 \\
        --line-user trunk1 --line-password s3cret --alice-password alice-pw

It logs the engine's events as logfmt lines, as `callflow run` does (`event=incoming ...`,
`event=hangup call=... channel=ZERO`). The same program as a script is flows/office.flow's rules:

    on incoming from user any to /^\\+?[0-9]{7,15}$/ accept to line itsp1
    on incoming from line itsp1 accept to user alice
    on hangup { log "call {call} ended by channel {channel}" }
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal

from callflow.sdk import Event, SipServer, setup_logging

NUMBER = re.compile(r"\+?[0-9]{7,15}")  # what a phone may dial out
log = logging.getLogger("seed_flows")


def build(args: argparse.Namespace) -> SipServer:
    """The server with its user, its line and the two flows as event handlers."""
    low, _, high = args.rtp_ports.partition("-")
    server = SipServer(listen=args.listen, rtp_ports=(int(low), int(high)))
    server.add_user("alice", args.alice_password)
    server.add_line("itsp1", server=args.provider, username=args.line_user, password=args.line_password,
                    register_every=60)

    @server.on("incoming")
    def route(event: Event) -> None:
        """OnIncomingCall: the routing decision, with the caller's peer type and name."""
        if event["peer_type"] == "USER" and NUMBER.fullmatch(str(event["to"])):
            server.accept_call_session(event.session, to_line="itsp1")   # flow 1: out through the line
        elif event["peer_type"] == "LINE" and event["peer"] == "itsp1":
            server.accept_call_session(event.session, to_user="alice")   # flow 2: the line rings alice
        else:
            server.reject_call_session(event.session, 404, "Not Found (no such number)")

    @server.on("hangup")
    def hangup(event: Event) -> None:
        """OnCallSessionHangUp: ZERO is the leg the call came in on, ONE the leg we dialled."""
        channel = event.channel.name if event.channel is not None else "-"
        log.info("event=log text=%s", f'"call {event.call} ended by channel {channel}"')

    @server.on("line_register_failed")
    def line_down(event: Event) -> None:
        log.warning("event=log text=%s", f'"line {event["line"]} down: {event["reason"]}"')

    return server


async def main(args: argparse.Namespace) -> None:
    server = build(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        server.register_line("itsp1")
        await stop.wait()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="127.0.0.1:5060", help="[udp|tcp:]HOST:PORT (bare: UDP and TCP)")
    p.add_argument("--rtp-ports", default="20000-20999", help="LOW-HIGH")
    p.add_argument("--provider", default="127.0.0.1:5080", help="the line's provider, HOST[:PORT]")
    p.add_argument("--line-user", default="trunk1")
    p.add_argument("--line-password", default="s3cret")
    p.add_argument("--alice-password", default="alice-pw")
    return p.parse_args(argv)


if __name__ == "__main__":
    setup_logging("info")
    asyncio.run(main(parse_args()))
