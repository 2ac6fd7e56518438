"""Who may call: digest challenges for our users, 403 for wrong passwords, and a guard against guessing
that can be neither dodged nor turned against a victim (issue 9). Sans-IO: the clock is a number."""

from __future__ import annotations

from runtime.security.auth import Authenticator, GuessingGuard, Hold
from runtime.sip.digest import DigestClient, parse_challenge
from runtime.sip.message import Headers, Request

PASSWORDS = {"alice": "alice-pw", "mallory": "mallory-pw"}
RURI = "sip:+15551234567@pbx"
PHONE = "192.0.2.7"


def request(authorization: str | None = None, method: str = "INVITE", user: str = "alice") -> Request:
    h = Headers()
    h.add("Via", f"SIP/2.0/UDP {PHONE}:5062;branch=z9hG4bKa1")
    h.add("From", f"<sip:{user}@pbx>;tag=f1")
    h.add("To", "<sip:+15551234567@pbx>")
    h.add("Call-ID", "c1")
    h.add("CSeq", f"1 {method}")
    if authorization:
        h.add("Proxy-Authorization" if method != "REGISTER" else "Authorization", authorization)
    h.add("Content-Length", "0")
    return Request(method, RURI, h)


def answer(auth: Authenticator, password: str, *, source: str = PHONE, method: str = "INVITE",
           now: float = 0.0, user: str = "alice") -> Request:
    """What a phone at `source` sends after its challenge: credentials for `user` with `password`."""
    first = auth.authenticate(request(method=method, user=user), source, now)
    assert first.response is not None and first.response.status in (401, 407)
    header = "proxy-authenticate" if method != "REGISTER" else "www-authenticate"
    challenge = parse_challenge(first.response.headers.get(header) or "")
    value = DigestClient(user, password).authorize(challenge, method, RURI)
    return request(value, method, user)


def attempt(auth: Authenticator, password: str, source: str, now: float, user: str = "alice") -> int:
    """One login attempt from `source`: 200 when it authenticated, else the status of the answer."""
    outcome = auth.authenticate(answer(auth, password, source=source, now=now, user=user), source, now)
    return 200 if outcome.user is not None else outcome.response.status  # type: ignore[union-attr]


def test_invite_without_credentials_is_challenged_with_407() -> None:
    auth = Authenticator("pbx", PASSWORDS.get)
    outcome = auth.authenticate(request(), PHONE, 0.0)
    assert outcome.user is None and outcome.response is not None
    assert outcome.response.status == 407 and "proxy-authenticate" in outcome.response.headers


def test_register_without_credentials_is_challenged_with_401() -> None:
    auth = Authenticator("pbx", PASSWORDS.get)
    outcome = auth.authenticate(request(method="REGISTER"), PHONE, 0.0)
    assert outcome.response is not None and outcome.response.status == 401


def test_right_password_authenticates_the_user() -> None:
    auth = Authenticator("pbx", PASSWORDS.get)
    outcome = auth.authenticate(answer(auth, "alice-pw"), PHONE, 1.0)
    assert outcome.user == "alice" and outcome.response is None


def test_wrong_password_gets_403_not_another_challenge() -> None:
    auth = Authenticator("pbx", PASSWORDS.get)
    outcome = auth.authenticate(answer(auth, "guess"), PHONE, 1.0)
    assert outcome.user is None and outcome.response is not None and outcome.response.status == 403
    assert outcome.reason == "wrong password"


def test_unknown_user_gets_403() -> None:
    auth = Authenticator("pbx", PASSWORDS.get)
    assert attempt(auth, "x", PHONE, 1.0, user="nobody") == 403


# ---- credentials bound to the request --------------------------------------------------------------


def test_credentials_captured_from_one_host_are_refused_from_another() -> None:
    auth = Authenticator("pbx", PASSWORDS.get)
    captured = answer(auth, "alice-pw", source=PHONE)
    replayed = auth.authenticate(captured, "198.51.100.66", 1.0)
    assert replayed.user is None and replayed.response is not None
    assert replayed.response.status == 407  # a fresh challenge the replayer cannot answer
    assert "stale=true" in (replayed.response.headers.get("proxy-authenticate") or "")


def test_credentials_answering_a_register_challenge_do_not_authorize_an_invite() -> None:
    auth = Authenticator("pbx", PASSWORDS.get)
    first = auth.authenticate(request(method="REGISTER"), PHONE, 0.0)
    challenge = parse_challenge(first.response.headers.get("www-authenticate") or "")  # type: ignore[union-attr]
    value = DigestClient("alice", "alice-pw").authorize(challenge, "INVITE", RURI)
    assert auth.authenticate(request(value), PHONE, 1.0).user is None


def test_credentials_for_one_number_do_not_call_another() -> None:
    auth = Authenticator("pbx", PASSWORDS.get)
    captured = answer(auth, "alice-pw")
    captured.set_uri("sip:+19005550100@pbx")  # the same Proxy-Authorization, another number
    outcome = auth.authenticate(captured, PHONE, 1.0)
    assert outcome.user is None and outcome.reason == "digest uri does not match the Request-URI"


def test_an_answer_without_qop_is_refused_unless_the_user_is_marked_legacy() -> None:
    def legacy_answer(auth: Authenticator) -> Request:
        first = auth.authenticate(request(), PHONE, 0.0)
        ch = parse_challenge(first.response.headers.get("proxy-authenticate") or "")  # type: ignore[union-attr]
        ch = type(ch)(ch.scheme, ch.realm, ch.nonce)  # an RFC 2069 phone ignores qop
        return request(DigestClient("alice", "alice-pw").authorize(ch, "INVITE", RURI))

    strict = Authenticator("pbx", PASSWORDS.get)
    assert strict.authenticate(legacy_answer(strict), PHONE, 1.0).reason.startswith("qop=auth required")
    lenient = Authenticator("pbx", PASSWORDS.get, legacy_for=lambda user: user == "alice")
    assert lenient.authenticate(legacy_answer(lenient), PHONE, 1.0).user == "alice"


def test_a_reordered_nonce_count_gets_a_stale_challenge_and_is_not_a_guess() -> None:
    auth = Authenticator("pbx", PASSWORDS.get, GuessingGuard(source_limit=1, account_limit=1))
    first = auth.authenticate(request(), PHONE, 0.0)
    challenge = parse_challenge(first.response.headers.get("proxy-authenticate") or "")  # type: ignore[union-attr]
    client = DigestClient("alice", "alice-pw")
    one, two = (request(client.authorize(challenge, "INVITE", RURI)) for _ in range(2))
    assert auth.authenticate(two, PHONE, 1.0).user == "alice"
    late = auth.authenticate(one, PHONE, 1.0)
    assert late.response is not None and late.response.status == 407 and not late.attack
    assert "stale=true" in (late.response.headers.get("proxy-authenticate") or "")
    assert auth.guard.held("alice", PHONE, 2.0) is None  # with limits of 1, a counted failure would hold


# ---- guessing ---------------------------------------------------------------------------------------


def test_guessing_source_is_held_and_reported_once() -> None:
    auth = Authenticator("pbx", PASSWORDS.get, GuessingGuard(source_limit=3, source_window=60, source_block=300))
    outcomes = [auth.authenticate(answer(auth, f"guess{i}", user="nobody"), PHONE, float(i)) for i in range(5)]
    assert [o.attack for o in outcomes] == [False, False, True, False, False]
    assert [o.response.status for o in outcomes] == [403, 403, 403, 407, 407]  # type: ignore[union-attr]
    # even the right password is not looked at while held: the answer is just another challenge
    held = auth.authenticate(answer(auth, "alice-pw", now=10.0), PHONE, 10.0)
    assert held.user is None and held.response.status == 407  # type: ignore[union-attr]
    assert held.reason == Hold.SOURCE.value


def test_a_held_source_is_released_after_its_time() -> None:
    auth = Authenticator("pbx", PASSWORDS.get, GuessingGuard(source_limit=2, source_window=60, source_block=100))
    for i in range(2):
        attempt(auth, "guess", PHONE, float(i), user="nobody")
    assert attempt(auth, "alice-pw", PHONE, 200.0) == 200


def test_other_sources_are_not_held_by_a_guesser() -> None:
    auth = Authenticator("pbx", PASSWORDS.get, GuessingGuard(source_limit=2))
    for i in range(3):
        attempt(auth, "guess", "198.51.100.66", float(i), user="nobody")
    assert attempt(auth, "alice-pw", PHONE, 5.0) == 200


def test_296_guesses_spread_over_33_addresses_check_only_a_handful_of_passwords() -> None:
    auth = Authenticator("pbx", PASSWORDS.get)  # the defaults
    statuses = []
    for i in range(296):  # about a guess a second, 9 per address: under any per-address limit
        source = f"203.0.113.{1 + i % 33}"
        password = "alice-pw" if i == 295 else f"guess{i}"  # the last guess is the right one
        statuses.append(attempt(auth, password, source, float(i)))
    checked = statuses.count(403) + statuses.count(200)
    print(f"\n296 guesses from 33 addresses: passwords checked {checked}, found: {200 in statuses}")
    assert 200 not in statuses
    assert checked <= 16


def test_guesses_interleaved_with_the_attackers_own_logins_are_still_held() -> None:
    auth = Authenticator("pbx", PASSWORDS.get)
    attacker, statuses = "198.51.100.66", []
    for i in range(296):
        assert attempt(auth, "mallory-pw", attacker, 2.0 * i, user="mallory") in (200, 407)
        statuses.append(attempt(auth, "alice-pw" if i == 295 else f"guess{i}", attacker, 2.0 * i + 1))
    checked = statuses.count(403) + statuses.count(200)
    print(f"\n296 guesses interleaved with own logins: passwords checked {checked}, found: {200 in statuses}")
    assert 200 not in statuses
    assert checked <= 16


def test_a_success_for_one_account_does_not_reset_another_accounts_count() -> None:
    guard = GuessingGuard(account_limit=3)
    for i in range(2):
        guard.failed("alice", f"203.0.113.{i}", float(i))
    guard.succeeded("mallory", "203.0.113.9", 3.0)
    assert guard.failed("alice", "203.0.113.5", 4.0)[0].kind == "account"
    assert guard.held("alice", "203.0.113.6", 5.0) is Hold.ACCOUNT


def test_the_account_back_off_doubles_while_guessing_goes_on() -> None:
    guard = GuessingGuard(account_limit=2, account_window=3600, account_delay=60, account_max_delay=600)
    delays, now = [], 0.0
    for _ in range(8):
        trips = guard.failed("alice", "203.0.113.1", now)
        delays += [t.seconds for t in trips if t.kind == "account"]
        while guard.held("alice", "203.0.113.1", now) is not None:
            now += 1.0
    assert delays[:5] == [60, 120, 240, 480, 600]


def test_the_users_own_phone_still_logs_in_while_its_account_is_backed_off() -> None:
    auth = Authenticator("pbx", PASSWORDS.get)
    assert attempt(auth, "alice-pw", PHONE, 0.0) == 200  # the phone registered from its address
    for i in range(30):  # someone else guesses alice's password from elsewhere
        attempt(auth, f"guess{i}", f"203.0.113.{i}", 1.0 + i)
    assert auth.guard.held("alice", "203.0.113.200", 40.0) is Hold.ACCOUNT
    assert attempt(auth, "alice-pw", PHONE, 40.0) == 200


def test_ten_spoofed_packets_do_not_lock_a_real_phone_out() -> None:
    auth = Authenticator("pbx", PASSWORDS.get, GuessingGuard(source_limit=10, account_limit=10))
    # a spoofer sends packets "from" the phone's address; it never sees the challenges sent there, so
    # it can only use nonces issued to itself (or made up)
    for i in range(10):
        own_nonce = answer(auth, f"guess{i}", source="198.51.100.66", now=float(i))
        outcome = auth.authenticate(own_nonce, PHONE, float(i))
        assert outcome.response is not None and outcome.response.status == 407 and not outcome.attack
    print("\n10 spoofed packets: phone locked out: no")
    assert auth.guard.held("alice", PHONE, 11.0) is None
    assert attempt(auth, "alice-pw", PHONE, 11.0) == 200


def test_a_flood_of_new_sources_does_not_clear_an_active_block() -> None:
    guard = GuessingGuard(source_limit=2, source_block=300, max_sources=100)
    guard.failed(None, "198.51.100.66", 0.0)
    guard.failed(None, "198.51.100.66", 1.0)
    assert guard.held("x", "198.51.100.66", 2.0) is Hold.SOURCE
    for i in range(10_000):  # failures from ten thousand other addresses
        guard.failed(None, f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 2.0 + i / 1000)
    assert guard.held("x", "198.51.100.66", 20.0) is Hold.SOURCE
    assert len(guard._sources) <= 100


def test_a_flood_of_spoofed_packets_counts_nowhere() -> None:
    auth = Authenticator("pbx", PASSWORDS.get, GuessingGuard(source_limit=2))
    attempt(auth, "guess", "198.51.100.66", 0.0)
    attempt(auth, "guess", "198.51.100.66", 1.0)
    assert auth.guard.held("alice", "198.51.100.66", 2.0) is Hold.SOURCE
    forged = answer(auth, "guess", source="192.0.2.200", now=2.0)
    for i in range(1000):
        auth.authenticate(forged, f"10.0.{i // 256}.{i % 256}", 2.0)
    assert len(auth.guard._sources) == 1  # only the real guesser is known
    assert auth.guard.held("alice", "198.51.100.66", 3.0) is Hold.SOURCE


def test_sha256_can_be_offered_and_is_preferred_by_a_capable_client() -> None:
    from runtime.sip.digest import select_challenge

    auth = Authenticator("pbx", PASSWORDS.get, algorithms=("SHA-256", "MD5"))
    first = auth.authenticate(request(), PHONE, 0.0)
    assert first.response is not None
    offered = first.response.headers.get_all("proxy-authenticate")
    assert len(offered) == 2
    challenge = select_challenge(offered)
    assert challenge is not None and challenge.algorithm == "SHA-256"
    value = DigestClient("alice", "alice-pw").authorize(challenge, "INVITE", RURI)
    assert auth.authenticate(request(value), PHONE, 1.0).user == "alice"


def test_md5_alone_is_offered_by_default() -> None:
    first = Authenticator("pbx", PASSWORDS.get).authenticate(request(), PHONE, 0.0)
    assert first.response is not None
    (only,) = first.response.headers.get_all("proxy-authenticate")
    assert "algorithm=MD5" in only
