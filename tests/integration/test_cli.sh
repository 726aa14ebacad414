#!/bin/bash
# test_cli.sh: the statemesh CLI: ca/cert files and modes, every client command
# against a real statemeshd, --json output, exit codes (0 ok, 1 error, 2 usage). TAP.
. "$(dirname "$0")/http_lib.sh"
plan 30

mode() { stat -c %a "$1"; }
# ---- CA and certificates ----
out=$("$C" ca init "$T/pki/ca"); rc=$?
is "ca init DIR: exit 0" "$rc" "0"
is "ca.key is 0600, ca.pub exists" "$(mode "$T/pki/ca/ca.key"):$(test -s "$T/pki/ca/ca.pub" && echo pub)" "600:pub"
"$C" ca init "$T/pki/ca" >/dev/null 2>"$T/err"; rc=$?
is "ca init refuses to overwrite a CA: exit 1" "$rc:$(grep -c 'File exists' "$T/err")" "1:1"
"$C" cert issue --ca "$T/pki/ca" --node-id n1 --out "$T/pki/certs" >/dev/null; rc=$?
is "cert issue: exit 0, ID.key 0600 and ID.cert" \
    "$rc:$(mode "$T/pki/certs/n1.key"):$(head -c 17 "$T/pki/certs/n1.cert")" "0:600:statemesh-cert-v1"
"$C" cert issue --ca "$T/nowhere" --node-id n2 --out "$T/pki/certs" >/dev/null 2>&1; rc=$?
is "cert issue with a missing CA: exit 1" "$rc" "1"
"$C" cert issue --ca "$T/pki/ca" --out "$T/pki/certs" >/dev/null 2>&1; rc=$?
is "cert issue without --node-id: exit 2" "$rc" "2"

# ---- usage ----
"$C" >/dev/null 2>&1; rc=$?
is "no command: exit 2" "$rc" "2"
"$C" frobnicate >/dev/null 2>"$T/err"; rc=$?
is "unknown command: exit 2 with a message" "$rc:$(head -1 "$T/err")" "2:statemesh: unknown command 'frobnicate'"
"$C" get >/dev/null 2>&1; rc=$?
is "get without KEY: exit 2" "$rc" "2"
check "--help lists the contract commands" bash -c "'$C' --help | grep -q 'lock acquire NAME' && '$C' --help | grep -q 'cert issue --ca DIR --node-id ID --out DIR'"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$C" --addr "127.0.0.1:$port" status >/dev/null 2>"$T/err"; rc=$?
is "no daemon: exit 1 saying it cannot connect" "$rc:$(grep -c 'cannot connect' "$T/err")" "1:1"

# ---- against a daemon ----
start_daemon c1 || { echo "Bail out! statemeshd did not start"; exit 1; }
S=("$C" --addr "$ADDR")
out=$("${S[@]}" set app:k1 'hello world'); rc=$?
is "set KEY VALUE: exit 0, prints the version" "$rc:$out" "0:OK version 1"
is "get KEY prints the raw value" "$("${S[@]}" get app:k1)" "hello world"
"${S[@]}" get app:none >/dev/null 2>"$T/err"; rc=$?
is "get of a missing key: exit 1, 'key not found'" "$rc:$(cat "$T/err")" "1:statemesh: key not found: app:none"
is "--json get gives key, value, version, origin" \
    "$("${S[@]}" --json get app:k1 | python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["key"], j["value"], j["version"], j["origin"])')" \
    "app:k1 hello world 1 c1"
printf 'from\nstdin' | "${S[@]}" set app:k2 - >/dev/null
is "set KEY - reads the value from standard input" "$("${S[@]}" get app:k2)" "$(printf 'from\nstdin')"
"${S[@]}" set app:t x --ttl 30s >/dev/null
is "set --ttl 30s sets an expiry" "$("${S[@]}" ls app:t | grep -c 'expires=20')" "1"
"${S[@]}" set app:t x --ttl soon >/dev/null 2>"$T/err"; rc=$?
is "a bad --ttl: exit 1 with the API's message" "$rc:$(grep -c 'bad ttl' "$T/err")" "1:1"
is "ls PREFIX lists keys with version and origin" "$("${S[@]}" ls app:k | cut -f1-3 | tr '\t' ' ' | tr '\n' ';')" \
    "app:k1 version=1 origin=c1;app:k2 version=1 origin=c1;"
is "--json ls is the API's listing" "$("${S[@]}" --json ls app: | python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])')" "3"
is "del KEY: exit 0" "$("${S[@]}" del app:k2; echo $?)" "$(printf 'OK\n0')"
"${S[@]}" get app:k2 >/dev/null 2>&1; rc=$?
is "a deleted key is gone" "$rc" "1"
head -c 5000 /dev/zero | tr '\0' v >"$T/5k"
"${S[@]}" set app:big - <"$T/5k" >/dev/null 2>"$T/err"; rc=$?
is "an oversized value: exit 1 naming HTTP 413" "$rc:$(grep -c 'HTTP 413 value_too_large' "$T/err")" "1:1"
is "status prints the node id" "$("${S[@]}" status | grep '^node_id:')" "node_id: c1"
"${S[@]}" members >/dev/null 2>"$T/err"; rc=$?
is "members without a mesh: exit 1 with the reason" "$rc:$(grep -c 'needs the mesh backend' "$T/err")" "1:1"
"${S[@]}" lock acquire lock:a --ttl 10s >/dev/null 2>"$T/err"; rc=$?
is "lock acquire on a backend without locks: exit 1, not supported" "$rc:$(grep -c 'not supported' "$T/err")" "1:1"
"${S[@]}" lock renew lock:a >/dev/null 2>&1; rc=$?
is "lock renew without TOKEN: exit 2" "$rc" "2"
"${S[@]}" backup "$T/b.snap" >/dev/null 2>"$T/err"; rc=$?
is "backup without raft: exit 1, nothing written" "$rc:$(test -e "$T/b.snap" && echo file)" "1:"

# ---- watch ----
"${S[@]}" watch w: >"$T/watch" &
wpid=$!
wait_for 5 bash -c "curl -s http://$ADDR/metrics | grep -q '^statemesh_sse_clients 1'"
"${S[@]}" set w:1 one >/dev/null
"${S[@]}" del w:1 >/dev/null
wait_for 5 grep -q '^delete' "$T/watch"
is "watch PREFIX prints set and delete events" "$(cut -d' ' -f1-2 "$T/watch" | tr '\n' ';')" "set w:1=one;delete w:1;"
kill -TERM "$PID"; wait "$PID"
wait_for 5 bash -c "! kill -0 $wpid 2>/dev/null"
wait "$wpid"; rc=$?
is "watch exits 0 when the daemon ends the stream" "$rc" "0"
finish
