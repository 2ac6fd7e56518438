"""What the call machine's modules share: the names of its timers, the headers a relayed request
keeps per method, the Allow list of a connected call, and the type of a step that waits for media."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from .states import Channel

ZERO, ONE = Channel.ZERO, Channel.ONE
CONNECTED_METHODS = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, MESSAGE, NOTIFY, REFER"
# headers a relayed in-dialog request keeps, by what its method needs (the rest is rebuilt by us)
# (RFC 6086 INFO, 6665 SUBSCRIBE/NOTIFY, 3515/3892/4488/4538 REFER, 3428 MESSAGE; INVITE and UPDATE
# get the session timer headers of the leg they go to instead, see session_refresh.py _timer_request_headers)
RELAYED_HEADERS: dict[str, frozenset[str]] = {
    "INFO": frozenset({"info-package", "content-disposition", "recv-info"}),
    "NOTIFY": frozenset({"event", "subscription-state", "content-disposition"}),
    "SUBSCRIBE": frozenset({"event", "expires", "accept"}),
    "REFER": frozenset({"refer-to", "referred-by", "refer-sub", "target-dialog"}),
    "MESSAGE": frozenset({"content-disposition"}),
    "INVITE": frozenset({"content-disposition", "recv-info"}),
    "UPDATE": frozenset({"content-disposition", "recv-info"}),
}
NO_HEADERS: frozenset[str] = frozenset()
NO_ANSWER = "no_answer"
RESEND_2XX = {ZERO: "2xx_zero", ONE: "2xx_one"}
LINGER = "linger"
MAX_DURATION = "max_duration"
RTP_CHECK = "rtp_check"
# session timers (RFC 4028), per leg: we refresh it, or we wait for its refreshes
SE_REFRESH = {ZERO: "se_refresh_zero", ONE: "se_refresh_one"}
SE_EXPIRE = {ZERO: "se_expire_zero", ONE: "se_expire_one"}
TRANSFER_NO_ANSWER = "transfer_no_answer"
ORIGINATE_NO_ANSWER = "originate_no_answer"  # channel ZERO of a call we dialled rang too long
TRANSFER_TIMEOUT = 60.0  # seconds a transfer's target may ring before the transferor hears 480
SE_TIMERS = {name: ch for ch in Channel for name in (SE_REFRESH[ch], SE_EXPIRE[ch])}
TOO_SMALL = "Session Interval Too Small"
# the `hangup` reason when the program ended an answered call (a rule's `hangup`, close_call_session)
HUNG_UP_BY_PROGRAM = "hung up by the program"
# the `hangup` reason of a transferor's leg ended by Callflow once its transfer connected (blind, attended)
TRANSFERRED = "transferred"

# a step that needs the media backend yields its request and is sent the result (machine.py)
Step = Generator[tuple[Any, ...], Any, None]

