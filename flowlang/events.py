"""The SDK's events: one definition of each event's name, fields, their types and meanings.

Pure data, shared by both sides: the compiler checks every `{field}` of a handler's text against the
fields of the handler's event, the runtime's EventBus refuses names that are not here, the dialplan
fills what the engine leaves out (the call record fields), and `docs/events.md` is generated from this
table (see GENERATE), so the documentation cannot drift from it.

Three sources of fields, one namespace per event:

- `fields`: what the runtime puts in the event (`bus.emit(name, **fields)`); optional ones may be
  left out and then take their `default` in handler texts;
- `CALL_FIELDS`: for call events, what the dialplan remembers of the call from its `created` event
  (who called, whom, from which number) and fills in every later event of that call;
- `event`: the event's own name.

`bus` says whether the event goes through the engine's EventBus (listeners and handlers see it) or
is only a log line (`event=NAME` in the log, written where it happens).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

Kind = Literal["call", "line", "user", "chat", "security", "server", "media", "routing"]


@dataclass(frozen=True, slots=True)
class Field:
    """One field of an event: `name=value` in the log, `{name}` in a handler's text."""

    name: str
    type: type  # str, int or float: what the value is (it prints as text either way)
    meaning: str
    optional: bool = False  # the runtime may leave it out ...
    default: str | None = None  # ... and a handler's text then shows this (None: the field is absent)


@dataclass(frozen=True, slots=True)
class EventSpec:
    """One event: its name in the log and in `bus.emit`, what it means, and its fields."""

    name: str
    kind: Kind
    meaning: str
    fields: tuple[Field, ...]
    handler: str | None = None  # the `.flow` handler that observes it, e.g. "on created"
    bus: bool = True  # emitted on the EventBus; False: a log line only
    sdk: str | None = None  # the SIP server SDK's name for it

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


def _f(name: str, type_: type, meaning: str, optional: bool = False, default: str | None = None) -> Field:
    return Field(name, type_, meaning, optional, default)


CALL = _f("call", str, "the call session's id")
PEER_TYPE = _f("peer_type", str, "`USER` or `LINE`")

# Filled by the dialplan in every event of a call from what the call's `created` event said, and
# `duration` from when its `connected` event came: the engine's later events do not repeat them.
CALL_FIELDS: tuple[Field, ...] = (
    _f("from", str, "the name of the user or line the call came from; empty for an unknown caller"),
    _f("from_type", str, "`user`, `line` or `unknown`"),
    _f("caller_id", str, "the caller's number: for a user, its `caller-id`, else its name; for a "
                         "line, the number the provider sent"),
    _f("to", str, "the dialled number: the Request-URI's user part"),
)
DURATION = _f("duration", int, "whole seconds since the call connected, 0 when it never did")

EVENTS: tuple[EventSpec, ...] = (
    # ---- calls: the SDK's OnCallSession* events, emitted by the call layer
    EventSpec("created", "call", "a call session exists: an INVITE from a known user or line arrived", (
        CALL, PEER_TYPE, _f("peer", str, "the user's or line's name the call came from"),
        _f("caller", str, "the caller's number (same as caller_id)"), _f("to", str, "the dialled number"),
        _f("origin", str, "`originated` when Callflow dialled the call itself (`dial_call_session`, `callflow "
                          "call`): channel ZERO is then the leg it rang first, and `peer` the user (or line) "
                          "the call is made for", optional=True, default="incoming"),
    ), handler="on created", sdk="OnCallSessionCreated"),
    EventSpec("incoming", "call", "the call is about to be routed (media anchored)", (
        CALL, PEER_TYPE, _f("peer", str, "the user's or line's name the call came from"),
        _f("caller", str, "the caller's number"), _f("to", str, "the dialled number"),
        _f("user_agent", str, "the caller's User-Agent header", optional=True, default=""),
        _f("ip", str, "the address the INVITE came from"), _f("port", int, "its port"),
    ), sdk="OnIncomingCall"),
    EventSpec("connecting", "call", "the dialled leg rings (its first provisional answer)", (
        CALL, _f("channel", str, "the leg that rings: `ONE`, the leg Callflow dialled (`ZERO` too for a call "
                                 "Callflow originated: its first leg rings)"),
    ), handler="on connecting", sdk="OnCallSessionConnecting"),
    EventSpec("originated", "call", "a call Callflow dialled itself (`dial_call_session`, `callflow call`): "
              "channel ZERO answered; the call goes on to dial channel ONE (or play to ZERO). Had it not "
              "answered, `failed` says why (480 no answer, 486 busy...)", (
        CALL, _f("peer_type", str, "`USER` or `LINE`: the kind of peer that answered on channel ZERO"),
        _f("peer", str, "the user's or line's name that answered"),
    )),
    EventSpec("connected", "call", "answered: voice flows both ways", (
        CALL, _f("peer_type", str, "`USER` or `LINE`: the kind of peer that answered"),
        _f("peer", str, "the user's or line's name that answered"),
    ), handler="on connected", sdk="OnCallSessionConnected"),
    EventSpec("answered", "call", "Callflow answered channel ZERO itself with its own 200 OK (`play ... answered`, "
              "`gather`, a voicemail's `record`): the call counts as answered from here (its record's answered_at, "
              "duration and outcome); a far leg answering later is `connected`", (CALL,)),
    EventSpec("hangup", "call", "a leg hung up (or was hung up on: see reason)", (
        CALL, _f("channel", str, "the leg that hung up: `ZERO` the leg the call came in on, `ONE` the "
                                 "leg Callflow dialled; empty when Callflow ended both legs itself (maximum "
                                 "duration, no RTP, session timer: see reason)", optional=True, default=""),
        _f("reason", str, "why: `BYE` (that channel sent BYE), `cancelled`, `no ACK`, `session expired: no "
                          "refresh on channel ZERO within 1800 s` (RFC 4028), `session refresh failed: 481 "
                          "from channel ONE`, `transferred` (that channel's party transferred the call, "
                          "blind or attended, and left; or the other party was taken into an attended transfer), "
                          "`hung up by the program` (a rule's `hangup`, `close_call_session`), "
                          "`transfer failed: 486 Busy Here` (the transferor had left), ...",
           optional=True, default="BYE"),
    ), handler="on hangup", sdk="OnCallSessionHangUp"),
    EventSpec("failed", "call", "the call never connected", (
        CALL, _f("code", int, "the SIP status the caller got (for a call Callflow originated: the status "
                              "channel ZERO answered with, 480 when it did not answer in time)"),
        _f("reason", str, "its reason phrase"),
    ), handler="on failed", sdk="OnCallSessionFailed"),
    EventSpec("dtmf", "call", "a DTMF digit from a leg (RFC 4733 telephone-event, reported once at its end, or "
              "SIP INFO); the other leg still gets it, in the form it negotiated (RFC 4733 if its SDP has "
              "telephone-event, else SIP INFO)", (
        CALL,
        _f("channel", str, "`ZERO` (the leg the call came in on) or `ONE` (the leg Callflow dialled)"),
        _f("digit", str, "`0`-`9`, `*`, `#`, `A`-`D`"),
        _f("duration", int, "how long the key was held, in milliseconds (not the call's duration)"),
        _f("source", str, "`rfc4733` (telephone-event in RTP) or `info` (SIP INFO, `application/dtmf-relay` "
                          "or `application/dtmf`)", optional=True, default="rfc4733"),
    ), handler="on dtmf", sdk="OnDetectDigitDTMF"),
    EventSpec("gather", "call", "a `gather` (a menu) finished one round of collecting digits from the caller; "
              "a round that got nothing or a wrong entry is followed by another while `retries` last", (
        CALL,
        _f("digits", str, "what the caller entered, without the terminator (empty for nothing)"),
        _f("outcome", str, "how the round ended: `terminator` (the terminator key), `max` (max digits "
                           "reached), `digits` (a pause after some digits) or `timeout` (nothing entered)"),
        _f("attempt", int, "the round: 1, then 2... for each replay of the prompt"),
        _f("final", str, "`yes` when this round's entry goes to a branch, `no` when the prompt is played again"),
    ), handler="on gather"),
    EventSpec("dtmf_unexpected", "call", "telephone-event packets (a payload type the call's SDPs name "
              "telephone-event) arrived on a leg whose own offer/answer did not settle telephone-event; "
              "reported once per call and leg, their digits are not `dtmf` events, the packets are relayed "
              "as any RTP and the call goes on", (
        CALL, _f("channel", str, "the leg they arrived on: `ZERO` or `ONE`"),
        _f("digit", str, "the first such digit"),
    )),
    EventSpec("dtmf_dropped", "call", "a digit could not be delivered to a leg: its phone negotiated no "
              "telephone-event and does not take SIP INFO (its Allow has no INFO), it refused the INFO, "
              "or the call was not connected; the call goes on", (
        CALL, _f("channel", str, "the leg it was meant for: `ZERO` or `ONE`"),
        _f("digit", str, "the digit (or digits, for `send_dtmf`)"),
        _f("reason", str, "why, e.g. `the phone does not accept INFO (Allow)`, `INFO answered 415 ...`"),
    )),
    EventSpec("dtmf_sent", "call", "the program pressed keys on a leg's phone (SDK send_dtmf, `.flow` `send dtmf`); "
              "they go out as RFC 4733 or SIP INFO, and any that cannot be delivered is a `dtmf_dropped`", (
        CALL, _f("channel", str, "the leg they were sent to: `ZERO` or `ONE`"),
        _f("digits", str, "the keys, in order"),
    )),
    EventSpec("closed", "call", "the call is over and everything it held is released", (
        CALL, _f("reason", str, "how it ended: `hangup`, `cancelled`, `404 Not Found`, ..."),
        _f("rtp_in", int, "RTP packets received from channel ZERO's side", optional=True, default="0"),
        _f("rtp_out", int, "RTP packets received from channel ONE's side (sent on to ZERO)", optional=True,
           default="0"),
    ), handler="on closed", sdk="OnCallSessionClosed"),
    EventSpec("transfer", "call", "a transfer asked by a user's phone (REFER, RFC 3515) took a step", (
        CALL, _f("transferor", str, "the user whose phone asked for the transfer"),
        _f("target", str, "the number or name transferred to (the Refer-To's user part), routed by the rules "
                      "as a call from that user"),
        _f("kind", str, "`blind`, or `attended` (Refer-To with Replaces: the transferor's consultation call)"),
        _f("channel", str, "the transferor's leg: the one that is replaced"),
        _f("outcome", str, "`trying` (202 sent, routing), `ringing`, `connected` (the remaining party is "
                           "bridged to the new leg, the transferor's leg ended) or `failed`"),
        _f("reason", str, "for `failed`: the status and why, e.g. `404 Not Found (no route)`", optional=True,
           default=""),
    ), sdk="OnCallSessionTransfer"),
    # ---- recording (`record`, `record call`): runtime/calls/record.py
    EventSpec("recording_started", "call", "a recording began: a voicemail after its beep, or a call recording", (
        CALL, _f("path", str, "a file it will write (one event per file: `per leg` writes two, `both` three)"),
        _f("kind", str, "`voicemail` or `call`"),
        _f("mix", str, "`mono` (voicemail), `mixed`, `per leg` or `both`"),
    )),
    EventSpec("recording_stopped", "call", "a recording stopped listening; its files are being written", (
        CALL, _f("kind", str, "`voicemail` or `call`"),
        _f("stop", str, "`max length`, `silence`, `digit` or `hangup`"),
        _f("seconds", float, "the audio recorded"),
        _f("skipped", int, "packets that were not G.711 (PCMU/PCMA) and are not in the file"),
    ), bus=False),
    EventSpec("recording", "call", "a recording's file is written (one event per file), and listed in the call "
              "record", (
        CALL, _f("path", str, "the file's absolute path, inside the recordings folder"),
        _f("seconds", float, "its length of audio"), _f("bytes", int, "its size"),
        _f("channel", str, "whose audio: `ZERO` (the caller), `ONE` (the dialled leg) or `mixed` (both summed)"),
        _f("kind", str, "`voicemail` or `call`"),
        _f("stop", str, "what ended it: `max length`, `silence`, `digit`, `hangup`"),
    )),
    EventSpec("recording_failed", "call", "a recording could not be made or written; a voicemail call then "
              "goes on with the rule's next statement, a recorded call goes on unrecorded", (
        CALL, _f("path", str, "the file it was for (empty when the name itself was refused)", optional=True,
                 default=""),
        _f("reason", str, "why, in words an operator can act on: a full disk, a folder that is not writable, "
                          "a name leaving the recordings folder, a call not answered..."),
    )),
    # ---- lines (accounts at providers)
    EventSpec("line_registered", "line", "a line's registration succeeded (or was refreshed)", (
        _f("line", str, "the line's name"), _f("code", int, "the provider's status (200)"),
        _f("reason", str, "its reason phrase"), _f("expires", int, "seconds the provider granted"),
    ), handler="on line registered", sdk="OnLineRegisterSuccess"),
    EventSpec("line_register_failed", "line", "a line's registration failed; it is retried with backoff", (
        _f("line", str, "the line's name"), _f("code", int, "the status, or 408 when nothing came back"),
        _f("reason", str, "why"), _f("retry_in", str, "when the next attempt goes out, e.g. `30s`"),
        _f("state", str, "the line's state now: `failed_waiting`, `expired` or `rejected`", optional=True,
           default=""),
        _f("action", str, "what the operator should do, when the provider refuses our credentials",
           optional=True, default=""),
    ), handler="on line register failed", sdk="OnLineRegisterFailed"),
    EventSpec("line_unregistered", "line", "a line's registration was removed (on reload or stop)", (
        _f("line", str, "the line's name"), _f("code", int, "the provider's status"),
        _f("reason", str, "its reason phrase, or why the un-registration ended", optional=True, default=""),
    ), sdk="OnLineUnregister"),
    EventSpec("line_state", "line", "a line's registration state changed (every transition of its machine)", (
        _f("line", str, "the line's name"),
        _f("state", str, "the new state: unregistered, trying, registered, failed_waiting, rejected, expired, "
                         "unregistering or not_registering"),
        _f("previous", str, "the state before"),
        _f("code", int, "the SIP status that caused it, when one did", optional=True, default=""),
        _f("reason", str, "why"),
        _f("expires", int, "seconds granted, when the line became registered", optional=True, default=""),
    )),
    EventSpec("line_failover", "line", "a line's server did not answer: the next one DNS named (SRV) is tried", (
        _f("line", str, "the line's name"), _f("failed", str, "the address that failed, `ip:port`"),
        _f("next", str, "the address tried next"),
        _f("found_by", str, "how DNS gave it, e.g. `SRV _sip._udp.example.com`"),
    )),
    EventSpec("line_lease_acquired", "line", "this node took the line's lease in the shared database: it "
              "registers the line now (a cluster, --location-dsn)", (
        _f("line", str, "the line's name"), _f("node", str, "this node's id (--node-id)"),
        _f("expires", str, "when the lease runs out unless renewed (ISO 8601, UTC, the database's clock)"),
    )),
    EventSpec("line_lease_lost", "line", "this node lost the line's lease (renewals failed until it ran out, or "
              "another node holds it): it stops registering the line, without un-registering, and retries", (
        _f("line", str, "the line's name"), _f("node", str, "this node's id (--node-id)"),
        _f("expires", str, "the lease's last known expiry (ISO 8601, UTC), or empty"),
        _f("reason", str, "why", optional=True, default=""),
    )),
    # ---- users (phones registering to us)
    EventSpec("user_registered", "user", "a phone registered a new contact for a user", (
        _f("user", str, "the user's name"), _f("contact", str, "the Contact URI the phone registered"),
        _f("ip", str, "where the REGISTER came from"), _f("port", int, "its port"),
        _f("expires", int, "seconds the registration lasts (filled from the location service)",
           optional=True),
    ), handler="on user registered", sdk="OnRegisterUserSuccess"),
    EventSpec("user_unregistered", "user", "a user's contact went away (unregistered, lapsed or replaced)", (
        _f("user", str, "the user's name"), _f("contact", str, "the Contact URI removed"),
        _f("reason", str, "`unregistered` (Expires 0 or `*`), `expired` (the phone did not refresh it) or "
                          "`replaced` (a newer contact took the slot: at most 10 per user)",
           optional=True, default="unregistered"),
    ), handler="on user unregistered", sdk="OnUnregisterUser"),
    EventSpec("user_register_failed", "user", "an authenticated REGISTER was refused", (
        _f("user", str, "the address's user part"), _f("ip", str, "where it came from"),
        _f("reason", str, "why"),
    ), sdk="OnRegisterUserFailed"),
    # ---- chat (SIP MESSAGE outside a dialog, RFC 3428)
    EventSpec("message", "chat", "a user's or a line's MESSAGE was relayed (or could not be): one event per "
              "MESSAGE, once its sender has had the answer", (
        _f("from", str, "the sender as the recipient sees it: a user's caller-id (else its name), a line's "
                        "caller number"),
        _f("from_type", str, "`user` or `line`"),
        _f("user", str, "the user who sent it (from a user)", optional=True),
        _f("line", str, "the line it came in on (from a provider)", optional=True),
        _f("to", str, "the user or number it was sent to"),
        _f("text", str, "the message (a text/* body; other types show their type and size), 1,000 characters "
                        "at most"),
        _f("target", str, "where it went: `user NAME` / `line NAME`, space-separated (empty: no route)",
           optional=True, default=""),
        _f("code", int, "the final status the sender got: 2xx delivered, 404 no route, 480 nobody registered, "
                        "408 no answer..."),
        _f("reason", str, "that status's reason phrase"),
    ), handler="on message", sdk="OnChatMessage"),
    # ---- security
    EventSpec("attack_detected", "security", "a source is blocked or ignored", (
        _f("kind", str, "`brute_force` (password guessing), `flood` (too many messages) or `scan` "
                        "(a known scanner's User-Agent)"),
        _f("ip", str, "the source address"),
        _f("user", str, "the account being guessed, when the account (not a source) is backed off",
           optional=True, default=""),
        _f("action", str, "what was done, e.g. `no password checked from it for 300s`"),
    )),
    # ---- call records and SIP trace (runtime/records): log lines only
    EventSpec("cdr_started", "server", "call records are written to a store", (
        _f("store", str, "where: the SQLite file or the PostgreSQL DSN without its password"),
    ), bus=False),
    EventSpec("cdr_stopped", "server", "the call-records writer stopped (server shutdown), its queue written", (
        _f("store", str, "where"), _f("written", int, "records written"), _f("dropped", int, "records lost"),
    ), bus=False),
    EventSpec("cdr_error", "server", "the records store failed; records wait in memory and are retried", (
        _f("store", str, "where"), _f("error", str, "what the database said"),
        _f("action", str, "what happens next", optional=True, default=""),
    ), bus=False),
    EventSpec("cdr_recovered", "server", "the records store works again; the waiting records are written", (
        _f("store", str, "where"),
    ), bus=False),
    EventSpec("cdr_dropped", "server", "the records queue was full: the records of calls ending then were dropped", (
        _f("store", str, "where"), _f("dropped", int, "how many"), _f("queued", int, "still queued"),
        _f("reason", str, "why"),
    ), bus=False),
    EventSpec("cdr_lost", "server", "records could not be written at all (shutdown with the store down)", (
        _f("store", str, "where", optional=True, default=""), _f("call", str, "the call", optional=True, default=""),
        _f("records", int, "how many", optional=True, default=""), _f("reason", str, "why", optional=True, default=""),
    ), bus=False),
    EventSpec("cdr_orphans", "server", "at start: this node's answered calls whose end was never written (it was "
              "killed during them) are marked hangup_reason=node_lost", (
        _f("store", str, "where"), _f("node", str, "this node (--node-id)"), _f("records", int, "how many"),
    ), bus=False),
    EventSpec("edge_trusted", "server", "at start: requests from these edge proxies (--edge) are judged by the "
              "phone's address the edge reports in the Via below its own; the edges themselves are never held", (
        _f("edges", str, "the trusted edges, `IP[:PORT]` separated by commas"),
    ), bus=False),
    EventSpec("nonce_secret_shared", "server", "at start: digest nonces are signed with a secret shared by the "
              "nodes, so a challenge from one node may be answered on another", (
        _f("source", str, "`option` (--nonce-secret) or the environment variable's name"),
    ), bus=False),
    EventSpec("cdr_incomplete", "server", "a call's record was written before its end (too many open calls)", (
        _f("call", str, "the call"), _f("reason", str, "why"),
    ), bus=False),
    EventSpec("sip_trace", "server", "one SIP message sent or received (debug level only)", (
        _f("direction", str, "`in` or `out`"), _f("transport", str, "udp, tcp, tls, ws or wss"),
        _f("address", str, "the peer's HOST:PORT"), _f("local", str, "our HOST:PORT"),
        _f("call_id", str, "the message's Call-ID"),
    ), bus=False),
    EventSpec("hep_started", "server", "SIP messages are mirrored to a HEP v3 collector (Homer, sngrep)", (
        _f("collector", str, "HOST:PORT"), _f("capture_id", int, "our HEP capture id"),
    ), bus=False),
    EventSpec("hep_error", "server", "a HEP packet could not be sent (the collector is not told twice a second)", (
        _f("collector", str, "HOST:PORT", optional=True, default=""),
        _f("failed", int, "packets failed so far", optional=True, default=""),
        _f("error", str, "the socket's error", optional=True, default=""),
        _f("reason", str, "why", optional=True, default=""),
    ), bus=False),
    EventSpec("auth_failed", "security", "a request failed digest authentication (403)", (
        _f("method", str, "the SIP method"), _f("ip", str, "the source address"), _f("reason", str, "why"),
    ), bus=False),
    EventSpec("message_refused", "security", "a malformed or refused SIP message", (
        _f("source", str, "HOST:PORT it came from"),
        _f("code", str, "the status answered, or `dropped` when nothing was"), _f("reason", str, "why"),
    ), bus=False),
    EventSpec("overload", "server", "new calls are shed with 503 + Retry-After", (
        _f("lag_ms", int, "how late the event loop runs"), _f("cpu", str, "the process's CPU share"),
        _f("backlog_kb", str, "unread datagrams on the SIP sockets"), _f("action", str, "what is done"),
    ), bus=False),
    EventSpec("overload_over", "server", "calls are admitted again", (
        _f("lag_ms", int, "how late the event loop runs"), _f("cpu", str, "the process's CPU share"),
        _f("backlog_kb", str, "unread datagrams on the SIP sockets"),
    ), bus=False),
    # ---- routing and the program
    EventSpec("originating", "routing", "Callflow places a call itself (`dial_call_session`, `callflow call`, "
              "`POST /api/calls`): channel ZERO is being rung", (
        CALL, _f("zero", str, "what is rung first: `user:NAME` or `line:NAME`"),
        _f("number", str, "the number the call is for (dialled through the rules, or bridged to), `-` for none"),
        _f("then", str, "what follows ZERO's answer: `route` (the rules decide), `bridge` or `play`"),
    ), bus=False),
    EventSpec("originate_refused", "routing", "click-to-call (`callflow call`, `POST /api/calls`) refused before "
              "ringing the user's phone: the rules refuse a call from that user to that number", (
        _f("user", str, "the user whose phone would have rung"), _f("to", str, "the number asked for"),
        _f("code", int, "the rules' status (404 when no rule takes the call)"), _f("reason", str, "its reason"),
    ), bus=False),
    EventSpec("routed", "routing", "an `on incoming` rule decided a call", (
        CALL, _f("rule", str, "the deciding rule, `file:line:col`"),
    ), bus=False),
    EventSpec("no_route", "routing", "no `on incoming` rule takes the call: refused with 404", (
        CALL, PEER_TYPE, _f("peer", str, "the user's or line's name"), _f("to", str, "the dialled number"),
        _f("reason", str, "why"),
    ), bus=False),
    EventSpec("log", "routing", "a `log` statement of a rule or a handler", (
        _f("call", str, "the call (a rule's log)", optional=True),
        _f("handler", str, "the event whose handler logs (a handler's log)", optional=True),
        _f("text", str, "the statement's text, its `{fields}` filled"),
    ), bus=False),
    EventSpec("reloaded", "server", "a changed script was compiled and swapped in (one line per attempt)", (
        _f("reason", str, "what triggered it: `file changed`, `SIGHUP`, the control endpoint"),
        _f("version", str, "the new program's version id (as `callflow check` prints it)"),
        _f("previous", str, "the version it replaced"), _f("compile_ms", int, "how long the compile took"),
        _f("users+", str, "users added (and `users-` removed, `lines+` added, `lines~` changed, `lines-` "
                          "removed), comma-separated", optional=True),
        _f("warnings", int, "how many warnings the new program has", optional=True),
        _f("diagnostics", str, "those warnings, `file:line:col: message` separated by ` | `", optional=True),
        _f("cleared", str, "the error of an earlier failed attempt this one fixed", optional=True),
    ), bus=False),
    EventSpec("reload_unchanged", "server", "a reload attempt gave the running program again", (
        _f("reason", str, "what triggered it"), _f("version", str, "the running version id"),
        _f("compile_ms", int, "how long the compile took"),
        _f("cleared", str, "the error of an earlier failed attempt this one fixed", optional=True),
    ), bus=False),
    EventSpec("reload_failed", "server", "a changed script has errors: the previous program keeps running", (
        _f("reason", str, "what triggered it"), _f("version", str, "the version kept running"),
        _f("kept", str, "`previous`"), _f("error", str, "the first error, `file:line:col: message`"),
        _f("diagnostics", str, "every diagnostic (bounded), in one quoted field"),
    ), bus=False),
    EventSpec("started", "server", "the server runs", (
        _f("script", str, "the script's path"), _f("users", int, "users declared"),
        _f("lines", int, "lines declared"),
    ), bus=False),
    EventSpec("stopping", "server", "the server is shutting down", (), bus=False),
    EventSpec("listening", "server", "a SIP listener is open", (
        _f("transport", str, "udp, tcp, tls, ws or wss"), _f("address", str, "HOST:PORT"),
        _f("advertise", str, "the address written in Via, Contact and SDP"),
    ), bus=False),
    EventSpec("bindings_restored", "server", "registrations restored from `--location-db` or "
              "`--location-dsn` at start-up", (
        _f("file", str, "the SQLite file, or the PostgreSQL DSN without its password"),
        _f("restored", int, "bindings still valid, restored"),
        _f("dropped", int, "bindings expired, over TCP/TLS/WS, or of users no longer declared"),
    ), bus=False),
    EventSpec("location_db_error", "server", "the location database failed: registrations are kept in "
              "memory only until it recovers", (
        _f("file", str, "the SQLite file, or the PostgreSQL DSN without its password"),
        _f("error", str, "what failed"), _f("action", str, "what is done"),
    ), bus=False),
    EventSpec("location_db_recovered", "server", "the location database works again", (
        _f("file", str, "the SQLite file, or the PostgreSQL DSN without its password"),
    ), bus=False),
    EventSpec("connection_closed", "server", "a TCP, TLS or WebSocket connection closed", (
        _f("transport", str, "its transport"), _f("peer", str, "HOST:PORT of the far end"),
        _f("reason", str, "why"),
    ), bus=False),
    EventSpec("connection_refused", "security", "a TCP, TLS or WebSocket connection was refused at accept: "
              "its source or the server holds too many (logged once per source per minute)", (
        _f("transport", str, "its transport"), _f("source", str, "the source address"),
        _f("held", int, "connections that source holds"), _f("total", int, "connections the server holds"),
        _f("reason", str, "`per_source_limit` or `total_limit`"),
    ), bus=False),
    EventSpec("connections_refused", "security", "a minute's summary of refused connections", (
        _f("window_s", int, "the window, seconds"), _f("sources", int, "sources refused"),
        _f("refused", int, "connections refused"), _f("worst", str, "the source refused most"),
        _f("worst_refused", int, "how often"),
    ), bus=False),
    EventSpec("connect_failed", "server", "a connection to a peer could not be opened", (
        _f("transport", str, "its transport"), _f("dest", str, "HOST:PORT"), _f("error", str, "why"),
        _f("dropped", int, "messages that were waiting for it"),
    ), bus=False),
    EventSpec("send_failed", "server", "a message could not be sent", (
        _f("transport", str, "its transport", optional=True), _f("dest", str, "HOST:PORT"),
        _f("reason", str, "why", optional=True), _f("error", str, "why (the OS's words)", optional=True),
    ), bus=False),
    # ---- media
    EventSpec("playing", "media", "a `play` statement sends a file to the caller", (
        CALL, _f("file", str, "the file"), _f("codec", str, "PCMU or PCMA"),
        _f("packets", int, "20 ms RTP packets to send"), _f("answered", str, "`True`: the call was answered "
                                                                            "first; `False`: early media"),
    ), bus=False),
    EventSpec("play_failed", "media", "a `play` statement (or `dial_call_session(play=)`) could not play: the file "
              "cannot be read or decoded, or the call has no media; the rule goes on (an originated call's "
              "result is then a Failure)", (
        CALL, _f("file", str, "the file", optional=True), _f("reason", str, "why"),
    )),
    EventSpec("gather_deaf", "media", "a `gather` started on a call whose keys cannot be heard (its offer has no "
              "RFC 4733 telephone-event, or it made no offer and the gather has no prompt, or its media is in "
              "rtpengine and Callflow takes no DTMF reports from it): the menu ends as if nothing was entered", (
        CALL, _f("reason", str, "why"),
    ), bus=False),
    EventSpec("media_expect_ignored", "media", "a phone's signalling source is not an IP address, so its "
              "media is latched by its SDP only", (
        CALL, _f("leg", int, "0 (channel ZERO) or 1 (ONE)"), _f("host", str, "the source given"),
        _f("reason", str, "why"),
    ), bus=False),
    EventSpec("media_strangers", "media", "at a call's end: packets from sources that were not the call's "
              "peers were dropped (someone sprayed its ports, or a peer's media came from elsewhere)", (
        CALL, _f("leg0", int, "packets dropped on channel ZERO's port"),
        _f("leg1", int, "packets dropped on channel ONE's port"),
    ), bus=False),
    EventSpec("rtpengine_ready", "media", "at start with `--media rtpengine:HOST:PORT`: rtpengine answered "
              "a ping", (_f("address", str, "its ng control address"),), bus=False),
    EventSpec("rtpengine_unreachable", "media", "at start: rtpengine did not answer a ping; Callflow runs on, "
              "and calls fail until it answers", (
        _f("address", str, "its ng control address"), _f("reason", str, "what went wrong"),
    ), bus=False),
    EventSpec("rtpengine_warning", "media", "rtpengine carried out a request but warned about it", (
        _f("address", str, "its ng control address"), _f("command", str, "offer, answer, query, delete..."),
        _f("warning", str, "what rtpengine said"),
    ), bus=False),
    EventSpec("rtpengine_stray", "media", "a datagram on the ng control socket that answers no request of "
              "ours (a late reply after the retransmissions gave up, or garbage); dropped", (
        _f("address", str, "rtpengine's ng control address"), _f("size", int, "bytes"),
        _f("reason", str, "why it was dropped"),
    ), bus=False),
    EventSpec("dtmf_as_info", "call", "the media backend could not send RFC 4733 digits into a leg that "
              "negotiated telephone-event (rtpengine without DTMF injection): they go as SIP INFO instead", (
        CALL, _f("channel", str, "the leg: `ZERO` or `ONE`"), _f("reason", str, "what the backend said"),
    ), bus=False),
    EventSpec("rtpengine_dtmf_failed", "media", "rtpengine refused or did not answer a `play DTMF` (it needs "
              "transcoding support, i.e. media through its userspace)", (
        CALL, _f("reason", str, "what went wrong"),
    ), bus=False),
    EventSpec("rtpengine_dtmf_listening", "media", "at start with `--rtpengine-dtmf HOST:PORT`: Callflow takes "
              "rtpengine's DTMF reports there (rtpengine's `--dtmf-log-dest`), so keys pressed reach gather and "
              "`on dtmf` as RFC 4733 digits", (
        _f("address", str, "HOST:PORT bound"), _f("source", str, "the only address reports are taken from "
                                                                "(rtpengine's ng address)"),
        _f("hint", str, "the rtpengine option that must point here"),
    ), bus=False),
    EventSpec("rtpengine_dtmf_off", "media", "at start with `--media rtpengine` and no `--rtpengine-dtmf`: "
              "keys pressed as RFC 4733 telephone-events are relayed by rtpengine but not heard by Callflow", (
        _f("reason", str, "why, and what to do"),
    ), bus=False),
    EventSpec("rtpengine_dtmf_refused", "security", "a datagram on the `--rtpengine-dtmf` socket was not taken: "
              "not from rtpengine's address, or not a DTMF report (logged for the first, then one in 100)", (
        _f("address", str, "HOST:PORT it came to"), _f("source", str, "HOST:PORT it came from"),
        _f("refused", int, "datagrams refused so far"), _f("reason", str, "why"),
    ), bus=False),
    EventSpec("rtpengine_delete_failed", "media", "at a call's end rtpengine did not confirm deleting the "
              "call's media (it ends it itself after its own timeout without RTP)", (
        CALL, _f("reason", str, "what went wrong"),
    ), bus=False),
    # ---- the call machine and the line machine's own troubles (bugs or refusals, never silent)
    EventSpec("call_error", "call", "an internal error in a step of a call: the call is ended with BYE or "
              "CANCEL as its state needs, its media released, `closed` emitted", (
        CALL, _f("step", str, "the step that failed, or `ending`", optional=True),
        _f("state", str, "the call's state then", optional=True),
        _f("action", str, "the action the runner could not carry out", optional=True),
        _f("error", str, "the error", optional=True), _f("reason", str, "why", optional=True),
    ), bus=False),
    EventSpec("illegal_move", "call", "the call machine refused a state change its transition table does "
              "not allow (a bug; the call then ends as after a call_error)", (
        CALL, _f("from", str, "the state it was in"), _f("to", str, "the state asked for"),
    ), bus=False),
    EventSpec("accept_ignored", "call", "the dialplan asked to accept a call no longer waiting for it (it "
              "was cancelled meanwhile)", (
        CALL, _f("state", str, "the call's state"),
    ), bus=False),
    EventSpec("line_predecessor_timeout", "line", "a line's previous registration (before a reload changed "
              "it) did not finish un-registering in time; the new one goes ahead", (
        _f("line", str, "the line's name"),
    ), bus=False),
    EventSpec("line_leases", "line", "at start: lines are registered under leases in the shared database, "
              "one node per line (--location-dsn)", (
        _f("file", str, "the database (password left out)"), _f("node", str, "this node's id (--node-id)"),
        _f("lease_seconds", float, "how long a hold lasts without renewal (--lease-seconds)"),
    ), bus=False),
    EventSpec("line_send_failed", "line", "a line's request could not be sent (a bug: no provider address)", (
        _f("line", str, "the line's name"), _f("reason", str, "why"),
    ), bus=False),
    EventSpec("line_response_ignored", "line", "a provider's response to a line's request was unreadable", (
        _f("line", str, "the line's name"), _f("reason", str, "why"),
    ), bus=False),
    EventSpec("dns_failed", "line", "a NAPTR or SRV lookup for a line's server failed: its A records are used", (
        _f("name", str, "the name looked up"), _f("error", str, "what DNS said"), _f("action", str, "what follows"),
    ), bus=False),
    EventSpec("dns_unconfigured", "line", "no DNS configuration (/etc/resolv.conf): NAPTR and SRV are not "
              "looked up", (
        _f("error", str, "why"), _f("action", str, "what follows"),
    ), bus=False),
    # ---- operator's endpoint and transport
    EventSpec("control_listening", "server", "the control endpoint (status, metrics, the live page) is open", (
        _f("address", str, "HOST:PORT"), _f("auth", str, "`token` or `none`"),
        _f("page", str, "the live page's address"),
    ), bus=False),
    EventSpec("control_refused", "security", "a control-endpoint request came without the control token or with "
              "a wrong one (401); the token's text is never logged", (
        _f("ip", str, "the source address"), _f("reason", str, "`no token` or `wrong token`"),
        _f("method", str, "the HTTP method"), _f("path", str, "the path asked for"),
    ), bus=False),
    EventSpec("control_unavailable", "server", "the default control address is taken: the server runs "
              "without a control endpoint", (
        _f("address", str, "HOST:PORT"), _f("reason", str, "why"), _f("hint", str, "what to do"),
    ), bus=False),
    EventSpec("note", "server", "a message Callflow's code wrote as plain text rather than as an event, "
              "carried whole by the log formatter (runtime/logfmt.py)", (
        _f("logger", str, "the module's logger, e.g. `callflow.lines`"), _f("msg", str, "the text"),
    ), bus=False),
    EventSpec("unreachable", "server", "ICMP says a destination cannot be reached: its transactions fail "
              "at once", (
        _f("transport", str, "its transport"), _f("dest", str, "HOST:PORT"),
    ), bus=False),
    EventSpec("observer_failed", "server", "a SIP message observer (trace, HEP, metrics) raised (a bug: the "
              "traceback follows; the message went on)", (
        _f("direction", str, "`in` or `out`"),
    ), bus=False),
    EventSpec("listener_failed", "server", "a listener of the event bus raised (a bug: the traceback "
              "follows; the other listeners still ran)", (
        _f("name", str, "the event's name"),
    ), bus=False),
    EventSpec("event_invalid", "server", "the runtime emitted an event or a field this table does not "
              "define (a bug: the event is still logged and delivered)", (
        _f("name", str, "the event's name"), _f("reason", str, "what is wrong with it"),
    ), bus=False),
)

BY_NAME: Mapping[str, EventSpec] = MappingProxyType({e.name: e for e in EVENTS})
EVENT_NAMES: tuple[str, ...] = tuple(e.name for e in EVENTS)
BUS_EVENT_NAMES: tuple[str, ...] = tuple(e.name for e in EVENTS if e.bus)
HANDLED_EVENTS: tuple[str, ...] = tuple(e.name for e in EVENTS if e.handler)
CALL_EVENT_NAMES: tuple[str, ...] = tuple(e.name for e in EVENTS if e.kind == "call" and e.bus)


def handler_fields(event: str) -> tuple[Field, ...]:
    """Every field a handler of `event` may write as `{name}`, in documentation order.

    The event's own fields, then for call events the call record's fields the dialplan fills (and
    `duration` for `hangup` and `closed`), then `event`. Raises KeyError for an unknown event.
    """
    spec = BY_NAME[event]
    out: dict[str, Field] = {f.name: f for f in spec.fields}
    if spec.kind == "call":
        for f in CALL_FIELDS:
            out.setdefault(f.name, f)
        if event in ("hangup", "closed"):
            out["duration"] = DURATION
    out["event"] = Field("event", str, "the event's name")
    return tuple(out.values())


HANDLER_FIELD_NAMES: Mapping[str, frozenset[str]] = MappingProxyType(
    {name: frozenset(f.name for f in handler_fields(name)) for name in HANDLED_EVENTS}
)


GENERATE = "python -c \"import flowlang.events as e; print(e.markdown(), end='')\" > docs/events.md"


def markdown() -> str:
    """docs/events.md: one table, event -> fields -> meaning (generated: edit this module instead)."""
    out = [
        "# Events",
        "",
        f"<!-- generated from flowlang/events.py by `{GENERATE}`: edit that table, not this file -->",
        "",
        "Every line Callflow logs is logfmt with `event=NAME` and the fields below as `name=value`",
        "(an optional field may be missing). The events with a handler can be watched from a script",
        "(`docs/language.md`, *Handlers*): a handler's text may use each field of its event as",
        "`{name}` (a missing optional field shows its default, else nothing), `{event}`, and, for call",
        "events, the call's own fields, which the dialplan fills in every event of the call from its",
        "`created` event:",
        "",
        "| call field | type | meaning |",
        "|---|---|---|",
    ]
    for f in (*CALL_FIELDS, DURATION):
        where = "; in `hangup` and `closed`" if f is DURATION else ""
        out.append(f"| `{f.name}` | {f.type.__name__} | {f.meaning}{where} |")
    out += [
        "",
        "| event | handler | meaning | field | type | field's meaning |",
        "|---|---|---|---|---|---|",
    ]
    for e in EVENTS:
        handler = f"`{e.handler}`" if e.handler else ""
        head = f"| `{e.name}` | {handler} | {e.meaning}{'' if e.bus else ' (log only)'}"
        if not e.fields:
            out.append(head + " | | | |")
        for i, f in enumerate(e.fields):
            note = ", optional" if f.optional else ""
            if f.default not in (None, ""):
                note += f", default `{f.default}`"
            lead = head if i == 0 else "| | | "
            out.append(f"{lead} | `{f.name}` | {f.type.__name__}{note} | {f.meaning} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
