#!/bin/bash
# demo.sh: a local three-node statemesh on 127.0.0.1 — replication with its
# measured delay, failure detection after SIGKILL, recovery of a restarted
# empty node — then everything is stopped and removed. Bounded in time.
# Usage: scripts/demo.sh   (after scripts/setup.sh has built the tree)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SM_BIN:-src}
D=$BIN/statemeshd
C=$BIN/statemesh
for b in "$D" "$C"; do
    [ -x "$b" ] || { echo "demo: $b not built; run scripts/setup.sh first" >&2; exit 1; }
done
command -v curl >/dev/null || { echo "demo: curl is needed (scripts/setup.sh installs it)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/statemesh-demo.XXXXXX)
declare -a PID UDP HTTP
cleanup() {
    for p in "${PID[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
now_ms() { date +%s%3N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
url() { echo "http://127.0.0.1:${HTTP[$1]}$2"; }
# wait_for SECONDS CMD...: poll every 5 ms until CMD succeeds
wait_for() {
    local deadline=$(( $(now_ms) + $1 * 1000 )); shift
    while [ "$(now_ms)" -lt "$deadline" ]; do "$@" >/dev/null 2>&1 && return 0; sleep 0.005; done
    return 1
}
value_is() { [ "$(curl -sf "$(url "$1" "/v1/kv/$2")")" = "$3" ]; }
member_state() {
    curl -sf "$(url "$1" /v1/members)" | python3 -c "
import json,sys
m=json.load(sys.stdin); m=m.get('members',m) if isinstance(m,dict) else m
print(next((x.get('state','') for x in m if x.get('id')=='$2'),'absent'))"
}
state_is() { [ "$(member_state "$1" "$2")" = "$3" ]; }
alive_count() {
    curl -sf "$(url "$1" /v1/members)" | python3 -c "
import json,sys
m=json.load(sys.stdin); m=m.get('members',m) if isinstance(m,dict) else m
print(sum(1 for x in m if x.get('state')=='alive'))"
}
all_alive() { [ "$(alive_count "$1")" = "$2" ]; }

start() { # i
    local i=$1
    mkdir -p "$WORK/data$i"
    "$D" --node-id "n$i" --bind "127.0.0.1:${UDP[$i]}" --http "127.0.0.1:${HTTP[$i]}" \
        --join "127.0.0.1:${UDP[1]}" --ca "$WORK/ca/ca.pub" --cert "$WORK/certs/n$i.cert" \
        --key "$WORK/certs/n$i.key" --storage mesh --data-dir "$WORK/data$i" \
        --log-level info >"$WORK/n$i.log" 2>&1 &
    PID[$i]=$!
}

say "1. a cluster CA and one certificate per node"
"$C" ca init "$WORK/ca"
for i in 1 2 3; do "$C" cert issue --ca "$WORK/ca" --node-id "n$i" --out "$WORK/certs"; done
ls -l "$WORK/ca" "$WORK/certs" | sed 's/^/   /'

say "2. three statemeshd nodes on 127.0.0.1 (n1 is the seed)"
for i in 1 2 3; do UDP[$i]=$(free_port); HTTP[$i]=$(free_port); done
for i in 1 2 3; do start "$i"; done
for i in 1 2 3; do
    wait_for 10 curl -sf "$(url "$i" /healthz)" || { echo "n$i did not start:"; cat "$WORK/n$i.log"; exit 1; }
    echo "   n$i: gossip udp 127.0.0.1:${UDP[$i]}, http 127.0.0.1:${HTTP[$i]} (pid ${PID[$i]})"
done
P=scripts/demo_probe.py
for i in 1 2 3; do
    ms=$("$P" alive "$(url "$i" "")" 3 15) || { echo "membership did not form"; exit 1; }
    echo "   n$i sees 3 alive members (${ms} ms after it answered)"
done
"$C" --addr "127.0.0.1:${HTTP[1]}" members | sed 's/^/   /'

say "3. write a backend-health record on n1; watch it arrive on n2 and n3"
KEY="backend:health:10.0.0.7:8080"
# watches (server-sent events) on n2 and n3 are open before the write on n1
"$P" spread "$(url 1 "/v1/kv/$KEY")" unhealthy "$KEY" "$(url 2 "")" "$(url 3 "")" |
    while read -r u ms; do
        for i in 2 3; do [ "$u" = "$(url "$i" "")" ] && echo "   n$i got $KEY = unhealthy ${ms} ms after the PUT on n1"; done
    done
value_is 2 "$KEY" unhealthy && value_is 3 "$KEY" unhealthy || { echo "the record did not spread"; exit 1; }
curl -s -D - -o /dev/null "$(url 3 "/v1/kv/$KEY")" | grep -i '^x-statemesh' | sed 's/^/   n3 /'

say "4. SIGKILL n3; n1 and n2 detect it"
killed_at=$(now_ms)
kill -9 "${PID[3]}"; wait "${PID[3]}" 2>/dev/null || true
PID[3]=""
for i in 1 2; do
    ms=$("$P" state "$(url "$i" "")" n3 dead 30 "$killed_at") || { echo "n$i did not mark n3 dead"; exit 1; }
    echo "   n$i marks n3 dead ${ms} ms after the kill"
done

say "5. restart n3 with an empty data dir; it rejoins and recovers the state from its peers"
rm -rf "$WORK/data3"
t0=$(now_ms)
start 3
wait_for 10 curl -sf "$(url 3 /healthz)" || { echo "n3 did not restart"; exit 1; }
wait_for 15 value_is 3 "$KEY" unhealthy || { echo "n3 did not recover the record"; exit 1; }
echo "   n3 holds $KEY = $(curl -sf "$(url 3 "/v1/kv/$KEY")") $(( $(now_ms) - t0 )) ms after restart"
wait_for 15 state_is 1 n3 alive && echo "   n1 sees n3 $(member_state 1 n3) again"

say "6. stop everything (SIGTERM: each node leaves the mesh gracefully)"
for i in 1 2 3; do
    kill -TERM "${PID[$i]}"
    t0=$(now_ms)
    rc=0; wait "${PID[$i]}" || rc=$?
    echo "   n$i exited with status $rc in $(( $(now_ms) - t0 )) ms"
    PID[$i]=""
done
say "demo finished"
