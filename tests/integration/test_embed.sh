#!/bin/bash
# test_embed.sh: the examples/embed program (libstatemesh on its own libev loop)
# in a mesh with one statemeshd over UDP on loopback: its writes reach the
# daemon with their origin, the daemon's writes reach its watch, --expect and
# --timeout-s give the documented exit codes, SIGTERM leaves the mesh gracefully.
# Prints TAP. With SM_VALGRIND=1 the embed processes run under valgrind.
set -uo pipefail
B=${SM_BUILDDIR:-$(pwd)}
D=$B/src/statemeshd
C=$B/src/statemesh
E=$B/examples/embed
for f in "$D" "$C" "$E"; do
    [ -x "$f" ] || { echo "Bail out! $f is not built"; exit 1; }
done

T=$(mktemp -d /tmp/sm-embed.XXXXXX)
declare -a PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT

# valgrind slows start-up and shutdown: scale the waits that depend on them
WRAP=()
SLOW=1
if [ "${SM_VALGRIND:-0}" = 1 ]; then
    WRAP=(valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite
        --suppressions="${SM_SRCDIR:-.}/tests/lib/valgrind.supp")
    SLOW=4
fi

. "$(dirname "$0")/tap_lib.sh"
tap_diag() { tail_logs 5 "$T"/*.log "$T"/*.out "$T"/*.err; }
plan 13
has_line() { grep -qxF -- "$2" "$T/$1"; } # file exact-line

"$C" ca init "$T/ca" >/dev/null || { echo "Bail out! statemesh ca init failed"; exit 1; }
for id in d0 ea eb ec; do
    "$C" cert issue --ca "$T/ca" --node-id "$id" --out "$T/certs" >/dev/null ||
        { echo "Bail out! statemesh cert issue $id failed"; exit 1; }
done
UDP=$(free_port udp)
HTTP=$(free_port tcp)
url() { echo "http://127.0.0.1:$HTTP$1"; }

# embed ID [more args...]: the flags every embed process here shares. It execs,
# so `embed … &` leaves $! naming the embed process itself (signals reach it);
# run it in the foreground as `(embed …)`.
embed() {
    local id=$1; shift
    exec "${WRAP[@]}" "$E" --id "$id" --bind 127.0.0.1:0 --join "127.0.0.1:$UDP" \
        --ca "$T/ca/ca.pub" --cert "$T/certs/$id.cert" --key "$T/certs/$id.key" "$@"
}

# --- arguments ---
out=$("$E" --help 2>&1); rc=$?
check "--help prints the usage and exits 0" [ "$rc" = 0 -a "${out:0:13}" = "Usage: embed " ]
out=$("$E" --id x --bind 127.0.0.1:0 --put novalue 2>&1); rc=$?
check "a malformed --put is refused with exit 2 and names the argument" \
    [ "$rc" = 2 -a "$out" = "embed: 'novalue' is not KEY=VALUE (see --help)" ]

# --- one daemon ---
"$D" --node-id d0 --bind "127.0.0.1:$UDP" --http "127.0.0.1:$HTTP" --ca "$T/ca/ca.pub" \
    --cert "$T/certs/d0.cert" --key "$T/certs/d0.key" --storage mesh \
    --data-dir "$T/data0" >"$T/d0.log" 2>&1 &
DPID=$!
PIDS+=("$DPID")
check "statemeshd serves /healthz" wait_for 10 curl -sf "$(url /healthz)"

state_of() { # ID: its state in the daemon's member list ("absent" if missing)
    curl -sf "$(url /v1/members)" | python3 -c "
import json,sys
m=json.load(sys.stdin)['members']
print(next((x['state'] for x in m if x['id']=='$1'),'absent'))"
}
state_is() { [ "$(state_of "$1")" = "$2" ]; }

# --- embed A: writes a record and watches app: ---
embed ea --put app:greeting=hello --watch app: >"$T/ea.out" 2>"$T/ea.err" &
APID=$!
PIDS+=("$APID")
check "embed A joins: the daemon lists ea alive" wait_for 10 state_is ea alive
check "A's watch prints its own write with origin ea" \
    wait_for 5 has_line ea.out "set app:greeting=hello origin=ea"
origin_ok() {
    local h
    h=$(curl -sf -D - -o "$T/body" "$(url /v1/kv/app:greeting)") || return 1
    [ "$(cat "$T/body")" = hello ] &&
        printf '%s\n' "$h" | tr -d '\r' | grep -qxF "X-Statemesh-Origin: ea"
}
check "the daemon serves A's record: value hello, X-Statemesh-Origin: ea" wait_for 10 origin_ok

# --- embed B: --expect is met through the mesh, exit 0; its close is a leave ---
(embed eb --expect app:greeting=hello --timeout-s $((15 * SLOW)) >"$T/eb.out" 2>"$T/eb.err")
rc=$?
check "embed B --expect app:greeting=hello exits 0" [ "$rc" = 0 ]
check "B's exit is a graceful leave: the daemon lists eb as left" wait_for 5 state_is eb left

# --- embed C: an expectation that never holds times out with exit 1 ---
start=$(now_ms)
(embed ec --expect app:greeting=other --timeout-s 2 >"$T/ec.out" 2>"$T/ec.err")
rc=$?
took=$(($(now_ms) - start))
timed_out() {
    [ "$rc" = 1 ] && [ "$took" -ge 2000 ] &&
        grep -qxF "embed: timeout: app:greeting does not hold other" "$T/ec.err"
}
check "--expect of a value never written exits 1 after --timeout-s 2 (took ${took} ms)" timed_out

# --- the daemon's writes reach A's watch ---
curl -sf -X PUT --data-binary blue "$(url /v1/kv/app:color)" >/dev/null
check "a PUT through the daemon reaches A's watch: 'set app:color=blue origin=d0'" \
    wait_for 5 has_line ea.out "set app:color=blue origin=d0"
curl -sf -X DELETE "$(url /v1/kv/app:color)" >/dev/null
check "a DELETE through the daemon reaches A's watch: 'delete app:color origin=d0'" \
    wait_for 5 has_line ea.out "delete app:color origin=d0"

# --- SIGTERM: A exits 0 and the daemon sees it leave ---
kill -TERM "$APID"
exited() { ! kill -0 "$APID" 2>/dev/null; }
if wait_for 3 exited; then
    wait "$APID"
    rc=$?
else
    rc=timeout
fi
check "SIGTERM: embed A exits 0 (got $rc)" [ "$rc" = 0 ]
check "after SIGTERM the daemon lists ea as left" wait_for 5 state_is ea left

finish
