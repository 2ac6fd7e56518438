"""The command-line options of a node behind an edge (docs/scaling.md): `--edge` and `--nonce-secret`.

Kept here rather than in cli.py so the options, their checks and what they set on the engine read in
one place: `add_arguments` on `callflow run`'s parser, `configure` once the engine exists.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from typing import Any

from .edge import EdgeTrust, parse_edge

__all__ = ["NONCE_SECRET_ENV", "add_arguments", "configure"]

NONCE_SECRET_ENV = "CALLFLOW_NONCE_SECRET"

log = logging.getLogger("callflow.security")


def _edge(text: str) -> str:
    try:
        parse_edge(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_arguments(run: argparse.ArgumentParser) -> None:
    """`--edge IP[:PORT]` (repeatable) and `--nonce-secret SECRET` on `callflow run`."""
    run.add_argument("--edge", type=_edge, action="append", metavar="IP[:PORT]",
                     help="an edge proxy in front of this node (repeat for several): requests from it are "
                          "judged by the phone's address it reports in the Via, never by its own, and it is "
                          "never blocked by the flood or password-guessing guard")
    run.add_argument("--nonce-secret", metavar="SECRET",
                     help=f"sign digest nonces with this secret (16 bytes or more), the same on every node "
                          f"behind an edge, so a challenge from one node may be answered on another (default: "
                          f"{NONCE_SECRET_ENV}, else a random one per process); prefer the variable, which "
                          f"`ps` does not show")


def configure(engine: Any, args: argparse.Namespace) -> str | None:
    """Apply the options to `engine` (its `edges` and `auth`). With a shared secret the nonces' time
    is the wall clock, read once here against the engine's `now()`, so every node's nonces mean the
    same time. Returns a message for the operator when an option is unusable (a nonce secret too
    short), else None; logs `edge_trusted` / `nonce_secret_shared` lines."""
    edges = getattr(args, "edge", None) or []
    if edges:
        engine.edges = EdgeTrust(edges)
        log.info("event=edge_trusted edges=%s", engine.edges.describe())
    secret = getattr(args, "nonce_secret", None) or os.environ.get(NONCE_SECRET_ENV)
    if secret:
        try:
            engine.auth.share_nonces(secret.encode(), time.time() - engine.now())
        except ValueError as exc:
            return f"--nonce-secret: {exc}"
        log.info("event=nonce_secret_shared source=%s", "option" if getattr(args, "nonce_secret", None)
                 else NONCE_SECRET_ENV)
    return None
