"""Integration-test rig: real Kamailio (the provider) and baresip (phones), on 127.0.0.1 only.

    from tests.rig import Kamailio, Phone, account_line, ports
    from tests.rig import make_ca_and_cert, issue_cert   # throwaway CA/certificates for SIP over TLS

Pytest fixtures built on it live in tests/integration/conftest.py (`kamailio`, `phone_factory`, ...).
Peers are installed by .ci/install-peers.sh (Debian: kamailio, kamailio-tls-modules, baresip).
"""

from .baresip import (
    CALL_CLOSED,
    CALL_ESTABLISHED,
    CALL_INCOMING,
    CALL_PROGRESS,
    CALL_RINGING,
    CALL_RTCP,
    CALL_RTPESTAB,
    REGISTER_FAIL,
    REGISTER_OK,
    CtrlError,
    Phone,
    PhoneFactory,
    RtpStats,
    account_line,
    baresip_binary,
    ensure_loopback_uri,
    missing_modules,
    parse_rtp_stats,
)
from .certs import Certs, certs_problem, issue_cert, make_ca_and_cert
from .kamailio import (
    DEFAULT_PORT,
    PSTN_PASSWORD,
    PSTN_USER,
    REALM,
    TRUNK_DID,
    TRUNK_PASSWORD,
    TRUNK_USER,
    WRONG_PASSWORD,
    Kamailio,
    kamailio_binary,
    tls_module_problem,
)
from .ports import PortAllocator, port_is_free, ports
from .sipping import TRANSPORTS, client_tls_context, ensure_loopback, options_ping

__all__ = [
    "CALL_CLOSED", "CALL_ESTABLISHED", "CALL_INCOMING", "CALL_PROGRESS", "CALL_RINGING", "CALL_RTCP",
    "CALL_RTPESTAB", "DEFAULT_PORT", "PSTN_PASSWORD", "PSTN_USER", "REALM", "REGISTER_FAIL",
    "REGISTER_OK", "TRANSPORTS", "TRUNK_DID", "TRUNK_PASSWORD", "TRUNK_USER", "WRONG_PASSWORD",
    "Certs", "CtrlError", "Kamailio", "Phone", "PhoneFactory", "PortAllocator", "RtpStats",
    "account_line", "baresip_binary", "certs_problem", "client_tls_context", "ensure_loopback",
    "ensure_loopback_uri", "issue_cert", "kamailio_binary", "make_ca_and_cert", "missing_modules",
    "options_ping", "parse_rtp_stats", "port_is_free", "ports", "tls_module_problem",
]
