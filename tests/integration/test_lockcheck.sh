#!/bin/sh
# test_lockcheck.sh: lock safety under real faults (raft leader kills, netns
# partitions, redis restarts with and without persistence); TAP from lockcheck.py.
here=$(cd "$(dirname "$0")" && pwd)
: "${SM_BUILDDIR:=$(pwd)}"
export SM_BUILDDIR
if ! command -v python3 >/dev/null 2>&1; then
    echo "1..0 # SKIP python3 not found"
    exit 0
fi
exec python3 "$here/lockcheck/lockcheck.py" "$@"
