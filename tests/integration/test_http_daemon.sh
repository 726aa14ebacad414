#!/bin/bash
# test_http_daemon.sh: statemeshd as a process: YAML config and --check-config
# (exact FILE:LINE messages), flags over the file, bearer token, unix socket,
# JSON logs, SIGHUP reload, SIGTERM exit within 2 s, SSE queue overflow. TAP.
. "$(dirname "$0")/http_lib.sh"
plan 27

# ---- --check-config ----
cat >"$T/good.yaml" <<'Y'
# a complete, valid file
node_id: cfg1
storage: local
max_value: 4096
http:
  listen: 127.0.0.1:0
  sse_queue: 8
log:
  level: info
  format: logfmt
local:
  sweep_interval: 100ms
mesh:
  join: [127.0.0.1:7001, "127.0.0.1:7002"]
  gossip_interval: 200ms
routes:
  - prefix: "lock:"
    backend: local
Y
out=$("$D" -c "$T/good.yaml" --check-config 2>&1); rc=$?
is "--check-config on a good file: exit 0" "$rc:$out" "0:config ok: $T/good.yaml"

check_bad() { # YAML DESCRIPTION WANT-MESSAGE (no pipeline: the TAP counter lives here)
    printf "$1" >"$T/bad.yaml"
    shift
    out=$("$D" -c "$T/bad.yaml" --check-config 2>&1); rc=$?
    is "$1" "$rc:$out" "1:statemeshd: $T/bad.yaml:$2"
}
check_bad 'node_id: a\nstorage: local\nmesh:\n  gossip_intervall: 1s\n' "unknown option: exit 1 naming FILE:LINE and the option" \
        "4: unknown option 'mesh.gossip_intervall' (see docs/config.md)"
check_bad 'node_id: a\nmax_value: lots\n' "a value of the wrong type names FILE:LINE and the option" \
        "2: option max_value: 'lots' is not an unsigned integer"
check_bad 'storage: local\nhttp:\n  listen: nowhere\n' "a bad address names FILE:LINE" "3: option http.listen: 'nowhere' is not HOST:PORT"
check_bad 'node_id: a\nstorage: etcd\n' "an unknown backend is refused" "2: option storage: 'etcd' is not one of local, mesh, redis, raft"
check_bad 'node_id: a\nnode_id: b\n' "a duplicate option names both lines" "2: option node_id: duplicate (first set at $T/bad.yaml:1)"
check_bad 'node_id: a\nmesh: [1, 2\n' "a YAML syntax error names FILE:LINE" "3: YAML error: did not find expected ',' or ']' while parsing a flow sequence"
check_bad 'routes:\n  - prefix: "lock:"\n    backend: zookeeper\n' "a route to an unknown backend names its line" "2: routes: backend 'zookeeper' is not one of local, mesh, redis, raft"
check_bad 'storage: local\nmax_value: 0\n' "the store's own limits are checked too (FILE:LINE from its message)" \
        "2: option max_value: 0 is out of range 1..67108864"
out=$("$D" -c "$T/missing.yaml" --check-config 2>&1); rc=$?
is "a missing file: exit 1" "$rc:${out%%:*}" "1:statemeshd"
out=$("$D" --bogus 2>&1); rc=$?
is "an unknown flag: exit 2" "$rc" "2"
check "--help documents every contract flag" bash -c "'$D' --help | grep -q -- '--check-config' && '$D' --help | grep -q -- '--advertise HOST:PORT' && '$D' --help | grep -q -- '--storage BACKEND'"

# ---- flags win over the file ----
start_daemon ignored -c "$T/good.yaml" --node-id flagnode --max-value 10 --log-format json ||
    echo "# daemon did not start"
req GET /v1/status
is "--node-id overrides node_id from the file" "$(jget "j['node_id']")" "flagnode"
req PUT /v1/kv/k --data-binary 0123456789A
check "--max-value 10 overrides max_value: 4096 (11 bytes: 413)" is_error 413 value_too_large
check "--log-format json writes JSON log lines" \
    python3 -c "import json; [json.loads(l) for l in open('$T/ignored.log') if l.strip()]"

# ---- SIGHUP reload, SIGTERM with an open SSE stream ----
curl -sN "http://$ADDR/v1/watch?prefix=" >"$T/sse" &
cpid=$!
wait_for 5 grep -q watching "$T/sse"
kill -HUP "$PID"
wait_for 5 grep -q '"msg":"reloaded"' "$T/ignored.log"
check "SIGHUP reloads and logs it" grep -q '"msg":"reloaded","log_level":"info"' "$T/ignored.log"
req GET /healthz
is "the daemon still serves after SIGHUP" "$CODE" "200"
t0=$(now_ms)
kill -TERM "$PID"
wait "$PID"; rc=$?
el=$(($(now_ms) - t0))
check "SIGTERM with an SSE client open: exit 0 within 2 s (took ${el} ms)" test "$rc" = 0 -a "$el" -lt 2000
wait_for 3 bash -c "! kill -0 $cpid"
check "the SSE client's stream ends when the daemon stops" bash -c "! kill -0 $cpid 2>/dev/null"

# ---- bearer token and unix socket ----
echo "s3cret-token" >"$T/token"
start_daemon tok --http-token-file "$T/token" --http-socket "$T/api.sock" || echo "# no start"
req PUT /v1/kv/a --data-binary x
check "a write without the token: 401 unauthorized" is_error 401 unauthorized
req PUT /v1/kv/a --data-binary x -H 'Authorization: Bearer wrong'
check "a write with a wrong token: 401" is_error 401 unauthorized
req PUT /v1/kv/a --data-binary x -H 'Authorization: Bearer s3cret-token'
is "a write with the token: 200" "$CODE" "200"
req GET /v1/kv/a
is "reads need no token" "$CODE:$BODY" "200:x"
is "the unix socket serves the same API" "$(curl -s --unix-socket "$T/api.sock" http://x/v1/kv/a)" "x"
kill -TERM "$PID"; wait "$PID"
check "the unix socket file is removed at exit" test ! -e "$T/api.sock"

# ---- a slow SSE client: bounded queue, dropped-events counter, overflow notice ----
start_daemon slow --max-value 65536 -o http.sse_queue=4 || echo "# no start"
curl -sN "http://$ADDR/v1/watch?prefix=big" >"$T/slow" &
cpid=$!
wait_for 5 grep -q watching "$T/slow"
kill -STOP "$cpid"
head -c 60000 /dev/zero | tr '\0' z >"$T/60k"
for i in $(seq 1 150); do curl -s -o /dev/null -X PUT --data-binary @"$T/60k" "http://$ADDR/v1/kv/big$i"; done
dropped=$(curl -s "http://$ADDR/metrics" | sed -n 's/^statemesh_sse_dropped_events_total \([0-9]*\)$/\1/p')
check "a stalled SSE client's queue is bounded: dropped events counted ($dropped)" test "${dropped:-0}" -gt 0
kill -CONT "$cpid"
wait_for 10 grep -q '^event: overflow' "$T/slow"
check "the client is told how many events it lost (event: overflow)" grep -q '"type":"overflow","dropped":[1-9]' "$T/slow"
kill "$cpid" 2>/dev/null
finish
