#!/bin/sh
# test_raft.sh: raft backend integration tests with real processes (TAP from raft_cluster.py).
here=$(cd "$(dirname "$0")" && pwd)
: "${SM_BUILDDIR:=$(pwd)}"
export SM_BUILDDIR
if ! command -v python3 >/dev/null 2>&1; then
    echo "1..0 # SKIP python3 not found"
    exit 0
fi
exec python3 "$here/raft_cluster.py"
