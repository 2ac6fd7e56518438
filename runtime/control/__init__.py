"""The operator's side of a running server: the control endpoint (JSON views, reload, Prometheus
/metrics, the live page) and the CLI client that talks to it."""

from .server import (
    ADDRESS_ENV,
    DEFAULT_HOST,
    DEFAULT_PORT,
    TOKEN_ENV,
    ControlAddress,
    ControlError,
    ControlServer,
    make_state,
    parse_address,
)

__all__ = ["ADDRESS_ENV", "DEFAULT_HOST", "DEFAULT_PORT", "TOKEN_ENV", "ControlAddress", "ControlError",
           "ControlServer", "make_state", "parse_address"]
