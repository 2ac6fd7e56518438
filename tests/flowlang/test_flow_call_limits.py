"""Call limits and timers in the script: the server block's `max call duration`, `rtp timeout`,
`max calls` (the whole server, and the defaults per user and per line), and `max calls` per user and
per line; their defaults, `off`, and the errors for values that cannot be meant."""

from flowspec import compiles, errors_of

from flowlang import format_source
from flowlang.model import DEFAULT_MAX_CALLS_PER_LINE, DEFAULT_MAX_CALLS_PER_USER

ROUTES = '''user alice password "alice-pw1"
line itsp1 { server "sip.example.com" }
on incoming from line itsp1 accept to user alice
on incoming from user any accept to line itsp1
'''


def test_the_server_block_sets_the_call_timers_and_the_servers_call_limit():
    s = compiles('server { max call duration 4h rtp timeout 60s max calls 500 }\n' + ROUTES).server
    assert (s.max_call_duration, s.rtp_timeout, s.max_calls) == (4 * 3600, 60, 500)


def test_without_settings_users_and_lines_get_the_default_limits_and_calls_last_at_most_four_hours():
    p = compiles(ROUTES)
    assert p.users["alice"].max_calls == DEFAULT_MAX_CALLS_PER_USER == 8
    assert p.lines["itsp1"].max_calls == DEFAULT_MAX_CALLS_PER_LINE == 100
    assert (p.server.max_call_duration, p.server.rtp_timeout, p.server.max_calls) == (4 * 3600.0, None, None)


def test_a_line_sets_how_many_calls_it_carries_at_once():
    p = compiles(ROUTES.replace('server "sip.example.com" }', 'server "sip.example.com" max calls 30 }'))
    assert p.lines["itsp1"].max_calls == 30


def test_the_server_block_changes_the_default_for_users_and_lines_that_set_none():
    p = compiles('server { max calls per user 2 max calls per line 10 }\n'
                 'user bob password "bob-pw-12" max calls 5\n' + ROUTES + 'on incoming to "5" accept to user bob\n')
    assert (p.users["alice"].max_calls, p.users["bob"].max_calls, p.lines["itsp1"].max_calls) == (2, 5, 10)


def test_the_server_block_may_come_after_the_users_it_gives_defaults_to():
    p = compiles(ROUTES + 'server { max calls per user 3 }\n')
    assert p.users["alice"].max_calls == 3


def test_off_means_no_limit_and_no_timer():
    p = compiles('server { max call duration off rtp timeout off max calls per line off }\n'
                 + ROUTES.replace('user alice password "alice-pw1"', 'user alice password "alice-pw1" max calls off'))
    assert (p.server.max_call_duration, p.server.rtp_timeout) == (None, None)
    assert (p.users["alice"].max_calls, p.lines["itsp1"].max_calls) == (None, None)


def test_off_still_names_a_user():
    p = compiles('user off password "off-pw-123" max calls 2\non incoming accept to user off\n')
    assert p.users["off"].max_calls == 2


def test_zero_calls_is_an_error_at_the_number_saying_to_write_off():
    assert errors_of('server { max calls 0 }\n' + ROUTES) == [
        "1:20: error: max calls must be at least 1 (write `off` for no limit)"]
    assert errors_of(ROUTES.replace('"sip.example.com" }', '"sip.example.com" max calls 0 }')) == [
        "2:49: error: max calls must be at least 1 (write `off` for no limit)"]
    assert errors_of('server {\n    max calls per user 0\n}\n' + ROUTES) == [
        "2:24: error: max calls per user must be at least 1 (write `off` for no limit)"]


def test_a_timer_under_a_second_is_an_error_at_the_duration():
    assert errors_of('server { rtp timeout 500ms max call duration 0s }\n' + ROUTES) == [
        "1:22: error: rtp timeout 500ms is under a second (write `off` to turn it off)",
        "1:46: error: max call duration 0s is under a second (write `off` to turn it off)"]


def test_a_duration_needs_its_unit():
    (error,) = errors_of('server { max call duration 3600 }\n' + ROUTES)
    assert error.startswith("1:28: error:") and "duration" in error


def test_a_limit_set_twice_is_an_error():
    (error,) = errors_of('server { max calls 5 max calls 6 }\n' + ROUTES)
    assert error.startswith("1:22: error: max calls is set twice")


def test_fmt_lays_the_settings_out_one_per_line_and_keeps_them():
    text = 'server { max call duration 4h rtp timeout off max calls per line 20 }\n'
    assert format_source(text) == ("server {\n    max call duration 4h\n    rtp timeout off\n"
                                   "    max calls per line 20\n}\n")
