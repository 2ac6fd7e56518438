"""Originate with the Python SDK: Callflow rings alice's phone, and when she answers connects her to a
number through line itsp1 (the SDK's DialCallSession); optionally it then transfers the far party to
bob's phone and lets alice go (a blind transfer by the program).

Run it (Ctrl-C or SIGTERM stops it):

    python examples/originate.py --listen 127.0.0.1:5060 --provider 127.0.0.1:5080 \\
        --number +15557654321 [--transfer-to bob --transfer-after 5]

It waits until the line and alice's phone (and bob's, for a transfer) are registered, places the
call once, and logs the outcome as `event=log text="..."` lines next to the engine's events.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from callflow.sdk import Channel, SipServer, setup_logging

log = logging.getLogger("originate")


def say(text: str) -> None:
    log.info("event=log text=%s", '"' + text.replace('"', "'") + '"')


async def registered(server: SipServer, users: set[str]) -> None:
    """Until line itsp1 and every one of `users` has a phone registered."""
    waiting, line_up = set(users), False
    async for event in server.events("line_registered", "user_registered"):
        if event.name == "line_registered":
            line_up = True
        else:
            waiting.discard(str(event["user"]))
        if line_up and not waiting:
            return


async def place_call(server: SipServer, args: argparse.Namespace) -> None:
    dialed = server.dial_call_session(to_user="alice", then_line="itsp1", then_number=args.number)
    failure = await dialed.result
    if failure is not None:
        say(f"call {dialed.id} failed: {failure.code} {failure.reason}")
        return
    say(f"call {dialed.id} connected alice to {args.number}")
    if args.transfer_to:
        await asyncio.sleep(args.transfer_after)
        # alice (channel ZERO, the leg rung first) leaves; the far party is bridged to the new leg
        failure = await server.transfer_call_session(dialed.session, to_user=args.transfer_to,
                                                     channel=Channel.ZERO)
        say(f"call {dialed.id} transferred to {args.transfer_to}" if failure is None
            else f"call {dialed.id} transfer failed: {failure.code} {failure.reason}")


async def main(args: argparse.Namespace) -> None:
    low, _, high = args.rtp_ports.partition("-")
    server = SipServer(listen=args.listen, rtp_ports=(int(low), int(high)))
    server.add_user("alice", args.alice_password)
    server.add_user("bob", args.bob_password)
    server.add_line("itsp1", server=args.provider, username=args.line_user, password=args.line_password,
                    register_every=60)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        ready = asyncio.ensure_future(registered(server, {"alice"} | ({args.transfer_to} if args.transfer_to
                                                                       else set())))
        server.register_line("itsp1")
        await ready
        task = asyncio.ensure_future(place_call(server, args))
        await stop.wait()
        task.cancel()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="127.0.0.1:5060", help="[udp|tcp:]HOST:PORT (bare: UDP and TCP)")
    p.add_argument("--rtp-ports", default="20000-20999", help="LOW-HIGH")
    p.add_argument("--provider", default="127.0.0.1:5080", help="the line's provider, HOST[:PORT]")
    p.add_argument("--line-user", default="trunk1")
    p.add_argument("--line-password", default="s3cret")
    p.add_argument("--alice-password", default="alice-pw")
    p.add_argument("--bob-password", default="bob-pw")
    p.add_argument("--number", default="+15557654321", help="the number alice is connected to")
    p.add_argument("--transfer-to", metavar="USER", help="then transfer the far party to this user")
    p.add_argument("--transfer-after", type=float, default=3.0, metavar="SECONDS")
    return p.parse_args(argv)


if __name__ == "__main__":
    setup_logging("info")
    asyncio.run(main(parse_args()))
