#!/bin/bash
# Installs the third-party SIP peers used by the integration tests (tests/rig):
#   kamailio  - stands in for the IP-telephony provider (registrar + proxy)
#   baresip   - headless phones driven over ctrl_tcp (baresip-core would lack modules we load)
# Idempotent; run as root (CI runs as root). Safe to re-run: apt-get install is a no-op when present.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "install-peers.sh: must run as root" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

if command -v kamailio >/dev/null 2>&1 && command -v baresip >/dev/null 2>&1 \
        && [ -f /usr/lib/baresip/modules/ctrl_tcp.so ] && [ -f /usr/lib/baresip/modules/ausine.so ]; then
    echo "install-peers.sh: kamailio and baresip already installed"
    exit 0
fi

apt-get update
# kamailio: the core package carries every module the provider config loads (tm, sl, rr, pv,
# textops, siputils, xlog, sanity, usrloc, registrar, auth, htable, maxfwd).
# baresip: pulls baresip-core (binary + g711, ausine, aubridge, ctrl_tcp, menu, account modules).
apt-get install -y --no-install-recommends kamailio baresip

# The Debian kamailio package enables a system service on install; tests run their own instance
# on their own ports, so stop the packaged one if a service manager started it (it may bind 5060).
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet kamailio 2>/dev/null; then
    systemctl stop kamailio || true
fi

kamailio -v | head -n 1
baresip -h 2>&1 | head -n 1 || true
