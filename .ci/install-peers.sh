#!/bin/bash
# Installs the third-party SIP peers used by the integration tests (tests/rig):
#   kamailio        - stands in for the IP-telephony provider (registrar + proxy)
#   kamailio-tls-modules - tls.so, for the provider's SIP-over-TLS listener (tests/rig/kamailio.py
#                     transports=("udp", "tcp", "tls"); TCP needs no extra package)
#   baresip         - headless phones driven over ctrl_tcp (baresip-core ships every module we load)
#   dnsmasq-base    - the DNS server tests/unit/test_lines_dns.py starts (NAPTR/SRV for lines, RFC 3263)
#   openssl         - fallback for tests/rig/certs.py when the `cryptography` package is missing
#   chromium        - headless browser for the live-page test (tests/integration/test_operator_view.py);
#                     fonts-dejavu-core gives its screenshots readable text
#   postgresql      - a real PostgreSQL server for the call-records test (started by the test itself)
#   rtpengine-daemon - the media relay behind `--media rtpengine:HOST:PORT` (runs in user space, no
#                     kernel module: the tests start it with --table=-1 on 127.0.0.1)
#   sngrep          - the HEP collector the SIP trace test sends to (sngrep -L udp:...)
#   sip-tester      - SIPp, scripted SIP peers for what baresip cannot send (late-offer re-INVITEs,
#                     retransmitted and forked 2xx, REFER with Replaces: tests/integration/sipp/)
#   gcc, libc6-dev  - build tests/rig/bindlo.c, the LD_PRELOAD shim that keeps baresip's RTP and DNS
#                     sockets on 127.0.0.1 (baresip 1.0 binds them to 0.0.0.0 unconditionally)
# Idempotent; run as root (CI runs as root). Returns at once when everything is installed
# (INSTALL_PEERS_FORCE=1 runs apt-get anyway); apt-get install is a no-op for present packages.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "install-peers.sh: must run as root" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
if [ -z "${INSTALL_PEERS_FORCE:-}" ] \
        && have kamailio && have kamailio-tls-modules && have baresip && have baresip-core \
        && have gcc && have libc6-dev && have openssl && have chromium && have fonts-dejavu-core \
        && have postgresql && have sngrep && have dnsmasq-base && have rtpengine-daemon && have sip-tester; then
    echo "install-peers.sh: kamailio, kamailio-tls-modules, baresip, gcc, openssl, chromium, postgresql, sngrep, dnsmasq-base, rtpengine-daemon, sip-tester already installed"
    exit 0
fi

apt-get update
# kamailio: the core package carries every module the provider config loads (tm, sl, rr, pv,
# textops, siputils, xlog, sanity, usrloc, registrar, auth, htable, maxfwd).
# kamailio-tls-modules: tls.so (the rig writes its own tls.cfg; certificates come from
# tests/rig/certs.py, which uses the `cryptography` Python package, else the openssl CLI: openssl
# is installed as that fallback).
# baresip: pulls baresip-core (binary + g711, ausine, aubridge, ctrl_tcp, menu, account modules);
# its SIP over TCP and TLS is built in (libre with OpenSSL), no extra package.
apt-get install -y --no-install-recommends kamailio kamailio-tls-modules baresip gcc libc6-dev \
    openssl chromium fonts-dejavu-core dnsmasq-base
# call records (PostgreSQL server binaries; the test runs its own instance) and the SIP trace (sngrep)
apt-get install -y --no-install-recommends postgresql sngrep
# rtpengine's user-space daemon (Debian 12: 10.5); its service is not wanted, the tests start their own
apt-get install -y --no-install-recommends rtpengine-daemon
# SIPp (Debian's package name is sip-tester): the call layer's scripted peers
apt-get install -y --no-install-recommends sip-tester

# The Debian kamailio package enables a system service on install; tests run their own instance
# on their own ports, so stop the packaged one if a service manager started it (it may bind 5060).
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet kamailio 2>/dev/null; then
    systemctl stop kamailio || true
fi

# postgresql's package starts a cluster on 5432 where a service manager runs; the test starts its own
# server in a temporary folder on a free port, so that one is not needed
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet postgresql 2>/dev/null; then
    systemctl stop postgresql || true
fi

if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet rtpengine-daemon 2>/dev/null; then
    systemctl stop rtpengine-daemon || true
fi

# sed reads to the end: with pipefail, `head` could SIGPIPE the writer and fail the script
kamailio -v 2>&1 | sed -n 1p
(baresip -h 2>&1 || true) | sed -n 1p
(chromium --version 2>&1 || true) | sed -n 1p
