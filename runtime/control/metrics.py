"""Prometheus metrics, with the official client library (prometheus_client).

Two sources, so the SIP paths pay next to nothing:
- counters fed by the engine's EventBus (calls by outcome, hang-up causes, setup time, line and
  user registrations, attacks) and by the transport's per-message observer, which only looks at a
  message's first line (requests by method, responses by code, admission sheds = our 503s that say
  "overloaded");
- gauges read at scrape time from the engine's own state (active calls, registered contacts, line
  states, relay packets and drops, retransmissions where the transaction layer counts them).

Each `Metrics` has its own CollectorRegistry, so several servers (tests) can live in one process.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from runtime.records.cdr import OUTCOMES, outcome_for

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
try:  # every state a line can be in, so each line's series exist (at 0) before it gets there
    from runtime.lines.machine import LineState

    LINE_STATES: tuple[str, ...] = tuple(state.value for state in LineState)
except ImportError:  # an older line client: its states as strings
    LINE_STATES = ("idle", "registering", "registered", "failed", "static", "stopped")
# setup time: from the INVITE's arrival to the answer, seconds (phones ring for seconds)
SETUP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120)
MAX_TRACKED_CALLS = 100_000
# a message we send that is byte for byte one we sent to the same address among the last this many
# is a retransmission (timers A, E, G, 2xx and ACK resends, answers to a peer's retransmissions);
# at 600 calls/s that is the last 10 s or so of sending, more than the 4 s of T2
RETRANSMIT_WINDOW = 65_536  # bound on the per-call bookkeeping, should `closed` ever be missed
# the `cause` label of callflow_call_hangups: a hangup event's free-text reason (which names codes,
# seconds and channels, and grows with every feature that ends calls) mapped to this fixed set, so
# the metric has at most 10 causes x 3 channels (ZERO, ONE, none) = 30 series; the reason itself
# stays in the event, the log line and the call record
HANGUP_CAUSES = ("bye", "cancelled", "no_ack", "max_duration", "no_rtp", "session_timer", "transferred",
                 "transfer_failed", "failed", "other")
HANGUP_CHANNELS = ("ZERO", "ONE", "none")
_CAUSE_PREFIXES = (("BYE", "bye"), ("cancelled", "cancelled"), ("no ACK", "no_ack"),
                   ("maximum call duration", "max_duration"), ("no RTP", "no_rtp"),
                   ("session expired", "session_timer"), ("session refresh failed", "session_timer"),
                   ("transferred", "transferred"), ("transfer failed", "transfer_failed"),
                   ("no media", "failed"))


def hangup_cause(reason: object) -> str:
    """The metric's cause (one of HANGUP_CAUSES) for a hangup event's `reason`: none (a peer's BYE)
    is `bye`; a reason starting with a SIP status code (`503 Service Unavailable`: the call's plan
    failed after it was answered) is `failed`; a reason no rule knows is `other`."""
    text = str(reason or "BYE")
    for prefix, cause in _CAUSE_PREFIXES:
        if text.startswith(prefix):
            return cause
    if text[:3].isdigit():
        return "failed"
    return "other"


class Metrics:
    """The server's metrics. Wire with `attach(engine)`; read with `render()` or `snapshot()`."""

    def __init__(self, engine: Any = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.calls = Counter("callflow_calls", "Calls closed, by outcome, the words of `callflow cdr` "
                             "(answered, busy, no_answer, cancelled, failed)", ["outcome"], registry=r)
        self.failures = Counter("callflow_call_failures", "Calls that never connected, by SIP status code",
                                ["code"], registry=r)
        self.hangups = Counter("callflow_call_hangups", "Hang-ups by the channel that hung up (ZERO: the "
                               "leg the call came in on, ONE: the leg we dialled, none: Callflow ended both) "
                               "and cause (" + ", ".join(HANGUP_CAUSES) + ")", ["channel", "cause"], registry=r)
        self.setup = Histogram("callflow_call_setup_seconds", "Time from a call's INVITE to its answer",
                               buckets=SETUP_BUCKETS, registry=r)
        self.line_events = Counter("callflow_line_registrations", "Line registration results by line and "
                                   "result (registered, failed, unregistered)", ["line", "result"], registry=r)
        self.user_events = Counter("callflow_user_registrations", "Phone registrations by result "
                                   "(registered, unregistered, failed)", ["result"], registry=r)
        self.attacks = Counter("callflow_attacks_detected", "Sources blocked or ignored, by kind "
                               "(brute_force, flood, scan)", ["kind"], registry=r)
        self.sheds = Counter("callflow_admission_sheds", "New calls refused with 503 because the server "
                             "was saturated", registry=r)
        self.reloads = Counter("callflow_reloads", "Program reloads by result (reloaded, unchanged, failed)",
                               ["result"], registry=r)
        self.originated = Counter("callflow_calls_originated", "Calls Callflow placed itself (dial_call_session, "
                                  "click-to-call) by what their first leg did (answered, failed)", ["result"],
                                  registry=r)
        for result in ("answered", "failed"):
            self.originated.labels(result)
        self.recordings = Counter("callflow_recordings", "Recording files (`record`, `record call`) by result "
                                  "(written, failed: see the recording_failed event's reason)", ["result"], registry=r)
        self.recording_bytes = Counter("callflow_recording_bytes", "Bytes of recording files written", registry=r)
        for result in ("written", "failed"):
            self.recordings.labels(result)
        self.dtmf_received = Counter("callflow_dtmf_digits_received", "DTMF digits detected on a leg, by source "
                                     "(rfc4733: telephone-events in RTP, info: SIP INFO)", ["source"], registry=r)
        for source in ("rfc4733", "info"):
            self.dtmf_received.labels(source)
        self.dtmf_sent = Counter("callflow_dtmf_digits_sent", "DTMF digits the program pressed on a leg (SDK "
                                 "send_dtmf, `.flow` `send dtmf`)", registry=r)
        self.dtmf_dropped = Counter("callflow_dtmf_digits_dropped", "DTMF digits that could not be delivered to a "
                                    "leg (see the dtmf_dropped event's reason)", registry=r)
        self.dtmf_unexpected = Counter("callflow_dtmf_unexpected", "Legs that sent telephone-events without "
                                       "having negotiated them (once per call and leg)", registry=r)
        for outcome in OUTCOMES:
            self.calls.labels(outcome)  # zeros from the start, so rate() and alerts see the series
        for result in ("reloaded", "unchanged", "failed"):
            self.reloads.labels(result)
        self._engine = engine
        self._started: dict[str, float] = {}   # call -> monotonic time of `created`
        self._dialling: set[str] = set()        # originated calls whose first leg has not answered yet
        # call -> [SIP code channel ZERO got so far, cancelled before an answer], read as the call
        # record reads them (records.cdr.outcome_for), so /metrics and `callflow cdr` agree
        self._outcome: dict[str, list[Any]] = {}
        self.observing_sip = False
        self._sip_counts: dict[tuple[str, bytes], int] = {}  # (direction, method or code) -> messages
        self.retransmissions = 0
        self._sent: set[int] = set()          # hashes of recent (message, address) we sent
        self._sent_order: deque[int] = deque()
        r.register(_EngineCollector(self))

    # ---- wiring -------------------------------------------------------------------------------------
    def attach(self, engine: Any) -> None:
        """Listen to the engine's bus and, where the transport offers it, its message observer."""
        self._engine = engine
        engine.bus.subscribe(self.on_event)
        endpoint = getattr(engine, "endpoint", None)
        if endpoint is not None and hasattr(endpoint, "add_observer"):
            endpoint.add_observer(self.on_message)
            self.observing_sip = True
            self._endpoint = endpoint
        # the reloader logs its outcomes (it has no bus of its own yet): count those records
        logger = logging.getLogger("callflow.reload")
        logger.addHandler(_ReloadCounter(self))
        self._reload_level: int | None = None
        if logger.getEffectiveLevel() > logging.INFO:
            self._reload_level = logger.level
            logger.setLevel(logging.INFO)  # `reloaded` is an INFO record: count it at --log-level warning too

    def detach(self) -> None:
        """Stop listening to the transport and the reloader's log (the bus has no unsubscribe)."""
        endpoint = getattr(self, "_endpoint", None)
        if endpoint is not None and hasattr(endpoint, "remove_observer"):
            try:
                endpoint.remove_observer(self.on_message)
            except ValueError:
                pass
            self._endpoint = None
        logger = logging.getLogger("callflow.reload")
        for handler in list(logger.handlers):
            if isinstance(handler, _ReloadCounter) and handler.metrics is self:
                logger.removeHandler(handler)
        if getattr(self, "_reload_level", None) is not None:
            logger.setLevel(self._reload_level)  # type: ignore[arg-type]
            self._reload_level = None

    # ---- the EventBus -------------------------------------------------------------------------------
    def on_event(self, event: Any) -> None:
        """One engine event (`.name`, `.fields`); unknown names are ignored."""
        name = event.name
        f = event.fields
        call = f.get("call")
        if name == "created" and call is not None:
            if len(self._started) < MAX_TRACKED_CALLS:
                self._started[str(call)] = time.monotonic()
            if f.get("origin") == "originated" and len(self._dialling) < MAX_TRACKED_CALLS:
                self._dialling.add(str(call))
        elif name == "originated" and call is not None:
            self._dialling.discard(str(call))
            self.originated.labels("answered").inc()
        elif name == "connected" and call is not None:
            started = self._started.get(str(call))
            if started is not None:
                self.setup.observe(time.monotonic() - started)
            self._facts(str(call))[0] = 200
        elif name == "failed":
            self.failures.labels(str(f.get("code", "unknown"))).inc()
            if call is not None and str(call) in self._dialling:
                self._dialling.discard(str(call))
                self.originated.labels("failed").inc()
            code = f.get("code")
            if call is not None and isinstance(code, int | str) and str(code).isdigit():
                self._facts(str(call))[0] = int(code)
        elif name == "hangup":
            reason = str(f.get("reason") or "BYE")
            channel = str(f.get("channel") or "none")
            self.hangups.labels(channel if channel in HANGUP_CHANNELS else "none", hangup_cause(reason)).inc()
            if call is not None:
                facts = self._facts(str(call))
                if reason == "cancelled" and facts[0] != 200:
                    facts[:] = [487, True]
                elif facts[0] is None:
                    facts[0] = 200  # a BYE ends a dialog: channel ZERO had its 2xx (from us, for a `play`)
        elif name == "closed" and call is not None:
            key = str(call)
            self._started.pop(key, None)
            self._dialling.discard(key)
            code, cancelled = self._outcome.pop(key, (None, False))
            self.calls.labels(outcome_for(code == 200 and not cancelled, code, cancelled)).inc()
        elif name == "line_registered":
            self.line_events.labels(str(f.get("line")), "registered").inc()
        elif name == "line_register_failed":
            self.line_events.labels(str(f.get("line")), "failed").inc()
        elif name == "line_unregistered":
            self.line_events.labels(str(f.get("line")), "unregistered").inc()
        elif name == "user_registered":
            self.user_events.labels("registered").inc()
        elif name == "user_unregistered":
            self.user_events.labels("unregistered").inc()
        elif name == "user_register_failed":
            self.user_events.labels("failed").inc()
        elif name == "attack_detected":
            self.attacks.labels(str(f.get("kind") or "unknown")).inc()
        elif name == "recording":
            self.recordings.labels("written").inc()
            size = f.get("bytes")
            if isinstance(size, int):
                self.recording_bytes.inc(size)
        elif name == "recording_failed":
            self.recordings.labels("failed").inc()
        elif name in ("reloaded", "reload_unchanged", "unchanged", "reload_failed"):
            self.count_reload(name)
        elif name == "dtmf":
            self.dtmf_received.labels("info" if f.get("source") == "info" else "rfc4733").inc()
        elif name == "dtmf_sent":
            self.dtmf_sent.inc(len(str(f.get("digits") or "")))
        elif name == "dtmf_dropped":
            self.dtmf_dropped.inc(max(1, len(str(f.get("digit") or ""))))  # send_dtmf's drop names its digits
        elif name == "dtmf_unexpected":
            self.dtmf_unexpected.inc()

    def _facts(self, call: str) -> list[Any]:
        facts = self._outcome.get(call)
        if facts is None:
            facts = [None, False]
            if len(self._outcome) < MAX_TRACKED_CALLS:
                self._outcome[call] = facts
        return facts

    def count_reload(self, event_name: str) -> None:
        result = {"reloaded": "reloaded", "reload_failed": "failed"}.get(event_name, "unchanged")
        self.reloads.labels(result).inc()

    # ---- the transport's observer ---------------------------------------------------------------------
    def on_message(self, direction: str, transport: str, address: object, data: bytes) -> None:
        """One SIP message sent ("out") or received ("in"): only its first word (the method, or
        SIP/2.0 and the code) is read, into a plain dict that the scrape turns into counters (this
        runs for every message, so it stays a dict increment)."""
        if data[:8] == b"SIP/2.0 ":
            key = (direction, data[8:11])
            if key[1] == b"503" and direction == "out" and b"overloaded" in data[:80]:
                self.sheds.inc()
        else:
            space = data.find(b" ", 0, 20)
            key = (direction, data[:space] if space > 0 else b"?")
        if direction == "out":
            sent = self._sent
            mark = hash((data, address))
            if mark in sent:
                self.retransmissions += 1
            else:
                sent.add(mark)
                order = self._sent_order
                order.append(mark)
                if len(order) > RETRANSMIT_WINDOW:
                    sent.discard(order.popleft())
        counts = self._sip_counts
        if key in counts:
            counts[key] += 1
        elif len(counts) < 500:  # label values must stay few, whatever garbage arrives
            counts[key] = 1
        else:
            other = (direction, b"other")
            counts[other] = counts.get(other, 0) + 1

    def sip_families(self) -> list[Metric]:
        requests = CounterMetricFamily("callflow_sip_requests", "SIP requests by direction (in, out) and method",
                                       labels=["direction", "method"])
        responses = CounterMetricFamily("callflow_sip_responses", "SIP responses by direction (in, out) and code",
                                        labels=["direction", "code"])
        for (direction, word), count in sorted(self._sip_counts.items()):
            text = word.decode("ascii", "replace")
            if text.isdigit():
                responses.add_metric([direction, text], count)
            else:
                requests.add_metric([direction, text.upper() if text.isalpha() else "other"], count)
        return [requests, responses]

    # ---- reading --------------------------------------------------------------------------------------
    def render(self) -> bytes:
        """The Prometheus text exposition (format 0.0.4)."""
        return generate_latest(self.registry)

    def snapshot(self) -> dict[str, Any]:
        """Every sample as {"metric{label=value,...}": number}, for /api/counters and the page."""
        out: dict[str, Any] = {}
        for metric in self.registry.collect():
            for sample in metric.samples:
                if sample.name.endswith("_created") or sample.name.endswith("_bucket"):
                    continue
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return out


class _ReloadCounter(logging.Handler):
    def __init__(self, metrics: Metrics) -> None:
        super().__init__(logging.DEBUG)
        self.metrics = metrics

    def emit(self, record: logging.LogRecord) -> None:
        message = record.msg if isinstance(record.msg, str) else ""
        for name in ("reload_failed", "reload_unchanged", "reloaded", "unchanged"):
            if message.startswith(f"event={name} ") or message == f"event={name}":
                self.metrics.count_reload(name)
                return


class _EngineCollector(Collector):
    """Gauges read from the engine at scrape time (nothing is kept up to date between scrapes)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: its families depend on the engine attached

    def collect(self) -> Iterator[Metric]:
        yield from self.metrics.sip_families()
        engine = self.metrics._engine
        if engine is None:
            return
        active = GaugeMetricFamily("callflow_calls_active", "Calls in progress")
        active.add_metric([], len(engine.calls))
        yield active
        now = engine.now()
        contacts = GaugeMetricFamily("callflow_registered_contacts", "Phones' live registrations (contacts)")
        users = GaugeMetricFamily("callflow_registered_users", "Users with at least one live registration")
        total = registered = 0
        for name in list(engine.users):
            try:
                n = len(engine.registrar.lookup(name, now))
            except Exception:
                n = 0
            total += n
            registered += n > 0
        contacts.add_metric([], total)
        users.add_metric([], registered)
        yield contacts
        yield users
        states = GaugeMetricFamily("callflow_line_state", "1 for each line's current registration state",
                                   labels=["line", "state"])
        for name, line in sorted(engine.lines.items()):
            raw = getattr(line, "state", None)
            current = str(getattr(raw, "value", None) or getattr(raw, "name", None) or raw).lower()
            for state in sorted(set(LINE_STATES) | {current}):
                states.add_metric([name, state], 1.0 if state == current else 0.0)
        yield states
        holding = getattr(getattr(engine, "leases", None), "holding", None)
        if callable(holding):  # a cluster: 1 for each line whose lease this node holds (it registers it)
            leases = GaugeMetricFamily("callflow_line_lease_held", "1 while this node holds the line's lease "
                                       "(and registers it), 0 while another node does", labels=["line", "node"])
            for name, lease in holding().items():
                leases.add_metric([name, str(lease["holder"] or "")], 1.0 if lease["held"] else 0.0)
            yield leases
        from .views import version_id  # here, not at the top: views is the heavier module

        version = version_id(engine.program) if getattr(engine, "program", None) is not None else None
        if version:  # the nodes of a cluster, same folder: the same label everywhere once all reloaded
            program = GaugeMetricFamily("callflow_program_version", "1, labelled with the running program's "
                                        "version id (the same files give the same id on every node)",
                                        labels=["version"])
            program.add_metric([version], 1.0)
            yield program
        overloaded = GaugeMetricFamily("callflow_overloaded", "1 while new calls are shed with 503")
        overloaded.add_metric([], 1.0 if getattr(engine, "overloaded", False) else 0.0)
        yield overloaded
        stats_fn = getattr(getattr(engine, "media", None), "stats", None)
        if callable(stats_fn):
            try:
                stats = stats_fn()
            except Exception:
                stats = None
            if stats is not None:
                for field, name, doc in (
                        ("packets", "callflow_relay_packets", "RTP and RTCP packets relayed"),
                        ("bytes", "callflow_relay_bytes", "RTP and RTCP bytes relayed"),
                        ("dropped", "callflow_relay_dropped_packets",
                         "Packets the relay dropped (no known destination, foreign source, send errors)")):
                    value = getattr(stats, field, None)
                    if isinstance(value, int | float):
                        family = CounterMetricFamily(name, doc)
                        family.add_metric([], value)
                        yield family
                sessions = getattr(stats, "sessions", None)
                if isinstance(sessions, int):
                    gauge = GaugeMetricFamily("callflow_relay_sessions", "Media sessions open on the relay")
                    gauge.add_metric([], sessions)
                    yield gauge
        layer = getattr(engine, "layer", None)
        retrans = getattr(layer, "retransmissions", None)  # the transaction layer's own count, if it keeps one
        if not isinstance(retrans, int | float) and self.metrics.observing_sip:
            retrans = self.metrics.retransmissions
        if isinstance(retrans, int | float):
            family = CounterMetricFamily("callflow_sip_retransmissions", "SIP messages we sent again "
                                         "(timers A, E, G and 2xx resends)")
            family.add_metric([], retrans)
            yield family
