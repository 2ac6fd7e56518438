#!/usr/bin/env bash
# Installs Callflow into ./.venv on a fresh Debian 12 machine (or any Linux with Python >= 3.11).
#
#   bash .ci/setup.sh          the server:     then .venv/bin/callflow run ...
#   bash .ci/setup.sh --test   the test suite: also the peers the integration tests start (Kamailio,
#                              baresip...: .ci/install-peers.sh) and the test extras
#
# Why a virtual environment: Debian 12 marks its Python "externally managed" (PEP 668), so a plain
# `pip install` outside one is refused, and Debian has `python3` but no `python` command. As root,
# the Debian packages a venv needs (python3-venv: ensurepip is not in the base python3 package) are
# installed first. Idempotent: a second run only re-checks what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

test_extras=
if [ "${1:-}" = "--test" ]; then
    test_extras=1
fi

python=${PYTHON:-python3}
need_apt=
if ! command -v "$python" >/dev/null 2>&1; then
    need_apt=1
elif ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    need_apt=1
fi
if [ -n "$need_apt" ]; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "setup.sh: $python with the venv module is needed (Debian: apt-get install python3-venv, as root)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends python3 python3-venv
    python=python3
fi

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "setup.sh: Callflow needs Python 3.11 or newer; $python is $("$python" -V 2>&1)" >&2
    exit 1
fi

if [ -n "$test_extras" ]; then
    bash .ci/install-peers.sh
fi

if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
if [ -n "$test_extras" ]; then
    "${pip[@]}" -e '.[test]'
else
    "${pip[@]}" -e .
fi
echo "setup.sh: installed in .venv ($(.venv/bin/python -V 2>&1)); run .venv/bin/callflow"
