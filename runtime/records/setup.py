"""How `callflow run` and `callflow cdr` use this package: their arguments, and the pieces a running
server holds (state folder, call records writer, SIP trace), opened and closed in one place."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import socket
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .cdr import OUTCOMES, CallRecorder
from .hep import HepError, HepSender
from .state import CDR_FILE, LOCATION_FILE, StateDirError, StateLock, default_state_dir, prepare_state_dir
from .store import Filters, PostgresRecordStore, RecordStoreError, open_store, readable
from .trace import SipTracer
from .writer import RecordWriter

log = logging.getLogger("callflow")


class RunStateError(Exception):
    """What the server cannot start without, said so a user can act on it."""


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT of a HEP collector, e.g. 127.0.0.1:9060, got {text!r}")
    return host.strip("[]"), int(port)


def add_run_arguments(run: argparse.ArgumentParser) -> None:
    """--state-dir, --cdr-dsn, --no-cdr, --hep, --hep-id for `callflow run`."""
    run.add_argument("--state-dir", metavar="DIR",
                     help=f"folder for call records ({CDR_FILE}) and registrations ({LOCATION_FILE}); default "
                          "/var/lib/callflow as root, else $XDG_STATE_HOME/callflow or ~/.local/state/callflow")
    run.add_argument("--cdr-dsn", metavar="DSN",
                     help="write call records to PostgreSQL (postgresql://user:pass@host/db) instead of "
                          "the state folder's SQLite file")
    run.add_argument("--no-cdr", action="store_true", help="write no call records")
    run.add_argument("--hep", type=_hostport, metavar="HOST:PORT",
                     help="send every SIP message to a Homer or sngrep collector (HEP v3 over UDP)")
    run.add_argument("--hep-id", type=int, default=2001, metavar="N", help="HEP capture agent id (default 2001)")


def node_id(args: argparse.Namespace) -> str:
    """This node's name (--node-id; default HOSTNAME-PID): in its call records and its line leases."""
    return getattr(args, "node_id", None) or f"{socket.gethostname()}-{os.getpid()}"


def program_version(program: object) -> str | None:
    """The running program's version id: the loader's own when it has one, else the sources' hash."""
    version = getattr(program, "version", None) or getattr(program, "version_id", None)
    if isinstance(version, str):
        return version
    digest = getattr(program, "source_hash", None)
    return digest[:12] if isinstance(digest, str) else None


@dataclass
class RunState:
    """What `serve` opens before the engine (`open`) and hooks into it once it listens (`attach`)."""

    state_dir: Path | None
    location_db: str | None
    writer: RecordWriter | None = None
    recorder: CallRecorder | None = None
    hep: HepSender | None = None
    hep_id: int = 2001
    tracer: SipTracer | None = field(default=None, repr=False)
    lock: StateLock | None = field(default=None, repr=False)
    node: str | None = None  # --node-id, or HOSTNAME-PID

    @classmethod
    def open(cls, args: argparse.Namespace) -> RunState:
        """Resolve the state folder (only when something is kept there), open the records store and the
        HEP socket. Raises RunStateError."""
        location = getattr(args, "location_db", None)
        no_cdr = getattr(args, "no_cdr", False)
        dsn = getattr(args, "cdr_dsn", None)
        needs_folder = not location or (not no_cdr and not dsn)
        folder = lock = None
        if needs_folder:
            try:
                folder = prepare_state_dir(getattr(args, "state_dir", None) or default_state_dir(),
                                           getattr(args, "path", None))
                lock = StateLock(folder)
            except StateDirError as exc:
                raise RunStateError(str(exc)) from None
        state = cls(folder, location or str(folder / LOCATION_FILE), lock=lock,  # type: ignore[operator]
                    node=node_id(args))
        if not no_cdr:
            try:
                store = open_store(dsn or folder / CDR_FILE)  # type: ignore[operator]
            except RecordStoreError as exc:
                state.close()
                raise RunStateError(str(exc)) from None
            state.writer = RecordWriter(store)
        hep = getattr(args, "hep", None)
        if hep:
            try:
                state.hep = HepSender(*hep)
            except HepError as exc:
                state.close()
                raise RunStateError(str(exc)) from None
            state.hep_id = getattr(args, "hep_id", 2001)
        return state

    def attach(self, engine: object) -> None:
        """Subscribe the recorder to the engine's events, start the writer, attach the SIP trace."""
        if self.writer is not None:
            store = self.writer.store
            # in PostgreSQL (a cluster's shared records), an answered call's row is written at answer too,
            # so a node killed during the call leaves it; its end completes the same row (record_id)
            shared = isinstance(store, PostgresRecordStore)
            self.recorder = CallRecorder(self.writer.submit,
                                         version=lambda: program_version(getattr(engine, "program", None)),
                                         node=self.node, on_answer=self.writer.submit if shared else None)
            if shared and self.node:
                try:  # rows left in progress by this node's previous life: their end will never come
                    orphans = store.mark_orphans(self.node)
                except RecordStoreError as exc:
                    log.error("event=cdr_error store=%s error=%r action=%s", store.name, str(exc),
                              '"records kept in memory and retried"')
                else:
                    if orphans:
                        log.warning("event=cdr_orphans store=%s node=%s records=%d", store.name, self.node, orphans)
            engine.bus.subscribe(self.recorder)  # type: ignore[attr-defined]
            self.writer.start()
            engine.records = self.writer  # type: ignore[attr-defined]  # the live page's `.recent()`
            log.info("event=cdr_started store=%s", self.writer.store.name)
        tracer = SipTracer(lambda transport: _local(engine, transport), hep=self.hep, capture_id=self.hep_id)
        if tracer.log_messages or self.hep is not None:
            self.tracer = tracer
            engine.endpoint.add_observer(tracer)  # type: ignore[attr-defined]
            if self.hep is not None:
                log.info("event=hep_started collector=%s capture_id=%d", self.hep.name, self.hep_id)

    def close(self) -> None:
        """After the engine stopped (its calls' `closed` events are in): write the last records."""
        if self.writer is not None:
            self.writer.stop()
            log.info("event=cdr_stopped store=%s written=%d dropped=%d", self.writer.store.name,
                     self.writer.written, self.writer.dropped)
        if self.hep is not None:
            self.hep.close()
        if self.lock is not None:
            self.lock.release()


def _local(engine: object, transport: str) -> tuple[str, int]:
    """Our address on a transport, for the trace: the listener's, with the advertised address for a
    wildcard listener (what the peer sent to)."""
    local = getattr(engine.endpoint, "local", {})  # type: ignore[attr-defined]
    host, port = local.get(transport) or (None, engine.port_for(transport))  # type: ignore[attr-defined]
    if host in (None, "", "0.0.0.0", "::"):
        host = engine.advertise  # type: ignore[attr-defined]
    return host, port


# ---- callflow cdr ----------------------------------------------------------------------------------

TABLE = (("created_at", "time", 19), ("from_peer", "from", 12), ("caller", "caller", 14), ("dialled", "dialled", 16),
         ("to_peer", "to", 12), ("outcome", "outcome", 9), ("code", "code", 4), ("duration", "secs", 7),
         ("hangup_channel", "hangup", 6), ("call_id", "call", 8))


def add_cdr_command(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    cdr = sub.add_parser("cdr", help="list recent call records (newest first), filtered; --csv or --json")
    cdr.add_argument("--state-dir", metavar="DIR", help="the server's state folder (default: as `run`)")
    cdr.add_argument("--cdr-dsn", metavar="DSN", help="read from PostgreSQL instead (postgresql://...)")
    cdr.add_argument("--number", help="part of the caller id or the dialled number")
    cdr.add_argument("--peer", help="a user or line name, on either side of the call")
    cdr.add_argument("--since", type=_when, metavar="TIME", help='calls created at or after, e.g. "2026-11-30 09:00" '
                     "(local time) or an ISO time with a zone, or 1h/30m/2d ago")
    cdr.add_argument("--until", type=_when, metavar="TIME", help="calls created before")
    cdr.add_argument("--outcome", choices=OUTCOMES)
    cdr.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    form = cdr.add_mutually_exclusive_group()
    form.add_argument("--csv", action="store_true", help="every column, as CSV with a header line")
    form.add_argument("--json", action="store_true", help="every column, as a JSON list")


def _when(text: str) -> float:
    """An absolute time (ISO 8601; without a zone, local time) or an age like 90s, 30m, 2h, 7d."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].isdigit():
        return datetime.now(UTC).timestamp() - int(text[:-1]) * units[text[-1]]
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a time like "2026-11-30 09:00" or an age like 2h, got {text!r}') \
            from None


def cmd_cdr(args: argparse.Namespace) -> int:
    target = args.cdr_dsn
    if not target:
        folder = Path(args.state_dir).expanduser() if args.state_dir else default_state_dir()
        path = folder / CDR_FILE
        if not path.exists():
            print(f"callflow cdr: no call records at {path} (a server writes them there once a call ends; "
                  "--state-dir or --cdr-dsn to read another place)", file=sys.stderr)
            return 1
        target = str(path)
    try:
        store = open_store(target)
        rows = store.query(max(1, args.limit), Filters(args.number, args.peer, args.since, args.until, args.outcome))
        store.close()
    except RecordStoreError as exc:
        print(f"callflow cdr: {exc}", file=sys.stderr)
        return 1
    rows = [readable(r) for r in rows]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        if rows:
            writer.writerow(rows[0].keys())
        for row in rows:
            writer.writerow(["" if v is None else v for v in row.values()])
    else:
        print(_table(rows))
    return 0


def _table(rows: list[dict[str, object]]) -> str:
    if not rows:
        return "no call records match"
    lines = ["  ".join(title.ljust(width) for _, title, width in TABLE).rstrip()]
    for row in rows:
        cells = []
        for key, _, width in TABLE:
            value = row.get(key)
            if key == "created_at" and isinstance(value, str):
                value = _local_time(value)
            elif key == "duration" and isinstance(value, float):
                value = f"{value:.1f}"
            text = "-" if value is None else str(value)
            cells.append(text if len(text) <= width else text[:width - 1] + "…")
            cells[-1] = cells[-1].ljust(width)
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _local_time(iso_text: str) -> str:
    try:
        return datetime.fromisoformat(iso_text.replace("Z", "+00:00")).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso_text
