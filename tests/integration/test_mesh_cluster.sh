#!/bin/bash
# test_mesh_cluster.sh: five real statemeshd processes gossiping over UDP on
# loopback: replication to all, SIGKILL detection, recovery of a restarted empty
# node, and a partition (nftables in a private network namespace) that heals.
# Prints TAP. Runs itself inside a fresh network namespace when it can (root +
# iproute2 + nftables), so the partition can be made without touching the host.
set -uo pipefail
B=${SM_BUILDDIR:-$(pwd)}
D=$B/src/statemeshd
C=$B/src/statemesh

if [ -z "${SM_IN_NETNS:-}" ] && [ "$(id -u)" = 0 ] && command -v ip >/dev/null &&
    command -v nft >/dev/null; then
    ns=smtest$$
    if ip netns add "$ns" 2>/dev/null; then
        ip netns exec "$ns" ip link set lo up
        SM_IN_NETNS=$ns ip netns exec "$ns" "$BASH" "$0" "$@"
        rc=$?
        ip netns del "$ns"
        exit $rc
    fi
fi

T=$(mktemp -d /tmp/sm-cluster.XXXXXX)
declare -a PID UDP HTTP
cleanup() {
    for p in "${PID[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done
    wait 2>/dev/null
    [ -n "${SM_IN_NETNS:-}" ] && nft delete table inet smpart 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT

. "$(dirname "$0")/tap_lib.sh"
tap_diag() { tail_logs 5 "$T"/n[01234].log; }
plan 12
url() { echo "http://127.0.0.1:${HTTP[$1]}$2"; }
value_is() { [ "$(curl -sf "$(url "$1" "/v1/kv/$2")")" = "$3" ]; }
missing() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$(url "$1" "/v1/kv/$2")")" = 404 ]; }
state_of() {
    curl -sf "$(url "$1" /v1/members)" | python3 -c "
import json,sys
m=json.load(sys.stdin)['members']
print(next((x['state'] for x in m if x['id']=='$2'),'absent'))"
}
state_is() { [ "$(state_of "$1" "$2")" = "$3" ]; }
all_on() { # cmd-with-node-first... run on each listed node
    local nodes=$1; shift
    for i in $nodes; do "$1" "$i" "${@:2}" || return 1; done
}

start() { # i
    local i=$1
    "$D" --node-id "n$i" --bind "127.0.0.1:${UDP[$i]}" --http "127.0.0.1:${HTTP[$i]}" \
        --join "127.0.0.1:${UDP[0]},127.0.0.1:${UDP[1]}" --ca "$T/ca/ca.pub" \
        --cert "$T/certs/n$i.cert" --key "$T/certs/n$i.key" --storage mesh \
        --probe-interval 500ms --data-dir "$T/data$i" >"$T/n$i.log" 2>&1 &
    PID[$i]=$!
}

"$C" ca init "$T/ca" >/dev/null || { echo "Bail out! statemesh ca init failed"; exit 1; }
for i in 0 1 2 3 4; do
    "$C" cert issue --ca "$T/ca" --node-id "n$i" --out "$T/certs" >/dev/null ||
        { echo "Bail out! cert issue failed"; exit 1; }
    UDP[$i]=$(free_port udp)
    HTTP[$i]=$(free_port)
done
for i in 0 1 2 3 4; do start "$i"; done
up() { curl -sf "$(url "$1" /healthz)"; }
check "five daemons serve /healthz" wait_for 10 all_on "0 1 2 3 4" up
alive5() { [ "$(curl -sf "$(url "$1" /v1/members)" | python3 -c "
import json,sys; print(sum(1 for x in json.load(sys.stdin)['members'] if x['state']=='alive'))")" = 5 ]; }
check "every node sees five alive members" wait_for 20 all_on "0 1 2 3 4" alive5

for k in 1 2 3; do curl -sf -X PUT --data-binary "v$k" "$(url $((k % 5)) /v1/kv/rec:$k)" >/dev/null; done
has_all() { value_is "$1" rec:1 v1 && value_is "$1" rec:2 v2 && value_is "$1" rec:3 v3; }
check "writes on three nodes are readable on all five" wait_for 5 all_on "0 1 2 3 4" has_all

kill -9 "${PID[4]}"
wait "${PID[4]}" 2>/dev/null
PID[4]=""
n4dead() { state_is "$1" n4 dead; }
check "SIGKILLed n4 is marked dead by the other four" wait_for 30 all_on "0 1 2 3" n4dead

curl -sf -X PUT --data-binary v4 "$(url 0 /v1/kv/rec:4)" >/dev/null
rm -rf "$T/data4"
start 4
has_more() { has_all "$1" && value_is "$1" rec:4 v4; }
check "n4 restarted empty recovers every record" wait_for 20 has_more 4
n4alive() { state_is "$1" n4 alive; }
check "the others see n4 alive again" wait_for 20 all_on "0 1 2 3" n4alive

# garbage and oversized datagrams at n0: dropped, counted, n0 keeps serving
# (paced: 200 x 60 kB at once overflow the socket buffer of a daemon that a busy
# machine schedules late, and what the kernel drops the daemon cannot count)
python3 - "${UDP[0]}" <<'PY'
import os, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(200):
    s.sendto(os.urandom(1 + i * 7 % 1300), ("127.0.0.1", int(sys.argv[1])))
    if i % 10 == 9:
        time.sleep(0.002)
for i in range(200):
    s.sendto(b"x" * 60000, ("127.0.0.1", int(sys.argv[1])))
    time.sleep(0.002)
PY
rejected() { curl -sf "$(url 0 /metrics)" | python3 -c "
import sys
env=over=0
for l in sys.stdin:
    if l.startswith('statemesh_gossip_rejected_total{reason=\"envelope\"}'): env=float(l.split()[-1])
    if l.startswith('statemesh_gossip_rejected_total{reason=\"oversize_datagram\"}'): over=float(l.split()[-1])
sys.exit(0 if env >= 200 and over >= 200 else 1)"; }
check "garbage and oversized datagrams are rejected and counted in /metrics" wait_for 5 rejected
still() { up 0 >/dev/null && value_is 0 rec:1 v1; }
check "n0 keeps serving after the flood" still
# the example alerting rules only use families (and label values) a daemon exports
alert_families() { curl -sf "$(url 0 /metrics)" | python3 -c "
import re, sys
have = sys.stdin.read()
rules = open('$SM_SRCDIR/dist/statemesh-alerts.yml').read()
used = set(re.findall(r'\b(statemesh_[a-z_]+?)(?:_bucket)?\b[\[{ )=]', rules))
miss = [u for u in sorted(used) if not re.search('^' + u + r'(_bucket)?[{ ]', have, re.M)]
ok = used and not miss and 'statemesh_members{state=\"dead\"}' in have
print('# alert rules use:', ' '.join(sorted(used)), '| missing:', ' '.join(miss))
sys.exit(0 if ok else 1)"; }
check "every family the example alerting rules use is exported (dist/statemesh-alerts.yml)" alert_families

if [ -z "${SM_IN_NETNS:-}" ]; then
    why="needs root, iproute2 and nftables for a private network namespace"
    skip "partition of n4 (nftables) is detected" "$why"
    skip "after healing, both sides converge on writes made during the partition" "$why"
    skip "the conflicting key holds the value the merge order picks everywhere" "$why"
else
    nft add table inet smpart
    nft add chain inet smpart in '{ type filter hook input priority 0; }'
    nft add rule inet smpart in udp dport "${UDP[4]}" drop
    nft add rule inet smpart in udp sport "${UDP[4]}" drop
    check "partition of n4 (nftables) is detected" wait_for 30 all_on "0 1 2 3" n4dead
    # writes on both sides, one key on both (n0's second write wins: version 2)
    curl -sf -X PUT --data-binary left "$(url 0 /v1/kv/split:a)" >/dev/null
    curl -sf -X PUT --data-binary right "$(url 4 /v1/kv/split:b)" >/dev/null
    curl -sf -X PUT --data-binary x1 "$(url 0 /v1/kv/split:c)" >/dev/null
    curl -sf -X PUT --data-binary x2 "$(url 0 /v1/kv/split:c)" >/dev/null
    curl -sf -X PUT --data-binary y1 "$(url 4 /v1/kv/split:c)" >/dev/null
    sleep 1
    nft delete table inet smpart
    healed() { value_is "$1" split:a left && value_is "$1" split:b right; }
    check "after healing, both sides converge on writes made during the partition" \
        wait_for 20 all_on "0 1 2 3 4" healed
    conflict() { value_is "$1" split:c x2; }
    check "the conflicting key holds the value the merge order picks everywhere" \
        wait_for 10 all_on "0 1 2 3 4" conflict
fi
finish
