"""A shared nonce secret (--nonce-secret, CALLFLOW_NONCE_SECRET): behind an edge, a challenge from
one node may be answered on another. Sans-IO: each node's engine clock is a number with its own
origin; the wall-clock offset each is given makes their nonces' time stamps agree."""

from __future__ import annotations

import pytest

from runtime.security.auth import MIN_NONCE_SECRET, Authenticator
from tests.unit.test_auth import PASSWORDS, PHONE, answer

SECRET = b"0123456789abcdef-shared"
WALL = 1_800_000_000.0


def node(mono_origin: float, secret: bytes | None = SECRET) -> Authenticator:
    """A node whose engine clock reads `mono_origin` when the wall clock reads WALL."""
    auth = Authenticator("pbx", PASSWORDS.get)
    if secret is not None:
        auth.share_nonces(secret, WALL - mono_origin)
    return auth


def test_a_challenge_from_one_node_is_answered_on_another_with_the_same_secret() -> None:
    a, b = node(100.0), node(5_000.0)
    creds = answer(a, "alice-pw", method="REGISTER", now=100.0)
    outcome = b.authenticate(creds, PHONE, 5_001.0)
    assert outcome.user == "alice"


def test_each_node_accepts_the_others_nonces_both_ways() -> None:
    a, b = node(100.0), node(5_000.0)
    assert b.authenticate(answer(a, "alice-pw", now=100.0), PHONE, 5_002.0).user == "alice"
    assert a.authenticate(answer(b, "alice-pw", now=5_010.0), PHONE, 111.0).user == "alice"


def test_a_nonce_from_another_node_past_its_lifetime_gets_a_stale_challenge() -> None:
    a, b = node(100.0), node(5_000.0)
    creds = answer(a, "alice-pw", now=100.0)
    outcome = b.authenticate(creds, PHONE, 5_000.0 + 301.0)
    assert outcome.user is None and outcome.response is not None and outcome.response.status == 407
    assert "stale=true" in (outcome.response.headers.get("proxy-authenticate") or "")


def test_a_nonce_signed_with_another_secret_is_refused_with_a_fresh_challenge_not_a_403() -> None:
    a, b = node(100.0), node(5_000.0, secret=b"another-secret-of-16+")
    outcome = b.authenticate(answer(a, "alice-pw", now=100.0), PHONE, 5_001.0)
    assert outcome.user is None and outcome.response is not None and outcome.response.status == 407
    assert not outcome.trips  # no password was checked: nothing counts as guessing


def test_without_a_shared_secret_each_node_signs_its_own_nonces() -> None:
    a, b = node(100.0, secret=None), node(100.0, secret=None)
    assert b.authenticate(answer(a, "alice-pw", now=100.0), PHONE, 101.0).user is None
    assert a.authenticate(answer(a, "alice-pw", now=100.0), PHONE, 101.0).user == "alice"


def test_a_short_secret_is_refused_saying_how_long_it_must_be() -> None:
    with pytest.raises(ValueError, match=f"at least {MIN_NONCE_SECRET} bytes"):
        Authenticator("pbx", PASSWORDS.get).share_nonces(b"short", 0.0)
