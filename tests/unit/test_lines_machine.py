"""A line's registration, specified on a fake clock against scripted provider responses: the cases a
real provider cannot produce on demand (a 200 listing other bindings, 423, a 30 s grant, a 401 loop,
an un-registration that is challenged or never answered). `Provider` plays the registrar; `Run`
drives the sans-IO machine and records what it sent, the timers it armed and the events it emitted.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from runtime.lines.machine import (
    BACKOFF_MAX,
    REJECTED_RETRY,
    TRANSITIONS,
    UNREGISTER_TIMEOUT,
    CancelTimer,
    Emit,
    LineConfig,
    LineMachine,
    LineState,
    LocalAddress,
    SendRequest,
    SetTimer,
    refresh_delay,
    same_uri,
)
from runtime.sip.digest import DigestServer
from runtime.sip.message import Request, Response, create_response
from runtime.sip.uri import SipUri

OURS = "sip:trunk1@192.0.2.1:5060"
LOCAL = LocalAddress("SIP/2.0/UDP 192.0.2.1:5060;rport", OURS, "Callflow")
CONFIG = LineConfig("itsp1", "192.0.2.9", 5060, "trunk1", "s3cret", register_every=300)


class Run:
    """One line on a fake clock. `provider(request, now)` answers each request at once; a request
    it does not answer (None) times out 32 s later, as timer F would."""

    def __init__(self, provider: Callable[[Request, float], Response | None] | None,
                 config: LineConfig = CONFIG, keepalive_every: float | None = None, rng: float = 0.5) -> None:
        self.machine = LineMachine(config, rng=lambda: rng, keepalive_every=keepalive_every)
        self.provider = provider
        self.now = 0.0
        self.sent: list[tuple[float, Request]] = []
        self.timers: dict[str, float] = {}
        self.events: list[tuple[float, str, dict[str, object]]] = []
        self.lost: dict[int, Request] = {}

    def apply(self, actions: list) -> None:  # type: ignore[type-arg]
        answers = []
        for action in actions:
            if isinstance(action, SendRequest):
                self.sent.append((self.now, action.request))
                if self.provider is not None:
                    resp = self.provider(action.request, self.now)
                    if resp is not None:
                        answers.append(resp)
                    else:
                        self.timers[f"txn {action.request.cseq[0]}"] = self.now + 32
                        self.lost[action.request.cseq[0]] = action.request
            elif isinstance(action, SetTimer):
                self.timers[action.name] = action.at
            elif isinstance(action, CancelTimer):
                self.timers.pop(action.name, None)
            elif isinstance(action, Emit):
                self.events.append((self.now, action.name, action.fields))
        for resp in answers:  # the provider answers at once
            self.apply(self.machine.response(resp, self.now))

    def start(self) -> Run:
        self.apply(self.machine.start(self.now, LOCAL))
        return self

    def run_until(self, until: float) -> None:
        for _ in range(100_000):
            if not self.timers:
                break
            name, at = min(self.timers.items(), key=lambda item: item[1])
            if at > until:
                break
            del self.timers[name]
            self.now = max(self.now, at)
            if name.startswith("txn "):
                self.apply(self.machine.timeout(self.lost.pop(int(name[4:])), self.now))
            else:
                self.apply(self.machine.timer(name, self.now))
        self.now = max(self.now, until)

    def registers(self) -> list[tuple[float, Request]]:
        return [(t, r) for t, r in self.sent if r.method == "REGISTER"]

    def named(self, name: str) -> list[dict[str, object]]:
        return [fields for _, n, fields in self.events if n == name]

    @property
    def state(self) -> LineState:
        return self.machine.state


def registrar(grant: int | Callable[[Request], list[tuple[str, str]]] = 300, password: str = "s3cret",
              realm: str = "itsp.local") -> Callable[[Request, float], Response]:
    """A digest-authenticating registrar granting `grant` seconds to the Contact it was sent (or
    answering the headers `grant(request)` returns)."""
    server = DigestServer(realm)

    def answer(req: Request, now: float) -> Response:
        value = req.headers.get("authorization")
        if value is None or not server.verify(value, "REGISTER", lambda u: password if u == "trunk1" else None,
                                              now).ok:
            return create_response(req, 401, "Unauthorized", to_tag="r1",
                                   headers=[("WWW-Authenticate", v) for v in server.challenge(now)])
        if callable(grant):
            return create_response(req, 200, "OK", to_tag="r1", headers=grant(req))
        expires = int(req.headers.get("expires") or 0)
        contact = req.headers.get("contact")
        headers = [("Contact", f"{contact};expires={min(expires, grant)}")] if expires else []
        return create_response(req, 200, "OK", to_tag="r1", headers=headers)

    return answer


def silent(req: Request, now: float) -> None:
    return None


# ---- refresh ------------------------------------------------------------------------------------
def test_a_30s_grant_is_refreshed_about_25s_later_never_every_second() -> None:
    run = Run(registrar(grant=30)).start()
    run.run_until(600)
    assert run.state is LineState.REGISTERED
    # the first REGISTER is challenged; the refreshes reuse the challenge and are accepted at once
    # (a refresh whose nonce went stale is answered at the same instant: one attempt)
    times = sorted({t for t, r in run.registers()})
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(gaps) >= 20 and all(23 <= gap <= 25 for gap in gaps)
    assert len(run.named("line_registered")) == 1  # a refresh is not news


@pytest.mark.parametrize(("granted", "low", "high"), [(30, 24, 26), (3600, 3500, 3560), (300, 260, 296),
                                                       (60, 50, 56), (4, 1.5, 3), (1, 1, 1)])
def test_refresh_comes_at_a_safe_point_of_any_grant(granted: int, low: float, high: float) -> None:
    assert low <= refresh_delay(granted) <= high


def test_our_binding_is_found_among_other_bindings_of_the_account_by_uri_comparison() -> None:
    others = [("Contact", "<sip:trunk1@192.0.2.1:5062>;expires=3600"),       # our host, another port
              ("Contact", "<sip:trunk1@192.0.2.77:5060>;expires=3600"),      # another host
              ("Contact", "<sip:trunk1@192.0.2.1>;expires=3600"),            # no port is not 5060
              ("Contact", "<sip:TRUNK1@192.0.2.1:5060>;expires=3600"),       # user is case-sensitive
              ("Contact", "<sip:trunk1@192.0.2.1:5060;transport=tcp>;expires=3600"),
              ("Contact", "<sip:trunk1@192.0.2.1:5060;ob>;expires=120"),     # ours (ob only one side)
              ("Expires", "3600")]
    run = Run(registrar(grant=lambda req: others)).start()
    assert run.state is LineState.REGISTERED
    assert run.machine.granted == 120
    assert 100 <= run.timers["register"] <= 120


def test_without_our_contact_listed_the_expires_header_counts_then_what_we_asked() -> None:
    run = Run(registrar(grant=lambda req: [("Contact", "<sip:trunk1@192.0.2.77>;expires=3600"),
                                           ("Expires", "90")])).start()
    assert run.machine.granted == 90
    run = Run(registrar(grant=lambda req: [])).start()
    assert run.machine.granted == 300


@pytest.mark.parametrize(("a", "b", "equal"), [
    ("sip:trunk1@EXAMPLE.com:5060", "sip:trunk1@example.com:5060", True),
    ("sip:%74runk1@example.com", "sip:trunk1@example.com", True),
    ("sip:trunk1@example.com", "sip:trunk1@example.com:5060", False),
    ("sip:trunk1@example.com;transport=tcp", "sip:trunk1@example.com", False),
    ("sip:trunk1@example.com;transport=TCP", "sip:trunk1@example.com;transport=tcp", True),
    ("sip:trunk1@example.com;line=abc", "sip:trunk1@example.com", True),
    ("sip:trunk1@example.com;line=abc", "sip:trunk1@example.com;line=xyz", False),
    ("sips:trunk1@example.com", "sip:trunk1@example.com", False),
])
def test_uris_compare_as_rfc3261_19_1_4_says(a: str, b: str, equal: bool) -> None:
    assert same_uri(SipUri.parse(a), SipUri.parse(b)) is equal


def test_a_423_raises_our_request_to_min_expires_and_keeps_it() -> None:
    inner = registrar(grant=3600)

    def provider(req: Request, now: float) -> Response:
        if int(req.headers.get("expires") or 0) < 600:
            return create_response(req, 423, "Interval Too Brief", to_tag="r1", headers=[("Min-Expires", "600")])
        return inner(req, now)

    run = Run(provider, config=LineConfig("itsp1", "192.0.2.9", 5060, "trunk1", "s3cret", register_every=60))
    run.start()
    run.run_until(3000)
    assert run.state is LineState.REGISTERED and run.machine.granted == 600
    asked = [r.headers.get("expires") for _, r in run.registers()]
    assert asked[0] == "60" and set(asked[1:]) == {"600"}  # every refresh keeps the raised value
    assert len([r for _, r in run.registers() if r.headers.get("authorization")]) >= 4


def test_a_423_without_a_usable_min_expires_is_a_failure_not_a_loop() -> None:
    run = Run(lambda req, now: create_response(req, 423, "Interval Too Brief", to_tag="r1")).start()
    assert run.state is LineState.FAILED_WAITING and len(run.registers()) == 1
    (failed,) = run.named("line_register_failed")
    assert failed["code"] == 423 and "Min-Expires missing" in str(failed["reason"])


# ---- failures -----------------------------------------------------------------------------------
def test_timeouts_back_off_exponentially_up_to_a_cap() -> None:
    run = Run(silent).start()
    run.run_until(3600)
    delays = [float(str(f["retry_in"]).rstrip("s")) for f in run.named("line_register_failed")]
    assert delays[:5] == [2, 4, 8, 16, 32] and max(delays) == BACKOFF_MAX
    assert {f["code"] for f in run.named("line_register_failed")} == {408}


@pytest.mark.parametrize("rng", [0.0, 0.999])
def test_backoff_is_spread_by_jitter(rng: float) -> None:
    run = Run(lambda req, now: create_response(req, 500, "Server Error", to_tag="r1"), rng=rng).start()
    delay = run.timers["register"] - run.now
    assert 1.6 <= delay <= 2.4 and delay != 2.0


def test_a_transport_failure_fails_at_once_as_503_not_after_32s() -> None:
    run = Run(silent).start()
    run.now = 0.05  # the connection was refused / ICMP port unreachable came back
    run.apply(run.machine.timeout(run.registers()[0][1], run.now))
    (failed,) = run.named("line_register_failed")
    assert failed["code"] == 503 and "unreachable" in str(failed["reason"])
    assert run.state is LineState.FAILED_WAITING


def test_a_503_with_retry_after_is_retried_no_sooner_than_asked() -> None:
    run = Run(lambda req, now: create_response(req, 503, "Service Unavailable", to_tag="r1",
                                               headers=[("Retry-After", "120")])).start()
    assert run.timers["register"] >= 120


def test_repeated_401s_with_new_nonces_end_in_rejected_with_slow_retries() -> None:
    run = Run(registrar(password="not-ours")).start()
    run.run_until(3600)
    assert run.state is LineState.REJECTED
    states = [f["state"] for f in run.named("line_register_failed")]
    assert states[0] == "failed_waiting" and set(states[1:]) == {"rejected"}
    rejected = run.named("line_register_failed")[1]
    assert rejected["code"] == 401 and "password" in str(rejected["action"])
    # one challenge answered per attempt, and attempts minutes apart: nothing for a fail2ban to ban
    attempts = [t for t, r in run.registers() if r.headers.get("authorization") is None]
    assert len(run.registers()) <= 2 * len(attempts) and len(attempts) <= 2 + 3600 / (REJECTED_RETRY * 0.8)
    assert all(b - a >= REJECTED_RETRY * 0.8 for a, b in zip(attempts[1:], attempts[2:], strict=False))


def test_a_403_once_is_retried_soon_twice_is_rejected() -> None:
    run = Run(lambda req, now: create_response(req, 403, "Forbidden", to_tag="r1")).start()
    assert run.state is LineState.FAILED_WAITING and run.timers["register"] < 10
    run.run_until(run.timers["register"])
    assert run.state is LineState.REJECTED and run.timers["register"] - run.now >= REJECTED_RETRY * 0.8


def test_a_stale_nonce_is_answered_again_and_is_not_a_refusal() -> None:
    server = DigestServer("itsp.local")
    seen: list[Request] = []

    def provider(req: Request, now: float) -> Response:
        seen.append(req)
        if len(seen) == 1:
            return create_response(req, 401, "Unauthorized", to_tag="r1",
                                   headers=[("WWW-Authenticate", v) for v in server.challenge(now)])
        if len(seen) == 2:
            return create_response(req, 401, "Unauthorized", to_tag="r1",
                                   headers=[("WWW-Authenticate", v) for v in server.challenge(now, stale=True)])
        return create_response(req, 200, "OK", to_tag="r1", headers=[("Expires", "300")])

    run = Run(provider).start()
    assert run.state is LineState.REGISTERED and len(seen) == 3 and not run.named("line_register_failed")


def test_a_challenge_from_another_realm_than_the_lines_gets_no_credentials() -> None:
    config = LineConfig("itsp1", "192.0.2.9", 5060, "trunk1", "s3cret", realm="provider.example")
    run = Run(registrar(realm="elsewhere.example"), config=config).start()
    assert run.state is LineState.REJECTED
    assert all(r.headers.get("authorization") is None for _, r in run.registers())
    assert "elsewhere.example" in str(run.named("line_register_failed")[0]["reason"])


def test_a_failed_refresh_carries_calls_until_the_grant_lapses_then_is_expired() -> None:
    answers = {"up": True}
    inner = registrar(grant=300)
    run = Run(lambda req, now: inner(req, now) if answers["up"] else None).start()
    assert run.machine.carries_calls
    answers["up"] = False
    run.run_until(run.timers["register"] + 32)  # the refresh goes out and is never answered
    assert run.state is LineState.FAILED_WAITING and run.machine.carries_calls   # grant still stands
    run.run_until(301)
    assert run.state is not LineState.REGISTERED and not run.machine.carries_calls
    assert "expired" in [f["state"] for f in run.named("line_state")]
    answers["up"] = True
    run.run_until(600)
    assert run.state is LineState.REGISTERED and run.machine.carries_calls


def test_a_keepalive_the_provider_does_not_answer_leads_to_re_registration() -> None:
    answers = {"up": True}
    inner = registrar(grant=3600)

    def provider(req: Request, now: float) -> Response | None:
        if not answers["up"]:
            return None
        if req.method == "OPTIONS":
            return create_response(req, 200, "OK", to_tag="r1")
        return inner(req, now)

    run = Run(provider, keepalive_every=30).start()
    run.run_until(95)
    options = [r for _, r in run.sent if r.method == "OPTIONS"]
    assert len(options) == 3 and run.state is LineState.REGISTERED
    answers["up"] = False
    run.run_until(120 + 32)                    # the OPTIONS sent at 120 times out
    assert run.state is LineState.TRYING and run.registers()[-1][0] == run.now   # re-registering now
    (moved,) = [f for f in run.named("line_state") if f["state"] == "trying" and f["previous"] == "registered"]
    assert moved["code"] == 408 and "keepalive" in str(moved["reason"])
    answers["up"] = True
    run.run_until(run.now + 40)                # that REGISTER was lost too; the retry is answered
    assert run.state is LineState.REGISTERED


# ---- un-registration ----------------------------------------------------------------------------
def test_stop_unregisters_answering_the_challenge_and_says_so() -> None:
    server = DigestServer("itsp.local")
    nonces: list[str] = []

    def provider(req: Request, now: float) -> Response:
        # a provider that challenges every request with a fresh nonce (Kamailio, Asterisk)
        value = req.headers.get("authorization")
        if value is None or any(n in value for n in nonces[:-1]) or not nonces:
            values = server.challenge(now)
            nonces.append(values[0])
            return create_response(req, 401, "Unauthorized", to_tag="r1",
                                   headers=[("WWW-Authenticate", v) for v in values])
        return create_response(req, 200, "OK", to_tag="r1", headers=[("Expires", req.headers.get("expires") or "")])

    run = Run(provider).start()
    assert run.state is LineState.REGISTERED
    run.apply(run.machine.stop(run.now))
    unregister = [r for _, r in run.registers() if r.headers.get("expires") == "0"]
    assert len(unregister) >= 1 and unregister[-1].headers.get("authorization")
    assert run.state is LineState.UNREGISTERED and run.machine.done
    (done,) = run.named("line_unregistered")
    assert done["code"] == 200


def test_an_unanswered_unregistration_gives_up_within_a_bounded_time() -> None:
    up = {"yes": True}
    inner = registrar()
    run = Run(lambda req, now: inner(req, now) if up["yes"] else None).start()
    up["yes"] = False
    run.apply(run.machine.stop(run.now))
    assert run.state is LineState.UNREGISTERING
    run.run_until(UNREGISTER_TIMEOUT + 0.1)
    assert run.machine.done
    (done,) = run.named("line_unregistered")
    assert done["code"] == 408 and "gave up" in str(done["reason"])
    assert [name for name in run.timers if not name.startswith("txn")] == []


def test_stopping_a_line_that_holds_no_binding_sends_nothing() -> None:
    run = Run(lambda req, now: create_response(req, 500, "Server Error", to_tag="r1")).start()
    sent = len(run.sent)
    run.apply(run.machine.stop(run.now))
    assert len(run.sent) == sent and run.machine.done and not run.timers


def test_an_ip_authenticated_trunk_does_not_register_and_carries_calls() -> None:
    run = Run(silent, config=LineConfig("trunk2", "10.0.0.1", register_every=None)).start()
    assert run.state is LineState.NOT_REGISTERING and run.sent == [] and run.machine.carries_calls


# ---- events -------------------------------------------------------------------------------------
def test_every_transition_is_an_event_with_code_and_reason_and_follows_the_table() -> None:
    up = {"yes": False}
    inner = registrar(grant=30)
    run = Run(lambda req, now: inner(req, now) if up["yes"] else
              create_response(req, 503, "Service Unavailable", to_tag="r1")).start()
    run.run_until(10)
    up["yes"] = True
    run.run_until(100)
    run.apply(run.machine.stop(run.now))
    moves = run.named("line_state")
    assert [m["state"] for m in moves][:4] == ["trying", "failed_waiting", "trying", "failed_waiting"]
    assert moves[-1]["state"] == "unregistered" and moves[-1]["code"] == 200
    for move in moves:
        assert LineState(move["state"]) in TRANSITIONS[LineState(move["previous"])]
        assert "reason" in move and "code" in move and move["line"] == "itsp1"
    assert moves[1]["code"] == 503 and moves[1]["reason"] == "Service Unavailable"
