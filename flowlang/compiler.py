"""Syntax nodes to a checked Program: names resolved, secrets read, rules compiled, mistakes reported."""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Mapping, Sequence, Set
from dataclasses import replace
from functools import lru_cache
from types import MappingProxyType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .diagnostics import FlowError, Position, Reporter
from .events import HANDLER_FIELD_NAMES, handler_fields
from .model import (
    DTMF_SEND_MAX,
    GATHER_DIGIT_TIMEOUT,
    GATHER_MAX_DIGITS,
    GATHER_TERMINATOR,
    GATHER_TIMEOUT,
    Accept,
    Attempt,
    Gather,
    GatherBranch,
    Handler,
    Hangup,
    Line,
    Listen,
    Log,
    Play,
    Program,
    Record,
    RecordCall,
    Reject,
    SendDtmf,
    ServerConfig,
    SetCallerId,
    SetHeader,
    Target,
    Template,
    User,
    template_fields,
    template_problems,
)
from .patterns import PatternError
from .routing import Condition, Matcher, Router, Rule, ShadowIndex, compile_regex, plan_renders
from .syntax import BranchNode, CondNode, Decl, HandlerNode, MatcherNode, RuleNode, Setting, Stmt, TargetNode, Value

RESERVED = {"any"}
MIN_PASSWORD = 8  # characters (NIST SP 800-63B's floor for chosen secrets); see Compiler._password_strength
# the first words of every leaked-password list; a real check belongs in the operator's own tooling
COMMON_PASSWORDS = frozenset({
    "password", "123456", "12345678", "123456789", "1234567890", "qwerty", "letmein", "welcome", "admin",
    "secret", "changeme", "1234", "0000", "1111", "passw0rd", "password1", "sip", "voip", "pbx",
})

# values a rule's templates may use (captures are added per rule; code/reason after a failed accept)
RULE_VALUES = {"call", "to", "from", "from_type", "caller_id", "caller_name", "code", "reason"}
# what a gather's branches may use besides (the entry, without the terminator)
GATHER_VALUES = frozenset({"digits"})
DTMF_KEYS = frozenset("0123456789*#ABCD")
# a handler's values are its event's fields: flowlang/events.py (handler_fields), checked as errors

REASONS = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 408: "Request Timeout",
    410: "Gone", 480: "Temporarily Unavailable", 484: "Address Incomplete", 486: "Busy Here",
    487: "Request Terminated", 488: "Not Acceptable Here", 500: "Server Internal Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Server Time-out",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}

DAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
DAY_NAMES = {"monday": 0, "tuesday": 1, "wednesday": 2, "thursday": 3, "friday": 4, "saturday": 5,
             "sunday": 6, "tues": 1, "thur": 3, "thurs": 3}

DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061, "ws": 80, "wss": 443}

_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None


def _exact_address(text: str) -> tuple[str, int] | None:
    """A trust entry naming one address and port, `203.0.113.7:5080` or `[2001:db8::7]:5080` (an edge's
    providers' socket sharing its IP with the phones' one, docs/scaling.md): (canonical IP, port), or
    None when `text` is not of that form."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        return None
    if not port.isdigit() or not 0 < int(port) <= 65535:
        return None
    try:
        return str(ipaddress.ip_address(host)), int(port)
    except ValueError:
        return None


def _show(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """`203.0.113.7` for one address, `203.0.113.0/24` for a network."""
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


@lru_cache(maxsize=1024)  # a script repeats a few durations thousands of times
def parse_duration(text: str) -> float:
    m = _DURATION.fullmatch(text)
    if not m:
        raise ValueError(text)
    n = float(m.group(1))
    return n * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[m.group(2)]


# Templates are immutable: a script that logs or rewrites the same text in many rules parses it once.
_template = lru_cache(maxsize=4096)(Template.parse)


@lru_cache(maxsize=4096)
def _template_problems(text: str) -> tuple[tuple[int, str], ...]:
    return tuple(template_problems(text))


def split_host_port(text: str, default_port: int) -> tuple[str, int] | None:
    """`host`, `host:port`, `[v6]:port` (a leading `sip:` is tolerated); None when malformed."""
    t = text.strip()
    if t.lower().startswith("sip:"):
        t = t[4:]
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::([0-9]+))?", t)
    if m:
        host, port = m.group(1), m.group(2)
    else:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)(?::([0-9]+))?", t)
        if not m:
            return None
        host, port = m.group(1), m.group(2)
    p = int(port) if port else default_port
    if not 1 <= p <= 65535:
        return None
    return host, p


class Compiler:
    """One compilation: reads the items of every file in load order and builds a Program."""

    def __init__(self, reporter: Reporter, env: Mapping[str, str]) -> None:
        self.r = reporter
        self.env = env
        self.server: ServerConfig = ServerConfig()
        self.server_zone: ZoneInfo | None = None
        self.users: dict[str, User] = {}
        self.lines: dict[str, Line] = {}
        self._trust_at: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str, str, int, int]] = []
        self._trust_exact_at: dict[tuple[str, int], tuple[str, str, int, int]] = {}  # IP:PORT -> its line, where
        self.rules: list[Rule] = []
        self.handlers: list[Handler] = []
        self.used_lines: set[str] = set()
        self.reached_users: set[str] = set()
        self.any_line_rule = False

    # -------------------------------------------------------------- entry

    def compile(self, items: list[tuple[str, object]], files: tuple[str, ...], source_hash: str) -> Program:
        decls = [(f, it) for f, it in items if isinstance(it, Decl)]
        servers = [(f, d) for f, d in decls if d.kind == "server"]
        for n, (f, d) in enumerate(servers):
            if n == 0:
                self._server(f, d)
            else:
                first = servers[0]
                self.r.error(f, d.line, d.col,
                             f"a second server block: the first is at {first[0]}:{first[1].line}:{first[1].col}")
        if self.server.recordings is None:
            # `record` writes next to the (first) script unless the server block says where
            first = next((x for x in files if not x.startswith("<")), None)
            base = os.path.dirname(first) if first is not None else "."
            self.server = replace(self.server, recordings=os.path.abspath(os.path.join(base or ".", "recordings")))
        for f, d in decls:
            if d.kind == "user":
                self._user(f, d)
            elif d.kind == "line":
                self._line(f, d)
        self._check_trust_overlaps()
        shadow = ShadowIndex()
        for f, it in items:
            if isinstance(it, RuleNode):
                self._rule(f, it, shadow)
            elif isinstance(it, HandlerNode):
                self._handler(f, it)
        self._warn_unused()
        if self.r.has_errors:
            raise FlowError(self.r.ordered())
        by_event: dict[str, list[Handler]] = {}
        for h in self.handlers:
            by_event.setdefault(h.event, []).append(h)
        rules = tuple(self.rules)
        return Program(
            source_hash=source_hash,
            files=files,
            server=self.server,
            users=MappingProxyType(dict(self.users)),
            lines=MappingProxyType(dict(self.lines)),
            warnings=tuple(self.r.warnings()),
            rules=rules,
            all_handlers=tuple(self.handlers),
            _router=Router(rules),
            _by_event=MappingProxyType({k: tuple(v) for k, v in by_event.items()}),
        )

    # -------------------------------------------------------------- helpers

    def _value(self, f: str, v: Value, what: str) -> str | None:
        if v.env is None:
            return v.text
        val = self.env.get(v.env)
        if val is None:
            self.r.error(f, v.line, v.col, f"environment variable {v.env} is not set ({what})")
            return None
        if val == "":
            self.r.error(f, v.line, v.col, f"environment variable {v.env} is empty ({what})")
            return None
        return val

    def _once(self, f: str, settings: list[Setting], owner: str) -> dict[str, Setting]:
        seen: dict[str, Setting] = {}
        for s in settings:
            if s.kind in seen and s.kind not in ("listen", "numbers", "codecs", "trust"):
                first = seen[s.kind]
                self.r.error(f, s.line, s.col,
                             f"{_setting_word(s.kind)} is set twice in {owner} (first at line {first.line})")
                continue
            seen.setdefault(s.kind, s)
        return seen

    def _name_ok(self, f: str, d: Decl, table: Mapping[str, object], what: str) -> bool:
        if d.name in RESERVED:
            self.r.error(f, d.name_line, d.name_col, f"'{d.name}' is a reserved word and cannot name a {what}")
            return False
        if d.name in table:
            prev = table[d.name]
            where = getattr(prev, "position", None)
            self.r.error(f, d.name_line, d.name_col, f"{what} {d.name} is declared twice (first at {where})")
            return False
        return True

    def _unknown(self, f: str, line: int, col: int, what: str, name: str, table: Mapping[str, object]) -> None:
        close = difflib.get_close_matches(name, list(table), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        self.r.error(f, line, col, f"unknown {what} {name}{hint}")

    # -------------------------------------------------------------- declarations

    def _server(self, f: str, d: Decl) -> None:
        s = self._once(f, d.settings, "the server block")
        listens: list[Listen] = []
        for st in d.settings:
            if st.kind != "listen":
                continue
            transport, addr = st.args
            hp = split_host_port(addr, DEFAULT_PORTS[transport])
            if hp is None:
                self.r.error(f, st.line, st.col, f"listen {transport}: '{addr}' is not host:port")
                continue
            listens.append(Listen(transport, hp[0], hp[1]))

        def text(kind: str) -> str | None:
            st = s.get(kind)
            return None if st is None else self._value(f, st.args[0], f"{_setting_word(kind)} of the server")

        rtp = None
        if "rtp_ports" in s:
            lo, hi = s["rtp_ports"].args
            if not (1024 <= lo < hi <= 65535):
                st = s["rtp_ports"]
                self.r.error(f, st.line, st.col, f"rtp ports {lo}-{hi}: need 1024 <= low < high <= 65535")
            else:
                rtp = (lo, hi)
        tz = None
        if "timezone" in s:
            st = s["timezone"]
            tz = st.args[0]
            self.server_zone = self._zone(f, tz, st.line, st.col)
        cert, key = text("tls_cert"), text("tls_key")
        if any(x.transport in ("tls", "wss") for x in listens) and not (cert and key):
            self.r.error(f, d.line, d.col, "listening on tls or wss needs `tls certificate` and `tls key`")
        defaults = ServerConfig()
        self.server = ServerConfig(
            listen=tuple(listens),
            domain=text("domain"),
            realm=text("realm"),
            rtp_ports=rtp,
            user_agent=text("user_agent"),
            tls_cert=cert,
            tls_key=key,
            timezone=tz,
            control=self._control_address(f, s, text("control")),
            control_token=text("control_token"),
            max_call_duration=self._limit_duration(f, s, "max_call_duration", defaults.max_call_duration),
            rtp_timeout=self._limit_duration(f, s, "rtp_timeout", defaults.rtp_timeout),
            max_calls=self._limit_count(f, s, "max_calls_total", defaults.max_calls),
            max_calls_per_user=self._limit_count(f, s, "max_calls_per_user", defaults.max_calls_per_user),
            max_calls_per_line=self._limit_count(f, s, "max_calls_per_line", defaults.max_calls_per_line),
            recordings=self._recordings_folder(f, text("recordings")),
        )

    def _recordings_folder(self, f: str, value: str | None) -> str | None:
        """`recordings "DIR"`: absolute, or relative to the script's folder (like a `play` file)."""
        if value is None:
            return None
        if not os.path.isabs(value) and os.path.dirname(f):
            value = os.path.join(os.path.dirname(f), value)
        return os.path.abspath(value)

    def _control_address(self, f: str, s: Mapping[str, Setting], value: str | None) -> str | None:
        """`control "HOST:PORT"` or `control "off"`: checked here, so a typo is a compile error at its
        place rather than a server that starts without its endpoint."""
        if value is None or value.strip().lower() == "off":
            return value
        host, sep, port = value.rpartition(":")
        st = s["control"]
        if not sep or not host or not port.isdigit() or int(port) > 65535:  # 0: any free port
            self.r.error(f, st.line, st.col, f'control "{value}" is not HOST:PORT (e.g. "127.0.0.1:5065") or "off"')
            return value
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return value  # a name: the server checks where it resolves to when it starts
        if not address.is_loopback and "control_token" not in s:
            self.r.error(f, st.line, st.col, f'control "{value}" listens beyond loopback: anyone who reaches it '
                                             "could read the calls and reload the program; add `control token env "
                                             'NAME` (or listen on "127.0.0.1:5065")')
        return value

    def _limit_count(self, f: str, s: Mapping[str, Setting], kind: str, default: int | None) -> int | None:
        """`max calls N` and its server forms: N >= 1, or None for `off`; `default` when not set."""
        st = s.get(kind)
        if st is None:
            return default
        raw, line, col = st.args
        if raw is None:
            return None
        n = int(raw)
        if n < 1:
            self.r.error(f, line, col, f"{_setting_word(kind)} must be at least 1 (write `off` for no limit)")
        return n

    def _limit_duration(self, f: str, s: Mapping[str, Setting], kind: str,
                        default: float | None) -> float | None:
        """`max call duration D` / `rtp timeout D`: seconds, at least 1 s, or None for `off`."""
        st = s.get(kind)
        if st is None:
            return default
        raw, line, col = st.args
        if raw is None:
            return None
        secs = parse_duration(raw)
        if secs < 1:
            self.r.error(f, line, col, f"{_setting_word(kind)} {raw} is under a second (write `off` to turn it off)")
        return secs

    def _user(self, f: str, d: Decl) -> None:
        if not self._name_ok(f, d, self.users, "user"):
            return
        s = self._once(f, d.settings, f"user {d.name}")
        pos = Position(f, d.line, d.col)
        password = None
        if "password" not in s:
            self.r.error(f, d.name_line, d.name_col, f"user {d.name} has no password")
        else:
            value = s["password"].args[0]
            password = self._value(f, value, f"password of user {d.name}")
            if password is not None:
                self._password_strength(f, value, d.name, password)
        caller_id = None
        if "caller_id" in s:
            caller_id = self._value(f, s["caller_id"].args[0], f"caller-id of user {d.name}")
        max_calls = self._limit_count(f, s, "max_calls", self.server.max_calls_per_user)
        self.users[d.name] = User(d.name, password or "", caller_id, max_calls, pos,
                                  legacy_digest="legacy_digest" in s)

    def _password_strength(self, f: str, value: Value, user: str, password: str) -> None:
        """An empty password is an error; a weak one a warning that says why it matters.

        Why it matters: one captured digest exchange (REGISTER or INVITE, often on an unencrypted
        network) lets anyone test passwords offline at billions of MD5 hashes a second, where no
        lockout applies. Below 8 characters, from a single kind of character (only digits, say), the
        user's own name or a word from every leaked-password list: such a search is short. A warning,
        not an error, because some desk phones only take digits.
        """
        if password == "":
            self.r.error(f, value.line, value.col, f"user {user} has an empty password: anyone could register "
                                                   "as that user and call through your lines")
            return
        kinds = sum(1 for test in (str.islower, str.isupper, str.isdigit) if any(test(c) for c in password))
        kinds += any(not c.isalnum() for c in password)
        problems = []
        if len(password) < MIN_PASSWORD:
            problems.append(f"{len(password)} characters, fewer than {MIN_PASSWORD}")
        if kinds < 2:
            problems.append("one kind of character only")
        if password.lower() == user.lower() or password.lower() in COMMON_PASSWORDS:
            problems.append("a well-known password" if password.lower() != user.lower() else "the user's own name")
        if problems:
            self.r.warning(f, value.line, value.col,
                           f"user {user} has a weak password ({'; '.join(problems)}): whoever captures one of its "
                           "logins can guess it offline, where no lockout applies; use "
                           "12 or more characters mixing letters and digits")

    def _line(self, f: str, d: Decl) -> None:
        if not self._name_ok(f, d, self.lines, "line"):
            return
        s = self._once(f, d.settings, f"line {d.name}")
        pos = Position(f, d.line, d.col)
        who = f"line {d.name}"

        def text(kind: str) -> str | None:
            st = s.get(kind)
            return None if st is None else self._value(f, st.args[0], f"{_setting_word(kind)} of {who}")

        transport = s["transport"].args[0] if "transport" in s else "udp"
        if transport not in ("udp", "tcp", "tls"):
            st = s["transport"]
            self.r.error(f, st.line, st.col, f"a line's transport is udp, tcp or tls, not {transport}")
        host, port = "", 5060
        if "server" not in s:
            self.r.error(f, d.name_line, d.name_col, f"{who} has no server (add: server \"host:port\")")
        else:
            raw = text("server")
            if raw is not None:
                hp = split_host_port(raw, DEFAULT_PORTS.get(transport, 5060))
                if hp is None:
                    st = s["server"]
                    self.r.error(f, st.args[0].line, st.args[0].col, f"'{raw}' is not host or host:port")
                else:
                    host, port = hp
        register_every = None
        if "register_every" in s:
            st = s["register_every"]
            secs = parse_duration(st.args[0])
            if secs < 1:
                self.r.error(f, st.line, st.col, "register every needs at least 1s")
            register_every = max(1, int(round(secs)))
            if "register_never" in s:
                self.r.error(f, s["register_never"].line, s["register_never"].col,
                             "`register never` contradicts `register every`")
        username = text("username")
        password = text("password")
        if register_every is not None:
            if "username" not in s:
                self.r.error(f, d.name_line, d.name_col, f"{who} registers but has no username")
            if "password" not in s:
                self.r.error(f, d.name_line, d.name_col, f"{who} registers but has no password")
        numbers: list[str] = []
        for st in d.settings:
            if st.kind == "numbers":
                numbers.extend(st.args)
        codecs: list[str] = []
        for st in d.settings:
            if st.kind == "codecs":
                codecs.extend(st.args)
        trust: list[str] = []
        for st in d.settings:
            if st.kind == "trust":
                for raw in st.args:
                    exact = _exact_address(raw)
                    if exact is not None:  # one address and port: an edge's providers' socket
                        trusted_ip, trusted_port = exact  # (not `port`: the server's port, above)
                        bracketed = f"[{trusted_ip}]" if ":" in trusted_ip else trusted_ip
                        shown = f"{bracketed}:{trusted_port}"
                        other = self._trust_exact_at.get(exact)
                        if other is not None and other[0] != d.name:
                            self.r.error(f, st.line, st.col, f"line {d.name} trusts {shown}, which line {other[0]} "
                                         f"also trusts (at {other[1]}:{other[2]}:{other[3]}): a call from there "
                                         "could not tell its line")
                        else:
                            self._trust_exact_at[exact] = (d.name, f, st.line, st.col)
                            trust.append(shown)
                        continue
                    network = _network(raw)
                    if network is None:
                        self.r.error(f, st.line, st.col,
                                     f"trust '{raw}' is not an IP address, network or address:port (e.g. "
                                     "\"203.0.113.7\", \"203.0.113.0/24\" or \"203.0.113.7:5080\"); host names "
                                     "are not taken, so DNS cannot widen the trust")
                    elif network.prefixlen == 0:
                        self.r.error(f, st.line, st.col,
                                     f"trust '{raw}' would make every address on the internet this line's: "
                                     "name the provider's addresses or networks")
                    else:
                        trust.append(_show(network))
                        self._trust_at.append((network, d.name, f, st.line, st.col))
        self.lines[d.name] = Line(
            name=d.name,
            server_host=host,
            server_port=port,
            transport=transport,
            username=username or "",
            auth_username=text("auth_username"),
            password=password or "",
            realm=text("realm"),
            outbound_proxy=text("outbound_proxy"),
            register_every=register_every,
            numbers=tuple(numbers),
            caller_id=text("caller_id"),
            codecs=tuple(codecs),
            display=text("display"),
            trust=tuple(trust),
            position=pos,
            max_calls=self._limit_count(f, s, "max_calls", self.server.max_calls_per_line),
        )

    def _check_trust_overlaps(self) -> None:
        """A source address trusted by two lines would make a provider's call ambiguous: refuse it."""
        seen = self._trust_at
        for i, (net, line, f, ln, col) in enumerate(seen):
            for other, other_line, of, oln, ocol in seen[:i]:
                if other_line != line and net.version == other.version and net.overlaps(other):
                    self.r.error(f, ln, col, f"line {line} trusts {_show(net)}, which line {other_line} also "
                                 f"trusts ({_show(other)} at {of}:{oln}:{ocol}): a call from there could not "
                                 "tell its line")

    # -------------------------------------------------------------- rules

    def _matcher(self, f: str, m: MatcherNode) -> Matcher | None:
        pos = Position(f, m.line, m.col)
        if m.kind != "regex":
            if m.text == "":
                what = "prefix" if m.kind == "prefix" else "number"
                self.r.error(f, m.line, m.col, f"an empty {what} matches {'every' if what == 'prefix' else 'no'} "
                             "number; leave out `to` to take every number")
                return None
            return Matcher(m.kind, m.text, None, pos)
        raw = m.text
        flags = 0
        if raw.endswith("i"):
            flags = re.IGNORECASE
            raw = raw[:-1]
        src = raw[1:-1].replace("\\/", "/")
        try:
            rx = compile_regex(src, flags)
        except PatternError as e:
            col = m.col + 1 + (getattr(e, "pos", None) or 0)
            msg = getattr(e, "msg", None) or str(e)
            self.r.error(f, m.line, col, f"invalid regex: {msg}")
            return None
        return Matcher("regex", src, rx, pos)

    def _zone(self, f: str, name: str, line: int, col: int) -> ZoneInfo | None:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            self.r.error(f, line, col, f"unknown time zone \"{name}\" (use an IANA name like \"Europe/Berlin\")")
            return None

    def _condition(self, f: str, c: CondNode) -> Condition | None:
        if c.kind in ("caller_id", "caller_name"):
            ms = [self._matcher(f, m) for m in c.args]
            if any(m is None for m in ms):
                return None
            return Condition(c.kind, c.negated, tuple(m for m in ms if m), text=_cond_text(c))
        if c.kind == "header":
            name = c.args[0].lower()
            ms = [self._matcher(f, m) for m in c.args[1:]]
            if any(m is None for m in ms):
                return None
            return Condition("header", c.negated, tuple(m for m in ms if m), header=name, text=_cond_text(c))
        if c.kind == "time":
            start_tok, end_tok, zone = c.args
            start = self._clock(f, start_tok, allow_24=False)
            end = self._clock(f, end_tok, allow_24=True)
            tz = self._cond_zone(f, zone)
            if start is None or end is None or tz is False:
                return None
            if start == end:
                self.r.error(f, start_tok.line, start_tok.column,
                             f"time {start_tok}-{end_tok} is empty (for all day, write 00:00-24:00)")
                return None
            return Condition("time", c.negated, start=start, end=end, zone=tz or None, text=_cond_text(c))
        if c.kind == "days":
            ranges, zone = c.args
            days: set[int] = set()
            ok = True
            for rng in ranges:
                nums = [self._day(f, t) for t in rng]
                if any(n is None for n in nums):
                    ok = False
                    continue
                if len(nums) == 1:
                    days.add(nums[0])
                else:
                    a, b = nums
                    d = a
                    while True:
                        days.add(d)
                        if d == b:
                            break
                        d = (d + 1) % 7
            tz = self._cond_zone(f, zone)
            if not ok or tz is False:
                return None
            return Condition("days", c.negated, days=frozenset(days), zone=tz or None, text=_cond_text(c))
        return None

    def _cond_zone(self, f: str, zone: tuple | None) -> ZoneInfo | None | bool:
        if zone is None:
            return self.server_zone
        z = self._zone(f, zone[1], zone[2], zone[3])
        return False if z is None else z

    def _clock(self, f: str, tok, allow_24: bool) -> int | None:
        h, m = (int(x) for x in str(tok).split(":"))
        if m > 59 or h > 24 or (h == 24 and (m != 0 or not allow_24)):
            self.r.error(f, tok.line, tok.column, f"'{tok}' is not a time of day (00:00 to 24:00)")
            return None
        return h * 60 + m

    def _day(self, f: str, tok) -> int | None:
        t = str(tok).lower()
        if t in DAYS:
            return DAYS[t]
        if t in DAY_NAMES:
            return DAY_NAMES[t]
        self.r.error(f, tok.line, tok.column, f"'{tok}' is not a weekday (mon tue wed thu fri sat sun)")
        return None

    def _peer(self, f: str, peer) -> tuple[str, str | None]:
        if peer is None or peer.kind == "any":
            return "any", None
        if peer.name is not None:
            table = self.users if peer.kind == "user" else self.lines
            if peer.name not in table:
                self._unknown(f, peer.line, peer.col, peer.kind, peer.name, table)
            if peer.kind == "line":
                self.used_lines.add(peer.name)
        elif peer.kind == "line":
            self.any_line_rule = True
        return peer.kind, peer.name

    def _rule(self, f: str, node: RuleNode, shadow: ShadowIndex) -> None:
        pos = Position(f, node.line, node.col)
        before = self.r.error_count
        kind, name = self._peer(f, node.peer)
        matchers = [self._matcher(f, m) for m in node.matchers]
        conds = [self._condition(f, c) for c in node.conditions]
        groups, named = _capture_names(matchers)
        allowed = _allowed(groups) | named if named else _allowed(groups)
        plan, tpls = self._plan(f, node, allowed, groups, named)
        if self.r.error_count > before or plan is None:
            return
        ms = tuple(m for m in matchers if m is not None)
        cs = tuple(c for c in conds if c is not None)
        by = shadow.shadowed_by(kind, name, ms)
        if by is not None:
            earlier = self.rules[by]
            self.r.error(f, node.line, node.col,
                         f"this rule never matches: the rule at {earlier.position} already takes every call "
                         "it would (move it above, or narrow the earlier rule)")
            return
        index = len(self.rules)
        to_line = _reaches_line(plan)
        from_lines = not (node.peer is None and to_line)
        if to_line and node.peer is not None and node.peer.kind == "any":
            self.r.warning(f, node.peer.line, node.peer.col,
                           "`from any` lets every peer, calls that came in on a line included, go out through "
                           f"line {to_line}: write `from user any` for phones, or `from line NAME` for "
                           "line-to-line routing")
        if not cs:
            # a rule no call from a line can take covers only what users send
            shadow.add(kind if from_lines else "user", name, ms, index)
        header = self.r.source_line(f, node.line).strip()
        if len(header) > 100:
            header = header[:97] + "..."
        dynamic = any(t is not None for ts in tpls for t in ts)
        self.rules.append(Rule(index, pos, kind, name, ms, cs, plan, tpls, dynamic, header, str(pos),
                               renders=plan_renders(plan, tpls) if dynamic else (), from_lines=from_lines))

    def _plan(self, f: str, node: RuleNode, allowed: set[str], groups: int, named: set[str]):
        if not node.body:
            self.r.error(f, node.line, node.col, "this rule does nothing: end it with accept, reject or hangup")
            return None, ()
        return self._plan_body(f, node.body, allowed, groups, named, "rule")

    def _plan_body(self, f: str, body: list[Stmt], allowed: Set[str], groups: int, named: set[str], what: str):
        """A rule's (or a gather branch's) statements as attempts, and per attempt its accept's
        number templates. (None, ()) when something is wrong (reported)."""
        attempts: list[Attempt] = []
        tpls: list[tuple[Template | None, ...]] = []
        actions: list = []
        terminal = None
        term_tpls: tuple[Template | None, ...] = ()
        term_word = ""
        ok = True
        answered = what == "branch"  # a gather's branch runs on a call the gather answered
        for st in body:
            if st.kind == "otherwise":
                if terminal is None:
                    self.r.error(f, st.line, st.col,
                                 "`otherwise` must follow an accept: it runs when that accept fails")
                    ok = False
                elif isinstance(terminal, Gather):
                    self.r.error(f, st.line, st.col,
                                 "`otherwise` after gather never runs: the gather's branches decide what follows")
                    ok = False
                elif not isinstance(terminal, Accept):
                    self.r.error(f, st.line, st.col,
                                 f"`otherwise` after {term_word} never runs: {term_word} ends the call")
                    ok = False
                else:
                    attempts.append(Attempt(tuple(actions), terminal))
                    tpls.append(term_tpls)
                actions, terminal, term_tpls = [], None, ()
                st = st.args[0]
            if terminal is not None:
                if isinstance(terminal, Accept):
                    msg = (f"`{_stmt_word(st)}` after accept never runs; start it with `otherwise` "
                           "to run it when the accept fails")
                elif isinstance(terminal, Gather):
                    msg = (f"`{_stmt_word(st)}` after gather never runs: put it in the gather's branches "
                           "(`when \"1\" ...`, `else ...`)")
                else:
                    msg = f"`{_stmt_word(st)}` after {term_word} never runs: {term_word} ends the call"
                self.r.error(f, st.line, st.col, msg)
                ok = False
                continue
            if st.kind == "accept":
                built = self._accept(f, st, allowed, groups, named)
                if built is None:
                    ok = False
                    terminal = Hangup()  # placeholder so later statements are still checked
                    term_word = "accept"
                    continue
                terminal, term_tpls = built
                term_word = "accept"
            elif st.kind == "reject":
                terminal = self._reject(f, st)
                term_word = "reject"
                if terminal is None:
                    ok = False
                    terminal = Hangup()
            elif st.kind == "hangup":
                terminal = Hangup()
                term_word = "hangup"
            elif st.kind == "gather":
                terminal = self._gather(f, st, allowed, groups, named)
                term_word = "gather"
                if terminal is None:
                    ok = False
                    terminal = Gather(None, 1, None, 1.0, 1.0, 0, ())  # placeholder: later statements still checked
            elif st.kind == "send_dtmf":
                a = self._send_dtmf(f, st, what, answered)
                if a is None:
                    ok = False
                else:
                    actions.append(a)
            else:
                a = self._action(f, st, allowed)
                if a is None:
                    ok = False
                else:
                    actions.append(a)
                    answered = answered or isinstance(a, Record) or (isinstance(a, Play) and a.answered)
        if terminal is None:
            last = body[-1]
            self.r.error(f, last.line, last.col,
                         f"this {what} can end without accepting or rejecting the call: "
                         "end it with accept, reject or hangup")
            return None, ()
        attempts.append(Attempt(tuple(actions), terminal))
        tpls.append(term_tpls)
        if not ok:
            return None, ()
        return tuple(attempts), tuple(tpls)

    def _gather(self, f: str, st: Stmt, allowed: Set[str], groups: int, named: set[str]) -> Gather | None:
        """`gather ["prompt"] [max N] [terminator "#"] [timeout D] [digit timeout D] [retries N] { when ... }`:
        options checked, each key a DTMF string that can be entered, no key in two branches, a
        `nothing` or `else` branch for what no key takes, and each branch a complete plan."""
        prompt, pline, pcol, options, branches = st.args
        ok = True
        seen: dict[str, tuple[int, int]] = {}
        opts: dict[str, str] = {}
        for name, text, line, col in options:
            if name in seen:
                self.r.error(f, line, col, f"`{name}` is given twice in this gather (first at line {seen[name][0]})")
                ok = False
                continue
            seen[name] = (line, col)
            opts[name] = text
        max_digits = GATHER_MAX_DIGITS
        if "max" in opts:
            max_digits = int(opts["max"])
            if not 1 <= max_digits <= 64:
                line, col = seen["max"]
                self.r.error(f, line, col, f"gather: max {max_digits}: the entry is 1 to 64 digits")
                ok = False
                max_digits = 64  # keys are not also reported as too long
        terminator: str | None = opts.get("terminator", GATHER_TERMINATOR)
        if terminator == "":
            terminator = None  # `terminator ""`: no key ends the entry early
        elif terminator not in DTMF_KEYS:
            line, col = seen["terminator"]
            self.r.error(f, line, col,
                         f'gather: terminator "{terminator}" is not one key (0-9, *, #, A-D; "" for none)')
            ok = False
        timing: dict[str, float] = {}
        for name, default in (("timeout", GATHER_TIMEOUT), ("digit timeout", GATHER_DIGIT_TIMEOUT)):
            timing[name] = default
            if name in opts:
                timing[name] = parse_duration(opts[name])
                if timing[name] <= 0:
                    line, col = seen[name]
                    self.r.error(f, line, col, f"gather: {name} must be more than 0s")
                    ok = False
        retries = int(opts.get("retries", "0"))
        if retries > 10:
            line, col = seen["retries"]
            self.r.error(f, line, col, f"gather: retries {retries}: at most 10 (a caller stuck in a menu holds a line)")
            ok = False
        path = None
        if prompt is not None:
            path = self._prompt_path(f, prompt, pline, pcol, "gather")
            ok = ok and path is not None
        if not branches:
            self.r.error(f, st.line, st.col, "this gather has no branches: add `when \"1\" ...` and `else ...`")
            return None
        keys_at: dict[str, BranchNode] = {}
        fallback = has_else = False
        explicit_max = "max" in opts
        longest = 0
        built: list[GatherBranch] = []
        inner = frozenset(allowed) | GATHER_VALUES
        for b in branches:
            keys: list[str] = []
            nothing = False
            if b.is_else:
                if has_else:
                    self.r.error(f, b.line, b.col, "this gather has two `else` branches")
                    ok = False
                fallback = has_else = True
            for kind, text, line, col in b.keys:
                if kind == "nothing":
                    if "" in keys_at:
                        other = keys_at[""]
                        self.r.error(f, line, col, f"`nothing` is already a key of the branch at line {other.line}")
                        ok = False
                    keys_at[""] = b
                    nothing = fallback = True
                    continue
                if not text or any(c not in DTMF_KEYS for c in text):
                    self.r.error(f, line, col, f'"{text}" cannot be entered: a key is DTMF digits (0-9, *, #, A-D)')
                    ok = False
                    continue
                if terminator is not None and terminator in text:
                    self.r.error(f, line, col, f'"{text}" never matches: "{terminator}" is the terminator, which '
                                 "ends the entry (set another with `terminator`)")
                    ok = False
                    continue
                if explicit_max and len(text) > max_digits:
                    self.r.error(f, line, col, f'"{text}" never matches: it has more digits than `max {max_digits}`')
                    ok = False
                    continue
                if text in keys_at:
                    other = keys_at[text]
                    self.r.error(f, line, col, f'"{text}" is already a key of the branch at line {other.line}')
                    ok = False
                    continue
                keys_at[text] = b
                keys.append(text)
                longest = max(longest, len(text))
            if not b.body:
                self.r.error(f, b.line, b.col, "this branch does nothing: end it with accept, reject or hangup")
                ok = False
                continue
            plan, tpls = self._plan_body(f, b.body, inner, groups, named, "branch")
            if plan is None:
                ok = False
                continue
            built.append(GatherBranch(tuple(keys), nothing, b.is_else, plan, tuple(tpls)))
        if not fallback:
            self.r.error(f, st.line, st.col, "this gather has no `nothing` or `else` branch: say where a caller "
                         "who enters nothing (or a wrong key) goes, e.g. `when nothing accept to user ...`")
            ok = False
        if not ok:
            return None
        if not explicit_max and longest:
            max_digits = longest  # a menu of one-key choices ends at the first key, no `#` needed
        return Gather(path, max_digits, terminator, timing["timeout"], timing["digit timeout"], retries,
                      tuple(built))

    def _prompt_path(self, f: str, path: str, line: int, col: int, what: str) -> str | None:
        """A prompt's file name, a relative one read next to the script; a warning when it is missing."""
        if not path:
            self.r.error(f, line, col, f"{what} needs a file name")
            return None
        # a relative name is the script's neighbour, wherever the server was started from
        if not os.path.isabs(path) and os.path.dirname(f):
            path = os.path.join(os.path.dirname(f), path)
        if not f.startswith("<") and not os.path.isfile(path):
            self.r.warning(f, line, col, f"{what}: no file at {os.path.abspath(path)} (a relative name is "
                           "read next to the script); the call would hear nothing")
        return path

    def _accept(self, f: str, st: Stmt, allowed: Set[str], groups: int, named: set[str]):
        targets_n: list[TargetNode] = st.args[0]
        timeout_n = st.args[1]
        targets: list[Target] = []
        tpls: list[Template | None] = []
        ok = True
        seen: set[tuple[str, str]] = set()
        for t in targets_n:
            table = self.users if t.kind == "user" else self.lines
            if t.name not in table:
                self._unknown(f, t.line, t.col, t.kind, t.name, table)
                ok = False
            if t.kind == "user":
                self.reached_users.add(t.name)
            else:
                self.used_lines.add(t.name)
            if (t.kind, t.name) in seen and t.number is None:
                self.r.error(f, t.line, t.col, f"{t.kind} {t.name} is listed twice in one accept")
                ok = False
            seen.add((t.kind, t.name))
            tpl = None
            if t.number is not None:
                src = ""
                for kind, val in t.number:
                    if kind == "text":
                        src += val
                    else:
                        if val.isdigit() and int(val) > groups:
                            have = "no captures" if groups == 0 else f"only {groups} capture(s)"
                            self.r.error(f, t.line, t.col, f"\\{val}: the rule's number pattern has {have}")
                            ok = False
                        elif not val.isdigit() and val not in named:
                            self.r.error(f, t.line, t.col, f"\\{val}: no capture group named {val} in the rule")
                            ok = False
                        src += "{" + val + "}"
                if not self._template_ok(f, src, t.line, t.col, allowed, t.number):
                    ok = False
                tpl = _template(src)
                if tpl.is_constant:
                    targets.append(Target(t.kind, t.name, tpl.source.replace("{{", "{").replace("}}", "}")))
                    tpls.append(None)
                    continue
            targets.append(Target(t.kind, t.name, None))
            tpls.append(tpl)
        timeout = None
        if timeout_n is not None:
            timeout = parse_duration(timeout_n[1])
            if timeout <= 0:
                self.r.error(f, timeout_n[2], timeout_n[3], "timeout must be more than 0s")
                ok = False
        if not ok:
            return None
        return Accept(tuple(targets), timeout), tuple(tpls)

    def _reject(self, f: str, st: Stmt) -> Reject | None:
        code, reason, line, col = st.args
        if not 400 <= code <= 699:
            self.r.error(f, line, col, f"reject {code}: a refusal needs a SIP failure status, 400 to 699")
            return None
        return Reject(code, reason if reason is not None else REASONS.get(code, "Rejected"))

    def _template_ok(self, f: str, text: str, line: int, col: int, allowed: Set[str],
                     parts: Sequence[tuple[str, str]] = ()) -> bool:
        """Braces well formed; a warning for each name not in `allowed` (nor a capture among `parts`)."""
        problems = _template_problems(text)
        for off, msg in problems:
            self.r.error(f, line, col + 1 + off, msg)
        if problems:
            return False
        for name in _template(text).names:
            if name not in allowed and not any(k != "text" and v == name for k, v in parts):
                self.r.warning(f, line, col, f"{{{name}}} is not a value known here; it will print as written")
        return True

    def _action(self, f: str, st: Stmt, allowed: set[str]):
        if st.kind == "log":
            text, line, col = st.args
            if not self._template_ok(f, text, line, col, allowed):
                return None
            return Log(_template(text))
        if st.kind == "set_caller_id":
            text, line, col = st.args
            if not self._template_ok(f, text, line, col, allowed):
                return None
            return SetCallerId(_template(text))
        if st.kind == "set_header":
            name, text, line, col = st.args
            if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
                self.r.error(f, st.line, st.col, f"'{name}' is not a valid SIP header name")
                return None
            if not self._template_ok(f, text, line, col, allowed):
                return None
            return SetHeader(name, _template(text))
        if st.kind == "play":
            path, answered = st.args
            resolved = self._prompt_path(f, path, st.line, st.col, "play")
            return None if resolved is None else Play(resolved, answered)
        if st.kind == "record":
            return self._record(f, st, allowed)
        if st.kind == "record_call":
            return self._record_call(f, st, allowed)
        self.r.error(f, st.line, st.col, f"`{_stmt_word(st)}` is not allowed here")
        return None

    def _recording_name_ok(self, f: str, name: str, line: int, col: int, allowed: Set[str], handler: str = "") -> bool:
        """A recording's name: a relative `.wav` path inside the recordings folder, its text safe in a
        file name, its `{fields}` known (`{time}` included)."""
        problems = _template_problems(name)
        for off, msg in problems:
            self.r.error(f, line, col + 1 + off, msg)
        if problems:
            return False
        literal = re.sub(r"\{[A-Za-z0-9_]+\}", "x", name)
        parts = literal.replace("\\", "/").split("/")
        if not name.lower().endswith(".wav"):
            self.r.error(f, line, col, f'record "{name}": the name must end in .wav (recordings are WAV files)')
            return False
        if name.startswith(("/", "\\")) or os.path.isabs(name) or re.match(r"[A-Za-z]:", name):
            self.r.error(f, line, col, f'record "{name}": an absolute name; recordings are named relative to '
                         "the recordings folder (`recordings \"DIR\"` in the server block)")
            return False
        if any(p in ("", ".", "..") for p in parts):
            self.r.error(f, line, col, f'record "{name}": `..`, `.` and empty parts would leave (or blur) the '
                         "recordings folder")
            return False
        bad = sorted(set(re.sub(r"[A-Za-z0-9+@._/-]", "", literal)))
        if bad:
            self.r.error(f, line, col, f'record "{name}": {"".join(bad)!r} cannot be in a recording\'s name '
                         "(letters, digits and + @ . _ - / only)")
            return False
        known = set(allowed) | {"time", "call"}
        for off, field in template_fields(name):
            if field not in known:
                if handler:
                    have = ", ".join(sorted(known))
                    self.r.error(f, line, col + 1 + off, f"{{{field}}} is not a field of the `{handler}` event; "
                                 f"a recording's name may use: {have}")
                    return False
                self.r.warning(f, line, col + 1 + off, f"{{{field}}} is not a value known here; the file name "
                               f"will show _{field}_")
        return True

    def _record(self, f: str, st: Stmt, allowed: Set[str]) -> Record | None:
        name, line, col, options = st.args
        if not self._recording_name_ok(f, name, line, col, allowed):
            return None
        seen: dict[str, tuple] = {}
        ok = True
        for opt in options:
            word = opt[0]
            if word in seen:
                self.r.error(f, opt[2], opt[3], f"record: `{word}` is given twice")
                ok = False
            seen[word] = opt
        max_seconds = 120.0
        silence: float | None = 5.0
        prompt = None
        if "max" in seen:
            max_seconds = parse_duration(seen["max"][1])
            if not 0 < max_seconds <= 3600:
                self.r.error(f, seen["max"][2], seen["max"][3], "record: `max` must be more than 0s and at most 1h")
                ok = False
        if "silence" in seen:
            text = seen["silence"][1]
            silence = None if text is None else parse_duration(text)
            if silence is not None and silence <= 0:
                self.r.error(f, seen["silence"][2], seen["silence"][3], "record: `silence` must be more than 0s "
                             "(or `off`)")
                ok = False
        if "prompt" in seen:
            prompt = seen["prompt"][1]
            if not os.path.isabs(prompt) and os.path.dirname(f):
                prompt = os.path.join(os.path.dirname(f), prompt)
            if not f.startswith("<") and not os.path.isfile(prompt):
                self.r.warning(f, seen["prompt"][2], seen["prompt"][3],
                               f"record: no prompt file at {os.path.abspath(prompt)} (a relative name is read next "
                               "to the script); the caller would hear only the beep")
        if not ok:
            return None
        return Record(name, self.server.recordings or "recordings", max_seconds, silence, prompt)

    def _send_dtmf(self, f: str, st: Stmt, where: str, answered: bool) -> SendDtmf | None:
        """`send dtmf "DIGITS" [to channel ZERO|ONE]`: 1 to 64 keys (0-9, *, #, A-D); in a rule, only
        to the caller (ZERO) once it is answered (after `play ... answered`, `record`, or in a gather's
        branch): the rule runs before `accept` dials channel ONE. `where`: "rule", "branch", or
        "handler EVENT" (both legs are up: any channel)."""
        digits, line, col, channel_word = st.args
        ok = True
        keys = digits.upper()
        bad = [(i, c) for i, c in enumerate(digits) if c.upper() not in DTMF_KEYS]
        if not digits:
            self.r.error(f, line, col, 'send dtmf "": no keys to press (0-9, *, #, A-D)')
            ok = False
        for i, c in bad[:1]:
            self.r.error(f, line, col + 1 + i, f'send dtmf: {c!r} is not a key (0-9, *, #, A-D)')
            ok = False
        if len(digits) > DTMF_SEND_MAX:
            self.r.error(f, line, col, f"send dtmf: {len(digits)} keys; at most {DTMF_SEND_MAX} at once")
            ok = False
        channel = "ZERO"
        if channel_word is not None:
            word, wline, wcol = channel_word
            channel = word.upper()
            if channel not in ("ZERO", "ONE"):
                self.r.error(f, wline, wcol, f"send dtmf to channel {word}: the channels are ZERO (the caller's "
                             "leg) and ONE (the leg Callflow dialled)")
                return None
        if not where.startswith("handler"):
            if channel == "ONE":
                self.r.error(f, st.line, st.col, "send dtmf to channel ONE in a rule: channel ONE is dialled by "
                             "`accept`, after the rule's statements; send to it from `on connected { send dtmf "
                             '"..." to channel ONE }`')
                ok = False
            elif not answered:
                self.r.error(f, st.line, st.col, "send dtmf in a rule needs the caller answered first: put it "
                             'after `play "..." answered` or `record`, or in a gather\'s branch')
                ok = False
        return SendDtmf(keys, channel) if ok else None

    def _record_call(self, f: str, st: Stmt, allowed: Set[str], handler: str = "") -> RecordCall | None:
        name, line, col, mix = st.args
        if not self._recording_name_ok(f, name, line, col, allowed, handler):
            return None
        return RecordCall(name, self.server.recordings or "recordings", mix or "mixed")

    # -------------------------------------------------------------- handlers

    def _handler(self, f: str, node: HandlerNode) -> None:
        pos = Position(f, node.line, node.col)
        line_f = user_f = None
        p = node.peer
        if p is not None:
            if p.kind == "any":
                pass
            elif p.name is None:
                self.r.error(f, p.line, p.col,
                             f"a handler filters on one {p.kind} by name; leave out `from` for every call")
            else:
                table = self.users if p.kind == "user" else self.lines
                if p.name not in table:
                    self._unknown(f, p.line, p.col, p.kind, p.name, table)
                if p.kind == "user":
                    user_f = p.name
                else:
                    line_f = p.name
        actions = []
        word = node.event.replace("_", " ")
        for st in node.body:
            if st.kind == "record_call" and node.event in _RECORDABLE_EVENTS:
                built = self._record_call(f, st, HANDLER_FIELD_NAMES[node.event], node.event)
                if built is not None:
                    actions.append(built)
                continue
            if st.kind == "send_dtmf" and node.event in _DTMF_EVENTS:
                sent = self._send_dtmf(f, st, f"handler {node.event}", True)
                if sent is not None:
                    actions.append(sent)
                continue
            if st.kind != "log":
                self.r.error(f, st.line, st.col,
                             f"`{_stmt_word(st)}` cannot run in an `on {word}` handler: handlers observe "
                             f"calls (log, `record call` in {_RECORDABLE_HANDLERS}, `send dtmf` in "
                             "`on connected` or `on dtmf`); `on incoming` "
                             "rules route them")
                continue
            text, line, col = st.args
            if self._handler_text_ok(f, text, line, col, node.event):
                actions.append(Log(_template(text)))
        if not node.body:
            self.r.warning(f, node.line, node.col, f"this `on {word}` handler does nothing")
        self.handlers.append(Handler(node.event, line_f, user_f, tuple(actions), pos))

    def _handler_text_ok(self, f: str, text: str, line: int, col: int, event: str) -> bool:
        """Braces well formed and every `{field}` one of the event's fields (flowlang/events.py): an
        error for each other name, naming the fields that exist, so nothing prints literally at run
        time. `col` is the opening quote's column; the caret points at the field."""
        problems = _template_problems(text)
        for off, msg in problems:
            self.r.error(f, line, col + 1 + off, msg)
        if problems:
            return False
        known = HANDLER_FIELD_NAMES[event]
        ok = True
        for off, name in template_fields(text):
            if name not in known:
                ok = False
                have = ", ".join(fl.name for fl in handler_fields(event))
                self.r.error(f, line, col + 1 + off,
                             f"{{{name}}} is not a field of the `{event}` event; its fields are: {have}")
        return ok

    # -------------------------------------------------------------- warnings

    def _warn_unused(self) -> None:
        for name, ln in self.lines.items():
            if name not in self.used_lines and not self.any_line_rule and ln.position is not None:
                p = ln.position
                self.r.warning(p.file, p.line, p.col, f"line {name} is declared but no rule uses it")
        for name, u in self.users.items():
            if name not in self.reached_users and u.position is not None:
                p = u.position
                self.r.warning(p.file, p.line, p.col,
                               f"user {name} is declared but no rule reaches it (no `accept to user {name}`)")


def _reaches_line(plan: tuple[Attempt, ...]) -> str:
    """The first line a plan can send a call out through ("" when none)."""
    for a in plan:
        t = a.terminal
        if isinstance(t, Accept):
            for target in t.targets:
                if target.kind == "line":
                    return target.name
        elif isinstance(t, Gather):
            for b in t.branches:
                name = _reaches_line(b.plan)
                if name:
                    return name
    return ""


@lru_cache(maxsize=128)
def _allowed(groups: int) -> frozenset[str]:
    """The values a rule with that many capture groups may use in its templates."""
    return frozenset(RULE_VALUES | {str(i) for i in range(1, groups + 1)})


def _capture_names(matchers: list[Matcher | None]) -> tuple[int, set[str]]:
    groups = 0
    named: set[str] = set()
    for m in matchers:
        if m is None:
            continue
        if m.kind == "prefix":
            groups = max(groups, 1)
        elif m.kind == "regex" and m.regex is not None:
            groups = max(groups, m.regex.groups)
            named |= set(m.regex.groupindex)
    return groups, named


def _setting_word(kind: str) -> str:
    return {
        "caller_id": "caller-id", "max_calls": "max calls", "rtp_ports": "rtp ports",
        "user_agent": "user-agent", "tls_cert": "tls certificate", "tls_key": "tls key",
        "control_token": "control token",
        "auth_username": "auth-username", "outbound_proxy": "outbound-proxy",
        "register_every": "register every", "register_never": "register never",
        "legacy_digest": "legacy-digest", "max_call_duration": "max call duration", "rtp_timeout": "rtp timeout",
        "max_calls_total": "max calls", "max_calls_per_user": "max calls per user",
        "max_calls_per_line": "max calls per line",
    }.get(kind, kind)


# the call handlers that may start a call recording (the call is still up when they run)
# the handlers `record call` may run in, in the order a call passes them (for messages)
_RECORDABLE_ORDER = ("created", "connecting", "connected")
_RECORDABLE_EVENTS = frozenset(_RECORDABLE_ORDER)
_RECORDABLE_HANDLERS = (", ".join(f"`on {e}`" for e in _RECORDABLE_ORDER[:-1])
                        + f" or `on {_RECORDABLE_ORDER[-1]}`")
# the call handlers that may send digits (both legs answered: the call is connected)
_DTMF_EVENTS = frozenset({"connected", "dtmf"})


def _stmt_word(st: Stmt) -> str:
    return {"set_caller_id": "set caller-id", "set_header": "set header",
            "record_call": "record call", "send_dtmf": "send dtmf"}.get(st.kind, st.kind)


def _cond_text(c: CondNode) -> str:
    neg = "not " if c.negated else ""
    if c.kind in ("caller_id", "caller_name"):
        word = "caller-id" if c.kind == "caller_id" else "caller-name"
        return neg + word + " " + ", ".join(_m_text(m) for m in c.args)
    if c.kind == "header":
        return neg + f"header {c.args[0]} " + ", ".join(_m_text(m) for m in c.args[1:])
    if c.kind == "time":
        z = f' in "{c.args[2][1]}"' if c.args[2] else ""
        return neg + f"time {c.args[0]}-{c.args[1]}{z}"
    ranges, zone = c.args
    z = f' in "{zone[1]}"' if zone else ""
    return neg + "days " + ", ".join("-".join(str(t) for t in r) for r in ranges) + z


def _m_text(m: MatcherNode) -> str:
    if m.kind == "exact":
        return f'"{m.text}"'
    if m.kind == "prefix":
        return f'prefix "{m.text}"'
    return m.text
