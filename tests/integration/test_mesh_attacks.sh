#!/bin/bash
# test_mesh_attacks.sh: three real statemeshd processes on loopback under attack
# by crafted UDP packets (tests/integration/sm_inject): senders whose key the
# cluster CA did not certify, replayed packets (own and captured from a daemon),
# records re-signed by a relay. Each must be rejected, counted in /metrics
# (exact deltas), change no data, and leave every daemon serving. Prints TAP.
set -uo pipefail
B=${SM_BUILDDIR:-$(pwd)}
D=$B/src/statemeshd
C=$B/src/statemesh
INJ=$B/tests/integration/sm_inject

T=$(mktemp -d /tmp/sm-attacks.XXXXXX)
declare -a PID UDP HTTP
cleanup() { # SIGTERM (the daemons leave within 2 s), SIGKILL whatever is left after 3 s
    local p k
    for p in "${PID[@]:-}"; do [ -n "$p" ] && kill -TERM "$p" 2>/dev/null; done
    for k in $(seq 30); do
        for p in "${PID[@]:-}"; do [ -n "$p" ] && kill -0 "$p" 2>/dev/null && break; p=""; done
        [ -z "$p" ] && break
        sleep 0.1
    done
    for p in "${PID[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT

. "$(dirname "$0")/tap_lib.sh"
tap_diag() { tail_logs 5 "$T"/n[012].log; }
plan 23
url() { echo "http://127.0.0.1:${HTTP[$1]}$2"; }
up() { curl -sf -o /dev/null "$(url "$1" /healthz)"; }
value_is() { [ "$(curl -sf "$(url "$1" "/v1/kv/$2")")" = "$3" ]; }
missing() { [ "$(curl -s -o /dev/null -w '%{http_code}' "$(url "$1" "/v1/kv/$2")")" = 404 ]; }
header_of() { # node key header -> header value
    curl -sf -D - -o /dev/null "$(url "$1" "/v1/kv/$2")" | tr -d '\r' |
        awk -v h="$(echo "$3" | tr 'A-Z' 'a-z'):" 'tolower($1)==h {print $2}'
}
all_on() { # "nodes" cmd args...: cmd NODE args... on each node
    local nodes=$1; shift
    for i in $nodes; do "$1" "$i" "${@:2}" || return 1; done
}
members_of() { curl -sf "$(url "$1" /v1/members)"; }

# Counters of node $1 (one /metrics read): REJ[reason] and EV[event].
declare -A REJ EV
read_metrics() {
    local body l k v
    body=$(curl -sf "$(url "$1" /metrics)") || return 1
    body=$(grep -E '^statemesh_gossip_(rejected|events|auth_rejected)_total' <<<"$body")
    REJ=() EV=()
    while read -r k v; do
        case $k in
        'statemesh_gossip_rejected_total{reason="'*) l=${k#*\"}; REJ[${l%%\"*}]=${v%.*} ;;
        'statemesh_gossip_auth_rejected_total{reason="'*) l=${k#*\"}; REJ[auth_${l%%\"*}]=${v%.*} ;;
        'statemesh_gossip_events_total{event="'*) l=${k#*\"}; EV[${l%%\"*}]=${v%.*} ;;
        esac
    done <<<"$body"
    [ -n "${REJ[envelope]:-}" ] && [ -n "${EV[record_merged]:-}" ]
}
# The counters this test follows: rejection reasons, and records merged (that
# changed the replica). Not duplicates: the flood echoes an accepted record
# back a varying number of times, at varying moments.
# (auth_*: the security layer's own reasons behind "envelope" and "record_sig")
WATCHED="envelope record_sig record decode sender oversize_datagram auth_wrong_ca auth_badsig
 auth_unknown_sender auth_replay auth_old_incarnation auth_unsigned auth_superseded"
declare -A BASE
mark() { # node: remember its counters
    read_metrics "$1" || return 1
    local r
    for r in $WATCHED; do BASE[$1.$r]=${REJ[$r]:-0}; done
    BASE[$1.merged]=${EV[record_merged]}
}
# delta_is node "envelope=1 merged=0 ...": every named counter moved by exactly
# that much since mark, every other watched counter by 0 (with ONLY=1: only the
# named ones are checked).
delta_is() {
    local node=$1 kv r got exp
    local -A want=()
    for kv in $2; do want[${kv%%=*}]=${kv#*=}; done
    read_metrics "$node" || return 1
    for r in $WATCHED merged; do
        [ -n "${ONLY:-}" ] && [ -z "${want[$r]+set}" ] && continue
        case $r in
        merged) got=${EV[record_merged]} ;;
        *) got=${REJ[$r]:-0} ;;
        esac
        exp=${want[$r]:-0}
        [ $((got - BASE[$node.$r])) = "$exp" ] || {
            WHY="n$node $r moved by $((got - BASE[$node.$r])), expected $exp"
            return 1
        }
    done
}
# expect node "deltas": send the node a fence (a datagram too large for its
# receive buffer, counted as oversize_datagram, handled after every datagram
# sent before it), then wait (5 s) until the fence and exactly the deltas show.
expect() {
    "$INJ" raw "${UDP[$1]}" "$T/fence" || return 1
    wait_for 5 delta_is "$1" "$2 oversize_datagram=1" || delta_is "$1" "$2 oversize_datagram=1"
}

start() { # i
    local i=$1
    "$D" --node-id "n$i" --bind "127.0.0.1:${UDP[$i]}" --http 127.0.0.1:0 \
        --join "127.0.0.1:${UDP[0]},127.0.0.1:${UDP[1]}" --ca "$T/ca/ca.pub" \
        --cert "$T/certs/n$i.cert" --key "$T/certs/n$i.key" --storage mesh \
        --probe-interval 500ms --data-dir "$T/data$i" >"$T/n$i.log" 2>&1 &
    PID[$i]=$!
}
http_port() { # i: the API port the daemon picked, from its "http listening" log line
    HTTP[$1]=$(sed -n 's/.*msg="http listening" addr=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$T/n$1.log")
    [ -n "${HTTP[$1]}" ]
}

# The cluster CA certifies n0..n2 and mallory (a legitimate identity the
# attacker holds); a second CA certifies eve.
"$C" ca init "$T/ca" >/dev/null && "$C" ca init "$T/ca2" >/dev/null ||
    { echo "Bail out! statemesh ca init failed"; exit 1; }
for id in n0 n1 n2 mallory; do
    "$C" cert issue --ca "$T/ca" --node-id "$id" --out "$T/certs" >/dev/null ||
        { echo "Bail out! cert issue failed"; exit 1; }
done
"$C" cert issue --ca "$T/ca2" --node-id eve --out "$T/certs2" >/dev/null ||
    { echo "Bail out! cert issue failed"; exit 1; }
for i in 0 1 2; do # three distinct free ports
    for k in 1 2 3 4 5; do
        UDP[$i]=$("$INJ" port) || { echo "Bail out! no free UDP port"; exit 1; }
        [[ " ${UDP[*]:0:i} " != *" ${UDP[$i]} "* ]] && break
    done
done
for i in 0 1 2; do start "$i"; done
P0=${UDP[0]}
head -c 3000 /dev/zero >"$T/fence"
MAL=(--cert "$T/certs/mallory.cert" --key "$T/certs/mallory.key" --ca "$T/ca/ca.pub")
EVE=(--cert "$T/certs2/eve.cert" --key "$T/certs2/eve.key" --ca "$T/ca2/ca.pub")

check "three daemons serve /healthz" eval 'wait_for 10 all_on "0 1 2" http_port && wait_for 10 all_on "0 1 2" up'
alive3() { [ "$(members_of "$1" | grep -o '"state": *"alive"' | wc -l)" = 3 ]; }
check "every daemon sees three alive members" wait_for 20 all_on "0 1 2" alive3
curl -sf -X PUT --data-binary v0 "$(url 0 /v1/kv/base:1)" >/dev/null
has_base() { value_is "$1" base:1 v0; }
check "a write on n0 reaches n1 and n2" wait_for 5 all_on "1 2" has_base
sleep 0.5 # let the write's last pushes and acks settle before counting

# ---- 1. senders whose key the cluster CA did not certify ----
mark 0
"$INJ" "${EVE[@]}" rec "$P0" evil:ca2 x
check "sender with a certificate from another CA: n0 envelope rejected +1 (wrong_ca), nothing merged" \
    expect 0 "envelope=1 auth_wrong_ca=1"
mark 0
"$INJ" --self-signed sybil rec "$P0" evil:self x
check "sender with a self-signed certificate: envelope rejected +1 (wrong_ca), nothing merged" \
    expect 0 "envelope=1 auth_wrong_ca=1"
mark 0
"$INJ" "${EVE[@]}" --no-cert rec "$P0" evil:nocert x
check "unknown sender without a certificate: envelope rejected +1 (unknown_sender), nothing merged" \
    expect 0 "envelope=1 auth_unknown_sender=1"
mark 0
"$INJ" --self-signed n1 --no-cert --inc "$(($(now_ms) * 2))" --seq 999999 \
    --origin n1 rec "$P0" evil:n1 x
"$INJ" --self-signed n1 --inc "$(($(now_ms) * 2))" --seq 999999 --origin n1 rec "$P0" evil:n1b x
check "packets claiming to be n1, signed by an uncertified key (no cert: badsig, self-made cert: wrong_ca): +2" \
    expect 0 "envelope=2 auth_badsig=1 auth_wrong_ca=1"
none_forged() {
    local k
    for k in evil:ca2 evil:self evil:nocert evil:n1 evil:n1b; do missing "$1" "$k" || return 1; done
}
no_strangers() { ! members_of "$1" | grep -Eq '"(eve|sybil)"'; }
check "no forged record on any daemon, no uncertified sender among n0's members" \
    eval 'all_on "0 1 2" none_forged && no_strangers 0 && [ "$(header_of 0 base:1 X-Statemesh-Origin)" = n0 ]'

# ---- 2. replayed packets ----
INC=$(now_ms)
mark 0
"$INJ" "${MAL[@]}" --inc "$INC" --seq 1 --save "$T/p1" rec "$P0" rep:1 one
check "mallory's certified packet (seq 1) is accepted: rep:1=one merged +1 on n0" \
    eval 'expect 0 "merged=1" && value_is 0 rep:1 one'
mark 0
"$INJ" raw "$P0" "$T/p1"
check "the same packet replayed: envelope rejected +1 (replay), merged +0" \
    expect 0 "envelope=1 auth_replay=1"
mark 0
"$INJ" "${MAL[@]}" --inc "$INC" --seq 2 --save "$T/p2" --version 2 rec "$P0" rep:1 two
check "a newer state (seq 2, rep:1=two version 2) is accepted: merged +1" \
    eval 'expect 0 "merged=1" && value_is 0 rep:1 two'
curl -sf -X PUT --data-binary three "$(url 0 /v1/kv/rep:1)" >/dev/null
three() { value_is "$1" rep:1 three; }
wait_for 5 all_on "0 1 2" three
sleep 0.3
mark 0
"$INJ" raw "$P0" "$T/p2" "$T/p1" "$T/p2"
check "replays of both after a newer local write: envelope +3, rep:1 still three (version 3) everywhere" \
    eval 'expect 0 "envelope=3 auth_replay=3" && all_on "0 1 2" three && [ "$(header_of 0 rep:1 X-Statemesh-Version)" = 3 ]'
# a packet of the old incarnation, captured before mallory "restarted"
"$INJ" "${MAL[@]}" --inc "$INC" --seq 3 --save "$T/p3" --no-send rec "$P0" rep:2 old
mark 0
"$INJ" "${MAL[@]}" --inc $((INC + 1000)) --seq 1 rec "$P0" rep:3 new
wait_for 5 value_is 0 rep:3 new
"$INJ" raw "$P0" "$T/p3"
check "after a restart (higher incarnation) a packet of the old incarnation is rejected: +1" \
    eval 'expect 0 "merged=1 envelope=1 auth_old_incarnation=1" && missing 0 rep:2'
# a real packet signed by n0, captured and replayed to n1
"$INJ" "${MAL[@]}" --inc $((INC + 1000)) --seq 2 capture "$P0" "$T/cap" &&
    mark 1 && "$INJ" raw "${UDP[1]}" "$T/cap"
first_ok=$?
# (n1 may now learn mallory's certificate from the page and merge records it
# had parked for it, so only the envelope counter is followed there)
check "a packet captured from n0 (sent to mallory), replayed once to n1: accepted (envelope +0)" \
    eval '[ $first_ok = 0 ] && ONLY=1 expect 1 "envelope=0"'
mark 1
"$INJ" raw "${UDP[1]}" "$T/cap"
check "the captured packet replayed again to n1: envelope rejected +1" \
    eval 'ONLY=1 expect 1 "envelope=1"'

# ---- 3. records re-signed by a relay ----
curl -sf -X PUT --data-binary real "$(url 1 /v1/kv/rel:1)" >/dev/null
real() { value_is "$1" rel:1 real && [ "$(header_of "$1" rel:1 X-Statemesh-Origin)" = n1 ]; }
wait_for 5 all_on "0 1 2" real
sleep 0.3
mark 0
"$INJ" "${MAL[@]}" --origin n1 --version 9 rec "$P0" rel:1 forged
check "record of origin n1 re-signed by relay mallory: record_sig +1, envelope +0, merged +0" \
    expect 0 "record_sig=1 auth_badsig=1"
mark 0
"$INJ" "${MAL[@]}" --origin n1 --version 9 --sig-key "$T/certs/n1.key" --sig-value real \
    rec "$P0" rel:1 forged
"$INJ" "${MAL[@]}" --origin n1 --version 9 --unsigned rec "$P0" rel:1 forged
check "n1's signature over other bytes, and an unsigned n1 record: record_sig +2" \
    expect 0 "record_sig=2 auth_badsig=1 auth_unsigned=1"
mark 0
"$INJ" "${MAL[@]}" --payload-sender n1 --origin n1 --version 9 --sig-key "$T/certs/n1.key" \
    rec "$P0" rel:1 forged
check "mallory's envelope around a payload that claims sender n1: sender rejected +1" \
    expect 0 "sender=1"
check "n1's real value (rel:1=real, origin n1, version 1) stays on every daemon" \
    eval 'all_on "0 1 2" real && [ "$(header_of 0 rel:1 X-Statemesh-Version)" = 1 ]'
mark 0
"$INJ" "${MAL[@]}" --origin n1 --version 2 --sig-key "$T/certs/n1.key" rec "$P0" rel:ok relayed
relayed() { value_is "$1" rel:ok relayed && [ "$(header_of "$1" rel:ok X-Statemesh-Origin)" = n1 ]; }
check "control: n1's genuinely signed record relayed by mallory is accepted and spreads" \
    eval 'expect 0 "merged=1" && wait_for 5 all_on "0 1 2" relayed'

# ---- 4. a re-issued certificate retires the old key ----
"$C" cert issue --ca "$T/ca" --node-id trudy --out "$T/old" >/dev/null &&
    sleep 0.05 && "$C" cert issue --ca "$T/ca" --node-id trudy --out "$T/new" >/dev/null ||
    { echo "Bail out! cert issue failed"; exit 1; }
TINC=$(now_ms)
mark 0
"$INJ" --cert "$T/new/trudy.cert" --key "$T/new/trudy.key" --ca "$T/ca/ca.pub" \
    --inc "$TINC" --seq 1 rec "$P0" key:new fresh
check "trudy's re-issued certificate is accepted: key:new merged +1" \
    eval 'expect 0 "merged=1" && value_is 0 key:new fresh'
mark 0
"$INJ" --cert "$T/old/trudy.cert" --key "$T/old/trudy.key" --ca "$T/ca/ca.pub" \
    --inc "$TINC" --seq 2 rec "$P0" key:old stale
check "trudy's old key with its older certificate: envelope rejected +1 (superseded), nothing merged" \
    eval 'expect 0 "envelope=1 auth_superseded=1" && missing 0 key:old'

# ---- the daemons keep serving ----
curl -sf -X PUT --data-binary done "$(url 0 /v1/kv/after:1)" >/dev/null
after() { up "$1" && value_is "$1" after:1 done; }
check "after the attacks every daemon serves and a write on n0 reaches n1 and n2" \
    eval 'wait_for 5 all_on "0 1 2" after && kill -0 ${PID[0]} ${PID[1]} ${PID[2]}'
finish
