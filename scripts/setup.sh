#!/bin/sh
# setup.sh: install every Debian package statemesh needs, then configure and build.
# Idempotent; runs as root without prompts (or through sudo when not root).
# Usage: scripts/setup.sh [--no-build] [configure options...]
set -eu
cd "$(dirname "$0")/.."

PACKAGES="build-essential autoconf automake libtool pkg-config \
  libsodium-dev libev-dev libmsgpack-dev libxxhash-dev libcmocka-dev \
  libhiredis-dev libraft-dev libuv1-dev libmicrohttpd-dev libjansson-dev libyaml-dev \
  redis-server curl python3 valgrind iproute2 nftables gnuplot-nox"

build=1
if [ "${1:-}" = "--no-build" ]; then build=0; shift; fi

if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "setup: installing:$missing" >&2
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
# The packaged redis-server service is not needed: tests start their own on free ports.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
    $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true
fi

[ "$build" = 1 ] || exit 0
if [ ! -x configure ] || [ configure.ac -nt configure ]; then autoreconf -fi; fi
if [ ! -f Makefile ] || [ "$#" -gt 0 ]; then ./configure "$@"; fi
make -j"$(nproc)"
