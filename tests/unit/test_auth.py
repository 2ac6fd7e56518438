"""Who may call: digest challenges for our users, 403 for wrong passwords, a block for guessers."""

from __future__ import annotations

from runtime.auth import Authenticator, GuessingGuard
from runtime.sip.digest import DigestClient, parse_challenge
from runtime.sip.message import Headers, Request

PASSWORDS = {"alice": "alice-pw"}


def invite(authorization: str | None = None, method: str = "INVITE") -> Request:
    h = Headers()
    h.add("Via", "SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bKa1")
    h.add("From", "<sip:alice@pbx>;tag=f1")
    h.add("To", "<sip:+15551234567@pbx>")
    h.add("Call-ID", "c1")
    h.add("CSeq", f"1 {method}")
    if authorization:
        h.add("Proxy-Authorization" if method != "REGISTER" else "Authorization", authorization)
    h.add("Content-Length", "0")
    return Request(method, "sip:+15551234567@pbx", h)


def answer(auth: Authenticator, password: str, method: str = "INVITE", now: float = 0.0) -> Request:
    first = auth.authenticate(invite(method=method), "203.0.113.99", now)  # a fresh challenge
    assert first.response is not None
    header = "proxy-authenticate" if method != "REGISTER" else "www-authenticate"
    challenge = parse_challenge(first.response.headers.get(header) or "")
    value = DigestClient("alice", password).authorize(challenge, method, "sip:+15551234567@pbx")
    return invite(value, method)


def test_invite_without_credentials_is_challenged_with_407() -> None:
    auth = Authenticator("pbx", PASSWORDS.get)
    outcome = auth.authenticate(invite(), "192.0.2.7", 0.0)
    assert outcome.user is None and outcome.response is not None
    assert outcome.response.status == 407 and "proxy-authenticate" in outcome.response.headers


def test_register_without_credentials_is_challenged_with_401() -> None:
    auth = Authenticator("pbx", PASSWORDS.get)
    outcome = auth.authenticate(invite(method="REGISTER"), "192.0.2.7", 0.0)
    assert outcome.response is not None and outcome.response.status == 401


def test_right_password_authenticates_the_user() -> None:
    auth = Authenticator("pbx", PASSWORDS.get)
    outcome = auth.authenticate(answer(auth, "alice-pw"), "192.0.2.7", 1.0)
    assert outcome.user == "alice" and outcome.response is None


def test_wrong_password_gets_403_not_another_challenge() -> None:
    auth = Authenticator("pbx", PASSWORDS.get)
    outcome = auth.authenticate(answer(auth, "guess"), "192.0.2.7", 1.0)
    assert outcome.user is None and outcome.response is not None and outcome.response.status == 403
    assert outcome.reason == "wrong password"


def test_guessing_source_is_blocked_and_reported_once() -> None:
    auth = Authenticator("pbx", PASSWORDS.get, GuessingGuard(limit=3, window=60, block=300))
    attacks = [auth.authenticate(answer(auth, f"guess{i}"), "192.0.2.7", float(i)).attack for i in range(5)]
    assert attacks == [False, False, True, False, False]
    # even the right password is refused while blocked, without a challenge to answer
    blocked = auth.authenticate(answer(auth, "alice-pw"), "192.0.2.7", 10.0)
    assert blocked.user is None and blocked.response is not None and blocked.response.status == 403


def test_block_ends_after_its_time() -> None:
    auth = Authenticator("pbx", PASSWORDS.get, GuessingGuard(limit=2, window=60, block=100))
    for i in range(2):
        auth.authenticate(answer(auth, "guess"), "192.0.2.7", float(i))
    assert auth.authenticate(answer(auth, "alice-pw", now=200.0), "192.0.2.7", 200.0).user == "alice"


def test_other_sources_are_not_blocked_by_a_guesser() -> None:
    auth = Authenticator("pbx", PASSWORDS.get, GuessingGuard(limit=2, window=60, block=300))
    for i in range(3):
        auth.authenticate(answer(auth, "guess"), "192.0.2.7", float(i))
    assert auth.authenticate(answer(auth, "alice-pw"), "198.51.100.1", 5.0).user == "alice"


def test_unknown_user_gets_403() -> None:
    auth = Authenticator("pbx", PASSWORDS.get)
    first = auth.authenticate(invite(), "192.0.2.7", 0.0)
    challenge = parse_challenge(first.response.headers.get("proxy-authenticate") or "")  # type: ignore[union-attr]
    value = DigestClient("mallory", "x").authorize(challenge, "INVITE", "sip:+15551234567@pbx")
    outcome = auth.authenticate(invite(value), "192.0.2.7", 1.0)
    assert outcome.response is not None and outcome.response.status == 403


def test_sha256_can_be_offered_and_is_preferred_by_a_capable_client() -> None:
    from runtime.sip.digest import select_challenge

    auth = Authenticator("pbx", PASSWORDS.get, algorithms=("SHA-256", "MD5"))
    first = auth.authenticate(invite(), "192.0.2.7", 0.0)
    assert first.response is not None
    offered = first.response.headers.get_all("proxy-authenticate")
    assert len(offered) == 2
    challenge = select_challenge(offered)
    assert challenge is not None and challenge.algorithm == "SHA-256"
    value = DigestClient("alice", "alice-pw").authorize(challenge, "INVITE", "sip:+15551234567@pbx")
    assert auth.authenticate(invite(value), "192.0.2.7", 1.0).user == "alice"


def test_md5_alone_is_offered_by_default() -> None:
    first = Authenticator("pbx", PASSWORDS.get).authenticate(invite(), "192.0.2.7", 0.0)
    assert first.response is not None
    (only,) = first.response.headers.get_all("proxy-authenticate")
    assert "algorithm=MD5" in only
