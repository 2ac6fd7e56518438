"""Specification of runtime.sip.digest: one behaviour per test."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.sip.digest import (
    SUPPORTED_ALGORITHMS,
    Challenge,
    DigestClient,
    DigestError,
    DigestServer,
    compute_response,
    parse_challenge,
    parse_credentials,
    select_challenge,
)

REALM = "callflow.test"
URI = "sip:registrar.callflow.test"
USERS = {"alice": "s3cret", "bob": "hunter2"}


def counter_cnonce() -> str:
    return "cnonce-fixed"


def server(**kw) -> DigestServer:
    return DigestServer(REALM, secret=b"k" * 32, **kw)


def answer(srv: DigestServer, client: DigestClient, now: float, method: str = "REGISTER") -> str:
    chosen = select_challenge(srv.challenge(now))
    assert chosen is not None
    return client.authorize(chosen, method, URI)


# --- RFC worked examples ------------------------------------------------------------


def test_rfc2617_section_3_5_example_response():
    assert (
        compute_response(
            "MD5",
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            qop="auth",
            nc="00000001",
            cnonce="0a4f113b",
        )
        == "6629fae49393a05397450978507c4ef1"
    )


def test_rfc7616_section_3_9_1_sha256_example_via_client():
    challenge = parse_challenge(
        'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    client = DigestClient(
        "Mufasa", "Circle of Life", cnonce_factory=lambda: "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
    )
    creds = parse_credentials(client.authorize(challenge, "GET", "/dir/index.html"))
    assert creds.response == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    assert (creds.qop, creds.nc, creds.algorithm) == ("auth", 1, "SHA-256")
    assert creds.opaque == "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"


def test_rfc7616_section_3_9_1_md5_example():
    assert (
        compute_response(
            "MD5",
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            qop="auth",
            nc="00000001",
            cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        )
        == "8ca523f5e9506fed4657c9700eebdbec"
    )


# --- parsing ------------------------------------------------------------------------


def test_challenge_defaults_to_md5_without_qop():
    ch = parse_challenge('Digest realm="r", nonce="n"')
    assert (ch.scheme, ch.realm, ch.nonce, ch.algorithm, ch.qop, ch.opaque, ch.stale) == (
        "Digest",
        "r",
        "n",
        "MD5",
        (),
        None,
        False,
    )


def test_quoted_strings_unescape_and_keep_commas_inside_quotes():
    ch = parse_challenge(r'Digest realm="a, \"quoted\" \\ realm", nonce="x,y=z"')
    assert ch.realm == 'a, "quoted" \\ realm'
    assert ch.nonce == "x,y=z"


def test_whitespace_and_parameter_name_case_are_tolerated():
    ch = parse_challenge('  digest   REALM = "r" ,\t Nonce="n",ALGORITHM = sha-256 ,QoP="auth" , Stale=TRUE ')
    assert (ch.realm, ch.nonce, ch.algorithm, ch.qop, ch.stale) == ("r", "n", "SHA-256", ("auth",), True)


def test_unknown_parameters_are_kept_raw():
    ch = parse_challenge('Digest realm="r", nonce="n", charset=UTF-8, userhash=false')
    assert ch.params["charset"] == "UTF-8" and ch.params["userhash"] == "false"


def test_unknown_scheme_is_rejected_by_name():
    with pytest.raises(DigestError, match="NewAuth"):
        parse_challenge('NewAuth realm="r", nonce="n"')


@pytest.mark.parametrize(
    "value, complaint",
    [
        ("", "scheme"),
        ('Digest realm="r"', "nonce"),
        ('Digest realm="r", nonce="n', "malformed"),
        ('Digest realm="r" nonce="n"', "malformed"),
        ('Digest realm="r", realm="s", nonce="n"', "duplicate"),
    ],
)
def test_malformed_challenges_say_what_is_wrong(value, complaint):
    with pytest.raises(DigestError, match=complaint):
        parse_challenge(value)


def test_credentials_parse_nc_as_hex_and_keep_the_wire_form():
    creds = parse_credentials(
        'Digest username="alice", realm="r", nonce="n", uri="sip:x", response="ab12", '
        'qop=auth, nc=0000000a, cnonce="c"'
    )
    assert (creds.nc, creds.params["nc"], creds.qop, creds.cnonce) == (10, "0000000a", "auth", "c")


def test_credentials_with_non_hex_response_are_malformed():
    with pytest.raises(DigestError, match="response"):
        parse_credentials('Digest username="a", realm="r", nonce="n", uri="u", response="zz"')


# --- choosing among challenges -------------------------------------------------------


def test_select_prefers_sha256_over_md5_whatever_the_order():
    md5 = 'Digest realm="r", nonce="n1", algorithm=MD5, qop="auth"'
    sha = 'Digest realm="r", nonce="n2", algorithm=SHA-256, qop="auth"'
    assert select_challenge([md5, sha]).algorithm == "SHA-256"
    assert select_challenge([sha, md5]).algorithm == "SHA-256"


def test_select_skips_unknown_schemes_and_algorithms():
    chosen = select_challenge(
        [
            'NewAuth realm="r"',
            'Digest realm="r", nonce="n1", algorithm=SHA-3-9000',
            'Digest realm="r", nonce="n2", qop="auth-conf"',
            "garbage",
            'Digest realm="r", nonce="n3"',
        ]
    )
    assert chosen is not None and chosen.nonce == "n3"


def test_select_returns_none_when_nothing_is_usable():
    assert select_challenge(['Basic realm="r"']) is None


# --- client ---------------------------------------------------------------------------


def test_client_prefers_auth_and_falls_back_to_auth_int():
    client = DigestClient("alice", "pw", cnonce_factory=counter_cnonce)
    both = Challenge("Digest", "r", "n", qop=("auth-int", "auth"))
    only_int = Challenge("Digest", "r", "n2", qop=("auth-int",))
    assert parse_credentials(client.authorize(both, "INVITE", URI)).qop == "auth"
    assert parse_credentials(client.authorize(only_int, "INVITE", URI, b"v=0")).qop == "auth-int"


def test_client_counts_nc_per_nonce_and_restarts_for_a_new_nonce():
    client = DigestClient("alice", "pw")
    ch1 = Challenge("Digest", "r", "n1", qop=("auth",))
    ch2 = Challenge("Digest", "r", "n2", qop=("auth",))
    ncs = [parse_credentials(client.authorize(ch, "REGISTER", URI)).nc for ch in (ch1, ch1, ch1, ch2)]
    assert ncs == [1, 2, 3, 1]


def test_client_answers_legacy_challenge_without_qop_nc_or_cnonce():
    client = DigestClient("alice", "pw")
    creds = parse_credentials(client.authorize(Challenge("Digest", "r", "n"), "REGISTER", URI))
    assert (creds.qop, creds.nc, creds.cnonce) == (None, None, None)


def test_client_escapes_quotes_in_username():
    client = DigestClient('al"ice\\', "pw")
    creds = parse_credentials(client.authorize(Challenge("Digest", "r", "n"), "REGISTER", URI))
    assert creds.username == 'al"ice\\'


def test_client_refuses_header_injection_in_uri():
    with pytest.raises(DigestError):
        DigestClient("alice", "pw").authorize(Challenge("Digest", "r", "n"), "REGISTER", "sip:x\r\nVia: evil")


def test_client_does_not_retry_a_nonce_it_already_answered():
    client = DigestClient("alice", "wrong")
    ch = parse_challenge('Digest realm="r", nonce="n1", qop="auth"')
    assert client.should_retry(ch)
    client.authorize(ch, "REGISTER", URI)
    assert not client.should_retry(ch)
    assert not client.should_retry(ch)


def test_client_retries_each_new_nonce_once():
    client = DigestClient("alice", "pw")
    ch = parse_challenge('Digest realm="r", nonce="fresh"')
    assert client.should_retry(ch)
    assert not client.should_retry(ch)


def test_client_with_rejected_credentials_retries_only_when_stale():
    client = DigestClient("alice", "pw")
    fresh_nonce = parse_challenge('Digest realm="r", nonce="n2", qop="auth"')
    stale = parse_challenge('Digest realm="r", nonce="n3", qop="auth", stale=true')
    assert not client.should_retry(fresh_nonce, sent_credentials=True)
    assert client.should_retry(stale, sent_credentials=True)
    client.authorize(stale, "REGISTER", URI)
    assert not client.should_retry(stale, sent_credentials=True)


def test_client_never_loops_against_a_server_that_mints_a_nonce_per_401():
    srv, client = server(), DigestClient("alice", "wrong")
    attempts = 0
    challenges, sent = srv.challenge(0.0), False
    while client.should_retry(select_challenge(challenges), sent_credentials=sent):
        attempts += 1
        assert attempts < 5
        value = client.authorize(select_challenge(challenges), "REGISTER", URI)
        assert not srv.verify(value, "REGISTER", USERS.get, 1.0).ok
        challenges, sent = srv.challenge(1.0), True
    assert attempts == 1


def test_client_repr_hides_the_password():
    assert "s3cret" not in repr(DigestClient("alice", "s3cret"))


# --- server ---------------------------------------------------------------------------


def test_server_offers_one_challenge_per_algorithm_most_preferred_first():
    values = server(algorithms=("SHA-256", "MD5")).challenge(0.0)
    parsed = [parse_challenge(v) for v in values]
    assert [c.algorithm for c in parsed] == ["SHA-256", "MD5"]
    assert all(c.qop == ("auth",) and c.realm == REALM and not c.stale for c in parsed)


def test_server_sets_stale_flag_on_request():
    assert all(parse_challenge(v).stale for v in server().challenge(0.0, stale=True))


def test_each_challenge_gets_a_different_nonce():
    srv = server()
    assert parse_challenge(srv.challenge(0.0)[0]).nonce != parse_challenge(srv.challenge(0.0)[0]).nonce


# -sess needs a cnonce, which only travels with qop, so it has no legacy (qop-less) form.
@pytest.mark.parametrize(
    "algorithm, qop",
    [(a, q) for a in SUPPORTED_ALGORITHMS for q in ("auth", "auth-int", None) if q or "-sess" not in a],
)
def test_round_trip_succeeds_for_every_algorithm_and_qop(algorithm, qop):
    srv = server(algorithms=(algorithm,))
    ch = parse_challenge(srv.challenge(10.0)[0])
    offered = Challenge(ch.scheme, ch.realm, ch.nonce, ch.algorithm, (qop,) if qop else (), params=ch.params)
    value = DigestClient("alice", "s3cret").authorize(offered, "INVITE", URI, b"v=0\r\n")
    result = srv.verify(value, "INVITE", USERS.get, 20.0, b"v=0\r\n", legacy=lambda user: True)
    assert (result.ok, result.username, result.reason) == (True, "alice", "ok")


def test_auth_int_covers_the_body():
    srv = server()
    ch = parse_challenge(srv.challenge(0.0)[0])
    ch = Challenge(ch.scheme, ch.realm, ch.nonce, ch.algorithm, ("auth-int",), params=ch.params)
    value = DigestClient("alice", "s3cret").authorize(ch, "INVITE", URI, b"v=0\r\n")
    assert srv.verify(value, "INVITE", USERS.get, 1.0, b"tampered").reason == "wrong password"


def test_wrong_password_is_rejected_and_names_the_user():
    srv = server()
    result = srv.verify(answer(srv, DigestClient("alice", "guess"), 0.0), "REGISTER", USERS.get, 1.0)
    assert (result.ok, result.username, result.stale) == (False, "alice", False)
    assert result.reason == "wrong password"


def test_unknown_user_is_rejected():
    srv = server()
    result = srv.verify(answer(srv, DigestClient("mallory", "x"), 0.0), "REGISTER", USERS.get, 1.0)
    assert (result.ok, result.username, result.reason) == (False, "mallory", "unknown user")


def test_method_is_part_of_the_digest():
    srv = server()
    value = answer(srv, DigestClient("alice", "s3cret"), 0.0, method="REGISTER")
    assert srv.verify(value, "INVITE", USERS.get, 1.0).reason == "wrong password"


def test_realm_mismatch_is_rejected():
    srv, other = server(), DigestServer("elsewhere", secret=b"k" * 32)
    result = srv.verify(answer(other, DigestClient("alice", "s3cret"), 0.0), "REGISTER", USERS.get, 1.0)
    assert (result.ok, result.reason) == (False, "realm mismatch")


def test_expired_nonce_with_right_password_is_stale():
    srv = server(nonce_lifetime=300.0)
    value = answer(srv, DigestClient("alice", "s3cret"), 0.0)
    result = srv.verify(value, "REGISTER", USERS.get, 301.0)
    assert (result.ok, result.stale, result.username) == (False, True, "alice")


def test_expired_nonce_is_stale_without_the_password_being_checked():
    # answering "stale" only for a right password would tell a guesser which guess was right
    srv = server(nonce_lifetime=300.0)
    result = srv.verify(answer(srv, DigestClient("alice", "guess"), 0.0), "REGISTER", USERS.get, 301.0)
    assert (result.ok, result.stale, result.guess, result.reason) == (False, True, False, "nonce expired")


def test_nonce_from_the_future_is_stale():
    srv = server()
    result = srv.verify(answer(srv, DigestClient("alice", "s3cret"), 1000.0), "REGISTER", USERS.get, 0.0)
    assert (result.ok, result.stale) == (False, True)


def test_nonce_minted_with_another_secret_is_not_accepted():
    ours, theirs = server(), DigestServer(REALM, secret=b"other" * 8)
    result = ours.verify(answer(theirs, DigestClient("alice", "s3cret"), 0.0), "REGISTER", USERS.get, 1.0)
    assert (result.ok, result.stale, result.reason) == (False, True, "unknown nonce")


def test_server_without_secret_still_verifies_its_own_nonces():
    srv = DigestServer(REALM)
    assert srv.verify(answer(srv, DigestClient("alice", "s3cret"), 0.0), "REGISTER", USERS.get, 1.0).ok


def test_replayed_nc_is_answered_stale_and_is_not_a_guess():
    srv = server()
    value = answer(srv, DigestClient("alice", "s3cret"), 0.0)
    assert srv.verify(value, "REGISTER", USERS.get, 1.0).ok
    result = srv.verify(value, "REGISTER", USERS.get, 2.0)
    assert (result.ok, result.stale, result.guess) == (False, True, False)
    assert result.reason == "nonce count out of order or replayed"


def test_nonce_count_arriving_out_of_order_is_answered_stale_not_counted_as_a_guess():
    srv, client = server(), DigestClient("alice", "s3cret")
    ch = select_challenge(srv.challenge(0.0))
    first, second, third = (client.authorize(ch, "REGISTER", URI) for _ in range(3))
    assert srv.verify(first, "REGISTER", USERS.get, 1.0).ok
    assert srv.verify(third, "REGISTER", USERS.get, 1.0).ok
    late = srv.verify(second, "REGISTER", USERS.get, 1.0)  # nc=2 after nc=3
    assert (late.ok, late.stale, late.guess) == (False, True, False)


def test_credentials_for_another_request_uri_are_refused_before_the_password():
    srv = server()
    value = answer(srv, DigestClient("alice", "s3cret"), 0.0, method="INVITE")  # computed for URI
    result = srv.verify(value, "INVITE", USERS.get, 1.0, request_uri="sip:+19005550100@callflow.test")
    assert (result.ok, result.stale, result.guess) == (False, False, False)
    assert result.reason == "digest uri does not match the Request-URI"


def test_digest_uri_may_differ_from_the_request_uri_only_in_scheme_and_host_case():
    srv = server()
    value = answer(srv, DigestClient("alice", "s3cret"), 0.0, method="INVITE")
    assert srv.verify(value, "INVITE", USERS.get, 1.0, request_uri=URI.upper().replace("SIP:", "sip:")).ok


def test_nonce_is_good_only_for_the_scope_it_was_issued_for():
    srv = server()
    ch = select_challenge(srv.challenge(0.0, scope="INVITE|192.0.2.7"))
    value = DigestClient("alice", "s3cret").authorize(ch, "INVITE", URI)
    elsewhere = srv.verify(value, "INVITE", USERS.get, 1.0, scope="INVITE|198.51.100.66")
    assert (elsewhere.ok, elsewhere.stale, elsewhere.guess) == (False, True, False)
    assert srv.verify(value, "INVITE", USERS.get, 1.0, scope="INVITE|192.0.2.7").ok


def test_held_user_gets_no_password_check():
    srv = server()
    value = answer(srv, DigestClient("alice", "s3cret"), 0.0)
    result = srv.verify(value, "REGISTER", USERS.get, 1.0, hold=lambda user: user == "alice")
    assert (result.ok, result.held, result.guess) == (False, True, False)


def test_wrong_password_and_unknown_user_are_guesses():
    srv = server()
    wrong = srv.verify(answer(srv, DigestClient("alice", "guess"), 0.0), "REGISTER", USERS.get, 1.0)
    unknown = srv.verify(answer(srv, DigestClient("mallory", "x"), 0.0), "REGISTER", USERS.get, 1.0)
    assert wrong.guess and unknown.guess


def test_increasing_nc_on_the_same_nonce_is_accepted():
    srv, client = server(), DigestClient("alice", "s3cret")
    ch = select_challenge(srv.challenge(0.0))
    for _ in range(3):
        assert srv.verify(client.authorize(ch, "REGISTER", URI), "REGISTER", USERS.get, 1.0).ok


def test_failed_attempts_do_not_burn_nc_values():
    srv = server()
    ch = select_challenge(srv.challenge(0.0))
    srv.verify(DigestClient("alice", "guess").authorize(ch, "REGISTER", URI), "REGISTER", USERS.get, 1.0)
    value = DigestClient("alice", "s3cret").authorize(ch, "REGISTER", URI)
    assert srv.verify(value, "REGISTER", USERS.get, 1.0).ok


def test_nonces_evicted_from_the_replay_table_come_back_stale_not_replayable():
    srv = server(max_tracked_nonces=2)
    client = DigestClient("alice", "s3cret")
    first = answer(srv, client, 0.0)
    assert srv.verify(first, "REGISTER", USERS.get, 1.0).ok
    for t in (1.0, 2.0):
        assert srv.verify(answer(srv, client, t), "REGISTER", USERS.get, 3.0).ok
    result = srv.verify(first, "REGISTER", USERS.get, 4.0)
    assert (result.ok, result.stale) == (False, True)


def legacy_answer(srv: DigestServer, password: str = "s3cret") -> str:
    ch = parse_challenge(srv.challenge(0.0)[0])
    legacy = Challenge(ch.scheme, ch.realm, ch.nonce)  # as if the client ignored qop
    value = DigestClient("alice", password).authorize(legacy, "REGISTER", URI)
    assert "qop" not in parse_credentials(value).params
    return value


def test_answer_without_qop_is_refused_unless_the_user_is_marked_legacy():
    srv = server(algorithms=("MD5",))
    result = srv.verify(legacy_answer(srv), "REGISTER", USERS.get, 1.0)
    assert (result.ok, result.guess) == (False, False)
    assert result.reason.startswith("qop=auth required")


def test_legacy_rfc2617_client_without_qop_is_accepted_when_marked_legacy():
    srv = server(algorithms=("MD5",))
    assert srv.verify(legacy_answer(srv), "REGISTER", USERS.get, 1.0, legacy=lambda user: True).ok


def test_a_legacy_nonce_is_good_for_one_request_only():
    srv = server(algorithms=("MD5",))
    value = legacy_answer(srv)
    assert srv.verify(value, "REGISTER", USERS.get, 1.0, legacy=lambda user: True).ok
    again = srv.verify(value, "REGISTER", USERS.get, 2.0, legacy=lambda user: True)
    assert (again.ok, again.stale) == (False, True)


def test_algorithm_not_offered_is_rejected():
    srv = server(algorithms=("SHA-256",))
    nonce = parse_challenge(srv.challenge(0.0)[0]).nonce
    md5 = Challenge("Digest", REALM, nonce, "MD5", ("auth",))
    value = DigestClient("alice", "s3cret").authorize(md5, "REGISTER", URI)
    result = srv.verify(value, "REGISTER", USERS.get, 1.0)
    assert not result.ok and result.reason.startswith("unsupported algorithm")


def test_malformed_credentials_are_rejected_with_a_reason():
    result = server().verify('Digest username="alice"', "REGISTER", USERS.get, 0.0)
    assert not result.ok and result.reason.startswith("malformed credentials:")


def test_qop_without_nc_is_malformed():
    value = f'Digest username="alice", realm="{REALM}", nonce="n", uri="u", response="00", qop=auth'
    assert server().verify(value, "REGISTER", USERS.get, 0.0).reason.startswith("malformed credentials")


def test_uppercase_hex_response_is_accepted():
    srv = server()
    value = answer(srv, DigestClient("alice", "s3cret"), 0.0)
    creds = parse_credentials(value)
    assert srv.verify(value.replace(creds.response, creds.response.upper()), "REGISTER", USERS.get, 1.0).ok


def test_server_rejects_unsupported_algorithm_configuration():
    with pytest.raises(ValueError):
        DigestServer(REALM, algorithms=("SHA-3-9000",))


# --- robustness -----------------------------------------------------------------------

_fragments = st.sampled_from(
    [
        "Digest ",
        "digest",
        "realm",
        "nonce",
        "username",
        "uri",
        "response",
        "qop",
        "nc",
        "cnonce",
        "algorithm",
        "=",
        ",",
        '"',
        "\\",
        " ",
        "\t",
        "\r\n",
        "auth",
        "auth-int",
        "MD5",
        "SHA-256-sess",
        "00000001",
        "abc123",
        REALM,
        "\x00",
        "\udc80",
        "\ud800",
        "é",
    ]
)
_header_like = st.lists(_fragments, max_size=30).map("".join)
_anything = st.one_of(st.text(), _header_like)


@settings(max_examples=500, deadline=None)
@given(_anything)
def test_parse_challenge_only_ever_raises_digest_error(value):
    try:
        parse_challenge(value)
    except DigestError:
        pass


@settings(max_examples=500, deadline=None)
@given(_anything)
def test_parse_credentials_only_ever_raises_digest_error(value):
    try:
        parse_credentials(value)
    except DigestError:
        pass


_verify_server = server(algorithms=SUPPORTED_ALGORITHMS)
_nonce = parse_challenge(_verify_server.challenge(0.0)[0]).nonce


@settings(max_examples=500, deadline=None)
@given(
    _anything,
    st.sampled_from(["", "username=", f'realm="{REALM}", nonce="{_nonce}", uri="u", response="0a", ']),
    st.text(max_size=10),
    st.floats(allow_nan=True, allow_infinity=True),
)
def test_verify_never_raises(value, prefix, method, now):
    result = _verify_server.verify(f"Digest {prefix}{value}", method, USERS.get, now)
    assert result.ok is False or result.username is not None
    _verify_server.verify(value, method, USERS.get, now)


def test_many_distinct_nonces_need_no_server_memory_until_used():
    srv = server()
    for t in itertools.islice(itertools.count(), 1000):
        srv.challenge(float(t))
    assert len(srv._nc) == 0
