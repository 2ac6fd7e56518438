"""Server, users and lines: what each declaration turns into."""

from flowspec import compiles, errors_of

from flowlang import Listen

ENV = {"BOB_PASSWORD": "bob-pw", "ITSP_PASSWORD": "trunk-pw", "CERT": "/etc/cert.pem"}


def test_server_block_sets_listen_addresses_per_transport_with_default_ports():
    p = compiles('''server {
        listen udp 0.0.0.0:5060
        listen tcp 0.0.0.0
        listen tls [::]:5061
        listen ws "127.0.0.1:8080"
        tls certificate "/etc/c.pem"
        tls key "/etc/k.pem"
    }''')
    assert p.server.listen == (
        Listen("udp", "0.0.0.0", 5060), Listen("tcp", "0.0.0.0", 5060),
        Listen("tls", "::", 5061), Listen("ws", "127.0.0.1", 8080),
    )
    assert (p.server.tls_cert, p.server.tls_key) == ("/etc/c.pem", "/etc/k.pem")


def test_server_block_sets_domain_realm_rtp_ports_user_agent_and_timezone():
    p = compiles('''server { domain "pbx.example.com" realm "example.com" rtp ports 20000-20999
                             user-agent "Callflow/1" timezone "Europe/Berlin" }''')
    s = p.server
    assert (s.domain, s.realm, s.rtp_ports, s.user_agent, s.timezone) == (
        "pbx.example.com", "example.com", (20000, 20999), "Callflow/1", "Europe/Berlin")


def test_no_server_block_leaves_every_setting_to_the_runtime():
    s = compiles("").server
    assert s.listen == () and s.domain is None and s.rtp_ports is None


def test_tls_certificate_may_come_from_the_environment():
    p = compiles('server { tls certificate env CERT tls key "k" }', env=ENV)
    assert p.server.tls_cert == "/etc/cert.pem"


def test_user_password_may_come_from_the_environment():
    p = compiles('user bob password env BOB_PASSWORD on incoming accept to user bob', env=ENV)
    assert p.users["bob"].password == "bob-pw"


def test_user_caller_id_and_max_calls_inline_or_in_a_block():
    p = compiles('''user bob password "b" caller-id "+15551230002" max calls 2
                    user carol { password "c" caller-id "+15551230003" max calls 1 }
                    on incoming to "1" accept to user bob, user carol''')
    assert (p.users["bob"].caller_id, p.users["bob"].max_calls) == ("+15551230002", 2)
    assert (p.users["carol"].caller_id, p.users["carol"].max_calls) == ("+15551230003", 1)


def test_numeric_user_names_are_fine():
    assert "1001" in compiles('user 1001 password "x" on incoming accept to user 1001').users


def test_line_takes_every_setting():
    p = compiles('''line itsp1 {
        server "sip.provider.example:5070"
        transport tcp
        username "15551230000"
        auth-username "auth-15551230000"
        password env ITSP_PASSWORD
        realm "provider.example"
        outbound-proxy "proxy.provider.example:5060"
        register every 5m
        numbers "+15551230001", "+15551230002"
        caller-id "+15551230000"
        codecs PCMU, PCMA, "opus"
        display "Office"
    }
    on incoming from line itsp1 reject 480''', env=ENV)
    ln = p.lines["itsp1"]
    assert (ln.server_host, ln.server_port, ln.transport) == ("sip.provider.example", 5070, "tcp")
    assert (ln.username, ln.auth_username, ln.password) == ("15551230000", "auth-15551230000", "trunk-pw")
    assert (ln.realm, ln.outbound_proxy, ln.register_every) == (
        "provider.example", "proxy.provider.example:5060", 300)
    assert ln.numbers == ("+15551230001", "+15551230002")
    assert (ln.caller_id, ln.codecs, ln.display) == ("+15551230000", ("PCMU", "PCMA", "opus"), "Office")


def test_line_without_register_is_an_ip_authenticated_trunk():
    p = compiles('line trunk { server "10.0.0.1" } on incoming from line trunk reject 480')
    assert p.lines["trunk"].register_every is None
    assert p.lines["trunk"].server_port == 5060


def test_register_never_says_so_explicitly():
    p = compiles('line trunk { server "10.0.0.1" register never } on incoming from line trunk reject 480')
    assert p.lines["trunk"].register_every is None


def test_a_line_that_registers_needs_username_and_password():
    errs = errors_of('line l { server "x" register every 60s } on incoming from line l reject 480')
    assert any("registers but has no username" in e for e in errs)
    assert any("registers but has no password" in e for e in errs)


def test_unset_env_secret_is_an_error_naming_the_variable_at_its_position():
    assert errors_of('user bob password env BOB_PASSWORD') == [
        "1:19: error: environment variable BOB_PASSWORD is not set (password of user bob)"]


def test_empty_env_secret_is_an_error_too():
    errs = errors_of('user bob password env BOB_PASSWORD', env={"BOB_PASSWORD": ""})
    assert errs[0].endswith("environment variable BOB_PASSWORD is empty (password of user bob)")


def test_a_user_declared_twice_is_an_error_at_the_second_name():
    errs = errors_of('user a password "1"\nuser a password "2"\non incoming accept to user a')
    assert errs == ["2:6: error: user a is declared twice (first at t.flow:1:1)"]


def test_a_line_declared_twice_is_an_error():
    errs = errors_of('line l { server "a" }\nline l { server "b" }\non incoming from line l reject 480')
    assert errs == ["2:6: error: line l is declared twice (first at t.flow:1:1)"]


def test_any_cannot_name_a_user():
    assert "reserved word" in errors_of('user any password "x"')[0]


def test_a_setting_given_twice_is_an_error():
    errs = errors_of('line l { server "a" server "b" } on incoming from line l reject 480')
    assert errs == ["1:21: error: server is set twice in line l (first at line 1)"]


def test_bad_server_address_is_an_error():
    assert "is not host or host:port" in errors_of(
        'line l { server "a:99999" } on incoming from line l reject 480')[0]


def test_rtp_port_range_must_be_ordered_and_unprivileged():
    assert "rtp ports" in errors_of("server { rtp ports 30000-20000 }")[0]


def test_listening_on_tls_needs_a_certificate_and_key():
    assert "needs `tls certificate`" in errors_of("server { listen tls 0.0.0.0:5061 }")[0]


def test_unknown_timezone_is_an_error():
    assert "unknown time zone" in errors_of('server { timezone "Mars/Olympus" }')[0]


def test_a_user_without_password_is_an_error():
    assert errors_of("user a caller-id \"1\"")[0] == "1:6: error: user a has no password"


def test_a_line_without_server_is_an_error():
    assert "has no server" in errors_of('line l { username "u" } on incoming from line l reject 480')[0]


def test_two_server_blocks_are_an_error():
    assert "a second server block" in errors_of("server { }\nserver { }")[0]


def test_a_line_trusts_the_providers_other_addresses_and_networks():
    p = compiles('''line trunk { server "10.0.0.1" trust "203.0.113.7", "198.51.100.0/24"
                                  trust "2001:db8::/32" trust "198.51.200.9/24" }
                    on incoming from line trunk reject 480''')
    # one address as written, networks normalised (host bits dropped)
    assert p.lines["trunk"].trust == ("203.0.113.7", "198.51.100.0/24", "2001:db8::/32", "198.51.200.0/24")


def test_a_host_name_cannot_be_trusted():
    errs = errors_of('line l { server "10.0.0.1" trust "gw.provider.example" } on incoming from line l reject 480')
    assert errs == ["1:28: error: trust 'gw.provider.example' is not an IP address, network or address:port "
                    '(e.g. "203.0.113.7", "203.0.113.0/24" or "203.0.113.7:5080"); host names are not taken, so '
                    "DNS cannot widen the trust"]


def test_trusting_the_whole_internet_is_an_error():
    errs = errors_of('line l { server "10.0.0.1" trust "::/0" } on incoming from line l reject 480')
    assert "would make every address on the internet this line's" in errs[0]


def test_an_address_trusted_by_two_lines_is_an_error_at_the_second():
    errs = errors_of('line a { server "10.0.0.1" trust "203.0.113.0/24" }\n'
                     'line b { server "10.0.0.2" trust "203.0.113.9" }\n'
                     'on incoming from line any reject 480')
    assert errs == ["2:28: error: line b trusts 203.0.113.9, which line a also trusts (203.0.113.0/24 at "
                    "t.flow:1:28): a call from there could not tell its line"]


def test_a_line_trusts_one_address_and_port_such_as_an_edges_providers_socket():
    p = compiles('line trunk { server "10.0.0.1" trust "192.0.2.10:5080", "[2001:db8::10]:5080" } '
                 'on incoming from line trunk reject 480')
    assert p.lines["trunk"].trust == ("192.0.2.10:5080", "[2001:db8::10]:5080")


def test_one_address_and_port_trusted_by_two_lines_is_an_error():
    errs = errors_of('line a { server "10.0.0.1" trust "192.0.2.10:5080" } '
                     'line b { server "10.0.0.2" trust "192.0.2.10:5080" } '
                     'on incoming from line a reject 480 on incoming from line b reject 480')
    assert len(errs) == 1 and "line b trusts 192.0.2.10:5080, which line a also trusts" in errs[0], errs


def test_a_bad_address_and_port_cannot_be_trusted():
    for raw in ("192.0.2.10:0", "192.0.2.10:70000", "[2001:db8::10]", "192.0.2.10:sip"):
        errs = errors_of(f'line l {{ server "10.0.0.1" trust "{raw}" }} on incoming from line l reject 480')
        assert errs and "is not an IP address, network or address:port" in errs[0], (raw, errs)


def test_trusting_an_address_and_port_leaves_the_lines_server_as_written():
    p = compiles('line trunk { server "10.0.0.1:5080" trust "192.0.2.10:5090" } on incoming from line trunk reject 480')
    assert (p.lines["trunk"].server_host, p.lines["trunk"].server_port) == ("10.0.0.1", 5080)
