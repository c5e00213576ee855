#!/usr/bin/env bash
# Install what fleetkit, its lab and its tests need on a fresh Debian/Ubuntu machine (as root):
# Debian packages for the lab (OpenSSH server, nftables, unshare/nsenter, dpkg-deb, the stand-ins'
# /usr/bin/python3 with PyYAML), Debian's chromium and a font for the report's browser tests and
# screenshots (Playwright drives /usr/bin/chromium; it cannot download its own browser here), and a
# virtualenv in .venv with fleetkit and its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: run as root (the lab needs namespaces and mounts)" >&2
    exit 2
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    openssh-server openssh-client nftables iproute2 util-linux procps dpkg sudo curl ca-certificates \
    python3 python3-venv python3-yaml \
    chromium fonts-dejavu-core >/dev/null

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "bootstrap: $PYTHON is older than 3.11; set PYTHON=/path/to/python3.11+" >&2
    exit 2
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e ".[test]"
echo "bootstrap: ready (.venv)"
