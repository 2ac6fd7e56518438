"""The `callflow` command: run a server on a .flow script, or check, explain, format and draw one."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import ssl
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from flowlang import FlowError

if TYPE_CHECKING:
    from .media.base import MediaBackend

log = logging.getLogger("callflow")


TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")


def _listen(text: str) -> list[tuple[str, str, int]]:
    """[TRANSPORT:]HOST:PORT; without a transport, UDP and TCP on the same port (as SIP servers do)."""
    transport, sep, rest = text.partition(":")
    if sep and transport.lower() in TRANSPORTS:
        transports = [transport.lower()]
    elif sep and transport.isalpha() and ":" in rest:  # WORD:HOST:PORT, WORD not ours (sctp, udp6...)
        raise argparse.ArgumentTypeError(
            f"unknown transport {transport!r} in {text!r}: Callflow listens on {', '.join(TRANSPORTS)} "
            f"(e.g. tcp:0.0.0.0:5060); a bare HOST:PORT listens on udp and tcp")
    else:
        transports, rest = ["udp", "tcp"], text
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(
            f"expected [udp|tcp|tls|ws|wss:]HOST:PORT, e.g. 0.0.0.0:5060 or tls:0.0.0.0:5061, got {text!r}")
    return [(t, host.strip("[]") or "0.0.0.0", int(port)) for t in transports]


def _range(text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    if not sep or not lo.isdigit() or not hi.isdigit() or int(lo) >= int(hi):
        raise argparse.ArgumentTypeError(f"expected LOW-HIGH, e.g. 20000-29999, got {text!r}")
    if not 1024 <= int(lo) < int(hi) <= 65535:  # as the script's `rtp ports` (ports below 1024 are privileged)
        raise argparse.ArgumentTypeError(f"expected ports within 1024-65535, e.g. 20000-29999, got {text!r}")
    return int(lo), int(hi)


def _ip(text: str) -> str:
    """--advertise: an IP address (it goes into Via, Contact and SDP, where a name would not do)."""
    import ipaddress

    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an IP address to advertise, e.g. 192.0.2.10, got {text!r}") from None


OFF = "off"


def _count_or_off(text: str) -> int | str:
    """N >= 1, or `off` (no limit)."""
    if text == OFF:
        return OFF
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a number of calls of at least 1, or off, got {text!r}")
    return int(text)


def _duration_or_off(text: str) -> float | str:
    """A duration with its unit (500ms, 60s, 1.5m, 4h) of at least 1 s, or `off`; seconds."""
    if text == OFF:
        return OFF
    from flowlang.compiler import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError:
        seconds = 0.0
    if seconds < 1:
        raise argparse.ArgumentTypeError(f"expected a duration of at least 1s with its unit (60s, 4h), or off, "
                                         f"got {text!r}")
    return seconds


def _server_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The ServerConfig fields `run`'s options set: they win over the script's, across reloads."""
    out: dict[str, object] = {}
    for option, name in (("max_calls", "max_calls"), ("max_call_duration", "max_call_duration"),
                         ("rtp_timeout", "rtp_timeout")):
        value = getattr(args, option, None)
        if value is not None:
            out[name] = None if value == OFF else value
    return out


def _lease_seconds(text: str) -> float:
    """--lease-seconds: a number of seconds, at least runtime.lines.lease.MIN_PERIOD."""
    from .lines.lease import MIN_PERIOD

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, e.g. 30, got {text!r}") from None
    if not value >= MIN_PERIOD:
        raise argparse.ArgumentTypeError(f"a lease of {text}s is too short: at least {MIN_PERIOD:g}")
    return value


def _hostport_arg(text: str) -> str:
    """--line-contact: HOST:PORT (an IP or a name, and a port), kept as written."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, e.g. 192.0.2.10:5060, got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="callflow", description="A SIP server whose call routing is a .flow script.")
    p.add_argument("--version", action="version", version=f"callflow {_package_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run the SIP server on a script (a .flow file or a folder)")
    run.add_argument("path")
    run.add_argument("--listen", type=_listen, action="append",
                     help="[TRANSPORT:]HOST:PORT to listen on, repeatable; a bare HOST:PORT is UDP and TCP "
                          "(default: the script's server block, or 0.0.0.0:5060)")
    run.add_argument("--tls-cert", help="PEM certificate (chain) for TLS/WSS listeners (default: the script's)")
    run.add_argument("--tls-key", help="PEM private key for TLS/WSS listeners (default: the script's)")
    run.add_argument("--tls-ca", help="CA bundle to verify providers reached over TLS (default: the system's)")
    run.add_argument("--advertise", type=_ip,
                     help="IP address to put in Via, Contact and SDP (default: the listen address)")
    run.add_argument("--rtp-ports", type=_range, help="RTP port range LOW-HIGH (default: the script's, or 20000-29999)")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument("--location-db", metavar="FILE",
                     help="SQLite file that keeps phone registrations across restarts "
                          "(default: registrations.sqlite in the state folder)")
    run.add_argument("--location-dsn", metavar="postgresql://USER@HOST/DB",
                     help="keep phone registrations in PostgreSQL, shared by every node given the same DSN "
                          "(schema created and upgraded by Callflow); replaces --location-db")
    run.add_argument("--node-id", metavar="NAME",
                     help="this node's name in the line leases shared through --location-dsn "
                          "(default: HOSTNAME-PID; a stable name lets a restarted node take its lines back at once)")
    run.add_argument("--lease-seconds", type=_lease_seconds, default=30.0, metavar="SECONDS",
                     help="with --location-dsn, how long a node's hold on a line lasts without renewal: another "
                          "node registers the line within this long after the holder died (default: 30)")
    run.add_argument("--line-contact", type=_hostport_arg, metavar="HOST:PORT",
                     help="the Contact the lines register (in a cluster: the edge's address, so the provider's "
                          "calls reach whichever node the edge picks; default: this node's address)")
    run.add_argument("--media", default="relay", metavar="relay|rtpengine:HOST:PORT[,inject-dtmf]",
                     help="who relays the calls' RTP: Callflow itself (relay, the default) or an rtpengine "
                          "reached over its ng control protocol at HOST:PORT (its --listen-ng); `,inject-dtmf` "
                          "lets rtpengine generate RFC 4733 digits (costs its in-kernel forwarding; without it "
                          "such digits go as SIP INFO)")
    run.add_argument("--max-calls", type=_count_or_off, metavar="N|off",
                     help="calls in the whole server at once (default: the script's `max calls`, else no limit)")
    run.add_argument("--max-call-duration", type=_duration_or_off, metavar="DURATION|off",
                     help="end calls that last this long, e.g. 4h (default: the script's, else off)")
    run.add_argument("--rtp-timeout", type=_duration_or_off, metavar="DURATION|off",
                     help="end calls whose media stopped both ways this long, e.g. 60s (default: the script's, "
                          "else off)")
    run.add_argument("--rtpengine-dtmf", type=_hostport_arg, metavar="HOST:PORT",
                     help="with --media rtpengine: where rtpengine reports the keys pressed in calls (run it with "
                          "--dtmf-log-dest=HOST:PORT), so gather and on dtmf hear them (default: they go unheard)")
    from .records.setup import add_cdr_command, add_run_arguments

    add_run_arguments(run)
    add_cdr_command(sub)
    _add_control_run_options(run)
    from .security.cluster import add_arguments as add_cluster_arguments

    add_cluster_arguments(run)  # --edge, --nonce-secret: a node behind an edge proxy
    check = sub.add_parser("check", help="compile scripts and report errors as file:line:col: message")
    check.add_argument("paths", nargs="+")
    check.add_argument("--json", action="store_true", help="diagnostics as JSON, for editors and CI")
    explain = sub.add_parser("explain", help="say which rule decides a call and what it would do, without SIP")
    explain.add_argument("path")
    explain.add_argument("--from", dest="from_spec", required=True, help="user:NAME or line:NAME")
    explain.add_argument("--to", required=True, help="the dialled number")
    explain.add_argument("--at", help='when, e.g. "2026-11-26 20:00" (default: now)')
    explain.add_argument("--caller-id", help="the number a line's provider (or an unknown caller) sends; "
                                             "a user's calls carry its caller-id, else its name")
    fmt = sub.add_parser("fmt", help="print the script in canonical layout (--write to rewrite the file, "
                                     "--check to exit 1 when a file would change)")
    fmt.add_argument("path", nargs="+", help="a .flow file or a folder (its .flow files)")
    fmt.add_argument("--write", action="store_true", help="rewrite each file that is not in canonical layout")
    fmt.add_argument("--check", action="store_true",
                     help="change nothing; name each file that would change and exit 1 if any would (for CI)")
    graph = sub.add_parser("graph", help="the routing as Graphviz dot (or SVG/PNG with -o when dot is installed)")
    graph.add_argument("path")
    graph.add_argument("-o", "--output")
    _add_control_commands(sub)
    _add_call_command(sub)
    return p


# ---- the control endpoint: `run --control`, and the commands that talk to a running server ----------
def _add_control_run_options(run: argparse.ArgumentParser) -> None:
    from .control import ADDRESS_ENV, DEFAULT_HOST, DEFAULT_PORT, TOKEN_ENV

    run.add_argument("--control", metavar="HOST:PORT|off",
                     help=f"HTTP control endpoint: status JSON, /metrics, the live page at / (default: "
                          f"{DEFAULT_HOST}:{DEFAULT_PORT}, or {ADDRESS_ENV}); beyond loopback it needs a token")
    run.add_argument("--control-token", metavar="TOKEN",
                     help=f"token the control endpoint requires (Authorization: Bearer TOKEN; default: {TOKEN_ENV})")


def _add_control_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from .control import ADDRESS_ENV, DEFAULT_HOST, DEFAULT_PORT, TOKEN_ENV

    for name, text in (("status", "a running server: program, lines, registered phones, calls"),
                       ("calls", "a running server's active calls"),
                       ("reload", "make a running server recompile its script now (as SIGHUP does)"),
                       ("version", "this command's version and the running server's program version")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--control", metavar="HOST:PORT",
                         help=f"the server's control endpoint (default: {ADDRESS_ENV}, "
                              f"else {DEFAULT_HOST}:{DEFAULT_PORT})")
        cmd.add_argument("--token", help=f"the control endpoint's token (default: {TOKEN_ENV})")
        cmd.add_argument("--json", action="store_true", help="the server's JSON answer, for scripts")


def _add_call_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from .control import ADDRESS_ENV, DEFAULT_HOST, DEFAULT_PORT, TOKEN_ENV

    cmd = sub.add_parser("call", help="click-to-call on a running server: ring USER's phone, then dial NUMBER "
                                      "through the rules as a call from USER")
    cmd.add_argument("user", metavar="USER", help="the user whose registered phones ring first")
    cmd.add_argument("number", metavar="NUMBER", help="the number dialled when the phone answers")
    cmd.add_argument("--ring-timeout", type=float, default=60.0, metavar="SECONDS",
                     help="how long the user's phone may ring (default 60)")
    cmd.add_argument("--control", metavar="HOST:PORT",
                     help=f"the server's control endpoint (default: {ADDRESS_ENV}, else {DEFAULT_HOST}:{DEFAULT_PORT})")
    cmd.add_argument("--token", help=f"the control endpoint's token (default: {TOKEN_ENV})")
    cmd.add_argument("--json", action="store_true", help="the server's JSON answer, for scripts")


def cmd_call(args: argparse.Namespace) -> int:
    """`callflow call USER NUMBER`: POST /api/calls; exit 0 once the phone is ringing, 1 with the
    server's reason (unknown user, not registered, a bad number, refused by the rules) or when no
    server answers, 2 for a bad --control address."""
    from .control.client import ControlClient, NoServer, render_call

    try:
        client = ControlClient(args.control, args.token)
    except ValueError as exc:
        print(f"callflow call: {exc}", file=sys.stderr)
        return 2
    try:
        answer = client.post("/api/calls", {"from_user": args.user, "to": args.number,
                                            "ring_timeout": args.ring_timeout})
    except (NoServer, RuntimeError) as exc:
        print(f"callflow call: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2) if args.json else render_call(answer))
    return 0


def cmd_control(args: argparse.Namespace) -> int:
    """status / calls / reload / version against a running server; exit 1 with a clear message when
    none answers, 0 otherwise (reload: 1 when the new script was refused)."""
    from .control.client import ControlClient, NoServer, render_calls, render_reload, render_status

    try:
        client = ControlClient(args.control, args.token)
    except ValueError as exc:
        print(f"callflow {args.command}: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "status":
            answer = client.get("/api/state")
            text = render_status(answer)
        elif args.command == "calls":
            answer = client.get("/api/calls")
            text = render_calls(answer)
        elif args.command == "reload":
            answer = client.post("/api/reload")
            text = render_reload(answer)
        else:
            try:
                program = client.get("/api/program")
            except NoServer as exc:
                if args.json:
                    print(json.dumps({"client_version": _package_version(), "server": None}))
                else:
                    print(f"callflow {_package_version()}")
                print(f"callflow version: {exc}", file=sys.stderr)
                return 1
            answer = {"client_version": _package_version(), "server_version": program.get("server_version"),
                      "program_version": program.get("version"), "files": program.get("files")}
            text = (f"callflow {_package_version()}\nserver at {client.address}: callflow "
                    f"{program.get('server_version')}, program {program.get('version')} "
                    f"({', '.join(program.get('files') or [])})")
    except NoServer as exc:
        print(f"callflow {args.command}: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        print(f"callflow {args.command}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2) if args.json else text)
    if args.command == "reload" and answer.get("result") == "failed":
        return 1
    return 0


def _package_version() -> str:
    from .control.views import server_version

    return server_version()


async def _start_control(args: argparse.Namespace, engine: object, reloader: object,
                         records: object = None) -> object | None:
    """The control endpoint for `callflow run` (None when --control off). The default address being
    taken (another server on this machine) costs only the endpoint, with a warning; an address the
    operator chose must work, else ControlError/OSError stop the server."""
    import os

    from .control import ADDRESS_ENV, DEFAULT_HOST, DEFAULT_PORT, TOKEN_ENV, ControlServer, make_state, parse_address
    from .control.server import ControlError

    server = getattr(getattr(reloader, "program", None), "server", None)  # the script's `server { control ... }`
    chosen = getattr(args, "control", None) or os.environ.get(ADDRESS_ENV) or getattr(server, "control", None)
    if chosen and chosen.strip().lower() in ("off", "none", "no"):
        return None
    try:
        address = parse_address(chosen or f"{DEFAULT_HOST}:{DEFAULT_PORT}")
    except ValueError as exc:
        raise ControlError(str(exc)) from None
    token = (getattr(args, "control_token", None) or os.environ.get(TOKEN_ENV)
             or getattr(server, "control_token", None))
    # records: the call-records store (`.recent(limit)`); without one, `engine.records` is used if set
    state = make_state(engine, reloader, records=records)
    control = ControlServer(state, address, token)
    try:
        host, port = await control.start()
    except OSError as exc:
        state.metrics.detach()
        if chosen:
            raise ControlError(f"control endpoint: cannot listen on {address}: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None
        log.warning("event=control_unavailable address=%s reason=%s hint=%s", address,
                    _q(getattr(exc, "strerror", None) or str(exc)),
                    _q("another server holds it: give --control HOST:PORT, or --control off"))
        return None
    log.info("event=control_listening address=%s:%s auth=%s page=%s", host, port, "token" if token else "none",
             f"http://{host}:{port}/")
    return control


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return 2
    try:
        return {"run": cmd_run, "check": cmd_check, "explain": cmd_explain, "fmt": cmd_fmt,
                "graph": cmd_graph, "status": cmd_control, "calls": cmd_control, "reload": cmd_control,
                "version": cmd_control, "cdr": cmd_cdr, "call": cmd_call}[args.command](args)
    except KeyboardInterrupt:
        return 130
    except FlowError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"callflow: {exc}", file=sys.stderr)
        return 1


def cmd_cdr(args: argparse.Namespace) -> int:
    from .records.setup import cmd_cdr as run_cdr

    return run_cdr(args)


def cmd_check(args: argparse.Namespace) -> int:
    from flowlang.loader import check_paths_versions

    # the version id is the one a server running these files shows (`callflow status`, /api/program)
    diagnostics, versions = check_paths_versions(args.paths)
    errors = [d for d in diagnostics if d.severity == "error"]
    if args.json:
        # `version`: the id of the one program checked (None for several paths, or on errors);
        # `versions`: {path as given: id} for each path that compiled
        version = next(iter(versions.values())) if len(args.paths) == 1 and versions else None
        print(json.dumps({"ok": not errors, "version": version, "versions": versions,
                          "diagnostics": [d.to_dict() for d in diagnostics]}, indent=2))
    else:
        for d in diagnostics:
            print(d.render(), file=sys.stderr)
        if not errors:
            print(f"{', '.join(args.paths)}: ok, version {', '.join(versions.values())}"
                  + (f" ({len(diagnostics)} warnings)" if diagnostics else ""))
    return 1 if errors else 0


def cmd_explain(args: argparse.Namespace) -> int:
    from flowlang import explain, load_program

    program = load_program(args.path)
    at = None
    if args.at:
        try:
            at = datetime.fromisoformat(args.at)
        except ValueError:
            print(f"callflow explain: --at {args.at!r} is not a date and time like \"2026-11-26 20:00\"",
                  file=sys.stderr)
            return 2
    print(explain(program, args.from_spec, args.to, at, caller_id=args.caller_id))
    return 0


def cmd_fmt(args: argparse.Namespace) -> int:
    from flowlang import format_source

    paths: list[Path] = []
    for given in map(Path, args.path):  # a folder stands for its .flow files, as in `run` and `check`
        paths.extend(sorted(c for c in given.iterdir() if c.suffix == ".flow" and c.is_file())
                     if given.is_dir() else [given])
    changed = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        out = format_source(text, str(path))
        if out != text:
            changed.append(path)
        if args.check:
            if out != text:
                print(f"{path}: would be reformatted (run callflow fmt --write {path})", file=sys.stderr)
        elif args.write:
            if out != text:
                path.write_text(out, encoding="utf-8")
        else:
            sys.stdout.write(out)
    return 1 if args.check and changed else 0


def cmd_graph(args: argparse.Namespace) -> int:
    import shutil
    import subprocess

    from flowlang import load_program, to_dot

    dot = to_dot(load_program(args.path))
    if not args.output or args.output.endswith(".dot"):
        if args.output:
            Path(args.output).write_text(dot, encoding="utf-8")
        else:
            sys.stdout.write(dot)
        return 0
    exe = shutil.which("dot")
    if exe is None:
        print("callflow graph: SVG/PNG needs Graphviz's `dot` (apt-get install graphviz); "
              "without -o the dot text is printed", file=sys.stderr)
        return 1
    fmt = Path(args.output).suffix.lstrip(".") or "svg"
    subprocess.run([exe, f"-T{fmt}", "-o", args.output], input=dot.encode(), check=True)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .logfmt import setup_logging

    setup_logging(args.log_level)
    _raise_open_file_limit()
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(serve(args))


async def serve(args: argparse.Namespace, stop: asyncio.Event | None = None) -> int:
    from callflow.flowrun import Dialplan, Reloader  # the .flow runtime, a client of the public SDK
    from callflow.sdk import SipServer

    from .engine import Engine
    from .transport import ListenSpec

    loop = asyncio.get_running_loop()
    reloader = Reloader(args.path, lambda program: dialplan.load(program), loop)
    try:
        program = reloader.load_initial()
    except FlowError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    for warning in program.warnings:
        print(warning.render(), file=sys.stderr)
    server = program.server
    if args.listen:
        specs = [ListenSpec(*entry) for group in args.listen for entry in group]
    elif server.listen:
        specs = [ListenSpec(entry.transport, entry.host, entry.port) for entry in server.listen]
    else:
        specs = [ListenSpec("udp", "0.0.0.0", 5060), ListenSpec("tcp", "0.0.0.0", 5060)]
    try:
        specs = [ListenSpec(spec.transport, _resolve_host(spec.host), spec.port) for spec in specs]
    except ValueError as exc:
        print(f"callflow: {exc}", file=sys.stderr)
        return 1
    try:
        tls, client_tls = _tls_contexts(args.tls_cert or server.tls_cert, args.tls_key or server.tls_key,
                                        args.tls_ca, specs)
    except (OSError, ssl.SSLError, ValueError) as exc:
        print(f"callflow: cannot load the TLS certificate or key: {exc}", file=sys.stderr)
        return 1
    from .records.setup import RunState, RunStateError, node_id

    try:  # the state folder: call records and, unless --location-db says elsewhere, registrations
        state = RunState.open(args)
    except RunStateError as exc:
        print(f"callflow: {exc}", file=sys.stderr)
        return 1
    args.records = state.writer  # `.recent()` for the control endpoint's live page (None with --no-cdr)
    location_store = None
    location_dsn = getattr(args, "location_dsn", None)
    if location_dsn:
        from .registrar.postgres import PostgresLocationStore
        from .registrar.sqlite import LocationDbError

        try:  # the phones' bindings shared with the other nodes, instead of the SQLite file
            location_store = PostgresLocationStore(location_dsn, clock=loop.time, node=args.advertise or "")
            state.location_db = location_store.name
        except LocationDbError as exc:
            print(f"callflow: {exc}", file=sys.stderr)
            state.close()
            return 1
    elif state.location_db:
        from .registrar.sqlite import LocationDbError, SqliteLocationStore

        try:
            location_store = SqliteLocationStore(state.location_db, clock=loop.time)
        except LocationDbError as exc:
            print(f"callflow: {exc}", file=sys.stderr)
            state.close()
            return 1
    try:
        media = await _media_backend(getattr(args, "media", "relay"))
    except ValueError as exc:
        print(f"callflow: --media: {exc}", file=sys.stderr)
        if location_store is not None:
            location_store.close()
        state.close()
        return 1
    try:  # rtpengine's DTMF reports (runtime/media/rtpengine_dtmf.py)
        await _rtpengine_dtmf(media, getattr(args, "rtpengine_dtmf", None))
    except ValueError as exc:
        print(f"callflow: --rtpengine-dtmf: {exc}", file=sys.stderr)
        if media is not None:
            await media.close()
        if location_store is not None:
            location_store.close()
        state.close()
        return 1
    engine = Engine(listen=specs, advertise=args.advertise, realm=server.realm or server.domain or "callflow",
                    rtp_ports=args.rtp_ports or server.rtp_ports or (20000, 29999),
                    user_agent=server.user_agent, tls=tls, client_tls=client_tls,
                    location_store=location_store, media=media)
    if media is not None and hasattr(media, "watch"):
        media.watch(engine.bus.subscribe)  # counters refreshed at hang-up, for `closed` and the record
    engine.line_contact = getattr(args, "line_contact", None)
    if location_dsn:  # a cluster: each line registered by the one node holding its lease
        from .lines.lease_pump import open_leases

        try:
            open_leases(engine, location_dsn,
                        state.node or node_id(args),
                        getattr(args, "lease_seconds", None) or 30.0)
        except LocationDbError as exc:
            print(f"callflow: {exc}", file=sys.stderr)
            if location_store is not None:
                location_store.close()
            state.close()
            return 1
    from .security.cluster import configure as configure_cluster

    problem = configure_cluster(engine, args)
    if problem is not None:
        print(f"callflow: {problem}", file=sys.stderr)
        if location_store is not None:
            location_store.close()
        state.close()
        return 1
    try:
        await engine.start()
    except (OSError, ValueError) as exc:
        where = ", ".join(f"{s.transport}:{s.host}:{s.port}" for s in specs)
        print(f"callflow: cannot listen on {where}: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
        state.close()
        return 1
    state.attach(engine)
    dialplan = Dialplan(SipServer(engine=engine), server_overrides=_server_overrides(args))
    dialplan.load(program)
    if location_store is not None:
        try:
            restored, dropped = location_store.restore(set(engine.users))
        except LocationDbError as exc:
            print(f"callflow: {exc}", file=sys.stderr)
            await engine.stop()
            state.close()
            return 1
        log.info("event=bindings_restored file=%s restored=%d dropped=%d", state.location_db, restored, dropped)
    from .control.server import ControlError

    try:
        control = await _start_control(args, engine, reloader, records=state.writer)
    except ControlError as exc:
        print(f"callflow: {exc}", file=sys.stderr)
        await engine.stop()
        state.close()
        return 1
    _tune_gc()
    log.info("event=started script=%s users=%d lines=%d", args.path, len(program.users), len(program.lines))
    reloader.watch()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        loop.add_signal_handler(signal.SIGHUP, lambda: reloader.reload("SIGHUP"))
    except (NotImplementedError, RuntimeError, AttributeError):
        pass
    await stop.wait()
    log.info("event=stopping")
    reloader.stop()
    if control is not None:
        await control.stop()  # type: ignore[attr-defined]
    if engine.leases is not None:
        await engine.leases.close()  # our lines un-register, then their leases are released
    await engine.stop()
    state.close()  # after the engine: the calls it hung up have their records written
    if location_store is not None:
        location_store.close()
    return 0


async def _media_backend(spec: str) -> MediaBackend | None:
    """``relay`` -> None (the engine makes its Python relay); ``rtpengine:HOST:PORT[,inject-dtmf]`` -> a
    started RtpengineBackend (with DTMF injection when asked). Raises ValueError saying what is expected."""
    kind, _, rest = spec.partition(":")
    if kind == "relay" and not rest:
        return None
    if kind != "rtpengine":
        raise ValueError(f"expected relay or rtpengine:HOST:PORT[,inject-dtmf], got {spec!r}")
    from .media.base import MediaError
    from .media.rtpengine import RtpengineBackend, parse_spec

    host, port, options = parse_spec(rest)
    backend = RtpengineBackend((_resolve_host(host), port), inject_dtmf="inject-dtmf" in options)
    try:
        await backend.start()
    except MediaError as exc:
        raise ValueError(str(exc)) from exc
    return backend


async def _rtpengine_dtmf(media: MediaBackend | None, hostport: str | None) -> None:
    """Listen for rtpengine's DTMF reports at ``hostport`` (--rtpengine-dtmf), or log why keys go
    unheard. Raises ValueError when that cannot be (no rtpengine, an address that cannot be bound)."""
    from .media.rtpengine_dtmf import listen

    address = None
    if hostport is not None:
        host, _, port = hostport.rpartition(":")
        address = (_resolve_host(host.strip("[]")), int(port))
    await listen(media, address)


def _resolve_host(host: str) -> str:
    """A listen host as an IP address: names (localhost, the machine's name) are resolved once, at
    start, preferring IPv4. Raises ValueError saying which name did not resolve."""
    import ipaddress
    import socket

    try:
        ipaddress.ip_address(host.partition("%")[0])
        return host
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ValueError(f"cannot listen on {host!r}: the name does not resolve ({reason}); give an IP "
                         f"address such as 127.0.0.1 or 0.0.0.0") from None
    addresses = [info[4][0] for info in infos]
    return next((a for a in addresses if ":" not in a), addresses[0])


def _q(text: str) -> str:
    from .events import logfmt_value

    return logfmt_value(text)


GC_THRESHOLDS = (10_000, 10, 10)


def _tune_gc() -> None:
    """Every SIP message allocates many short-lived objects and few cycles: move what start-up built
    out of the collector's sight (gc.freeze) and let the youngest generation reach 10,000 objects
    before it is scanned, the older two keeping CPython's ratios.

    Chosen from `bench/calls_per_second.py --memory 10000,20000 --gc shipped,default,freeze,freeze+10000`
    (300 calls/s with SDP, 20,000 calls, the shared 2-core machine; collector CPU time, the longest
    pause per generation, full collections, calls failed):

      (50000, 20, 100) + freeze, before: 3.3 s, young 482 ms (a 1M-object middle generation), 2 full
          (none under load: the media legs' reference cycles piled up, 71,706 objects after 100,000
          calls, and 4.4 s wall pauses); 3,223 failed
      CPython's (700, 10, 10):            10.8 s, full 883 ms, 24 full; 2,921 failed
      (700, 10, 10) + freeze:              9.5 s, full 795 ms, 27 full; 4,260 failed
      (10000, 10, 10) + freeze, chosen:    3.8 s, young 64 ms, full 614 ms, 4 full; 0 failed

    Over 100,000 calls (other runs, so other load on the machine): failed calls 23,156 before, 15,518
    with CPython's settings, 9,253 chosen; RSS 499, 472 and 502 MB, flat from 10,000 calls on (the
    working set under load, kept by the allocator afterwards). The failures follow the machine's load
    as much as the collector: the server got 45-65 % of a core.

    Objects that live a few hundred milliseconds (a message being handled) die in a 10,000-object
    youngest generation instead of being promoted, so full collections are six times rarer than with
    CPython's thresholds and cycles are still collected (the heap stays flat from 10,000 to 20,000
    calls). A full collection still takes about 0.6 s of CPU at 300 calls/s: it scans the
    transactions waiting out their RFC 3261 timers (about 28,000, 780,000 tracked objects), which only
    holding less per finished transaction can shorten."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _raise_open_file_limit() -> None:
    """Every call holds sockets (RTP and RTCP per leg, TCP/TLS connections): lift the soft limit of
    open files to the hard one, as servers do, instead of failing calls at 1024 descriptors."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = hard if hard != resource.RLIM_INFINITY else 1 << 20
        if soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ImportError, ValueError, OSError):
        pass


def _tls_contexts(cert: str | None, key: str | None, ca: str | None,
                  specs: list) -> tuple[ssl.SSLContext | None, ssl.SSLContext]:  # type: ignore[type-arg]
    """The server context for TLS/WSS listeners and the client context for providers over TLS."""
    server_ctx = None
    if any(s.transport in ("tls", "wss") for s in specs):
        if not cert:
            raise ValueError("a tls or wss listener needs `tls certificate` and `tls key` in the server block "
                             "(or --tls-cert/--tls-key)")
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
    client_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return server_ctx, client_ctx


if __name__ == "__main__":
    sys.exit(main())
