"""A voicemail box with the Python SDK: every call the provider sends to line itsp1 is answered with a
greeting and a beep, the caller's message is recorded into recordings/vm/, and the call ends.

Run it (Ctrl-C or SIGTERM stops it):

    python examples/voicemail.py --listen 127.0.0.1:5060 --provider 127.0.0.1:5080 [--greeting hello.wav]

Each message is logged as `event=log text="message saved in ..."` next to the engine's own
`recording` event (path, seconds, stop).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from callflow.sdk import Event, SipServer, setup_logging

log = logging.getLogger("voicemail")


def say(text: str) -> None:
    log.info("event=log text=%s", '"' + text.replace('"', "'") + '"')


async def main(args: argparse.Namespace) -> None:
    server = SipServer(listen=args.listen, rtp_ports=(20000, 20999))
    server.add_line("itsp1", server=args.provider, username="trunk1", password="s3cret", register_every=60)

    @server.on("incoming")
    async def voicemail(event: Event) -> None:
        saved = await server.record_voicemail(event.session, "vm/{call}-{time}.wav", prompt=args.greeting,
                                              max_seconds=args.max_seconds, folder=args.folder)
        say(f"message saved in {saved}" if isinstance(saved, str) else f"no message: {saved.reason}")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        server.register_line("itsp1")
        await stop.wait()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:5060")
    parser.add_argument("--provider", default="127.0.0.1:5080")
    parser.add_argument("--greeting", default=None, help="a prompt file played before the beep")
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--folder", default="recordings")
    return parser.parse_args()


if __name__ == "__main__":
    setup_logging("info")
    asyncio.run(main(parse_args()))
