"""User declarations: passwords that cannot be empty, weak ones flagged with the reason, and the
`legacy-digest` mark for phones that answer digest without qop (issue 9)."""

from __future__ import annotations

from flowlang.fmt import format_source
from tests.flowlang.flowspec import compiles, errors_of, warnings_of

RULE = "\non incoming accept to user bob"


def test_an_empty_password_is_an_error_at_its_place():
    assert errors_of('user bob password ""' + RULE) == [
        "1:19: error: user bob has an empty password: anyone could register as that user and call through your lines"]


def test_an_empty_password_from_the_environment_is_an_error():
    assert errors_of('user bob password env BOB_PW' + RULE, env={"BOB_PW": ""})[0].startswith("1:19: ")


def test_a_short_password_is_a_warning_that_says_why():
    (warning,) = warnings_of('user bob password "x9-k"' + RULE)
    assert warning.startswith("1:19: user bob has a weak password (4 characters, fewer than 8)")
    assert "guess it offline, where no lockout applies" in warning


def test_a_password_of_digits_only_is_a_warning():
    (warning,) = warnings_of('user bob password "5551234567"' + RULE)
    assert "one kind of character only" in warning


def test_a_password_from_every_leaked_list_is_a_warning():
    (warning,) = warnings_of('user bob password "Password1"' + RULE)
    assert warning.endswith("(a well-known password): whoever captures one of its logins can guess it offline, "
                            "where no lockout applies; use 12 or more characters mixing letters and digits")


def test_a_strong_password_gets_no_warning():
    assert warnings_of('user bob password "correct-Horse-7-battery"' + RULE) == []


def test_users_answer_digest_with_qop_unless_marked_legacy():
    program = compiles('user bob password "correct-Horse-7"\nuser old password "old-phone-77" legacy-digest'
                       '\non incoming accept to user bob, user old')
    assert program.users["bob"].legacy_digest is False
    assert program.users["old"].legacy_digest is True


def test_legacy_digest_fits_the_block_form_and_is_said_once():
    assert compiles('user old {\n  password "old-phone-77"\n  legacy-digest\n}\non incoming accept to user old'
                    ).users["old"].legacy_digest
    assert errors_of('user old password "old-phone-77" legacy-digest legacy-digest\non incoming accept to user old'
                     ) == ["1:48: error: legacy-digest is set twice in user old (first at line 1)"]


def test_fmt_keeps_legacy_digest():
    text = 'user old password "old-phone-77" legacy-digest\n'
    assert "legacy-digest" in format_source(text)
