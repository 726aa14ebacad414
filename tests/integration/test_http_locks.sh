#!/bin/bash
# test_http_locks.sh: /v1/locks/{name} and `statemesh lock` end to end, with the
# lock: prefix routed to a real redis-server started on a free port. TAP.
. "$(dirname "$0")/http_lib.sh"
RS=${REDIS_SERVER:-$(command -v redis-server)}
plan 12
if [ -z "$RS" ] || [ ! -x "$RS" ]; then
    for i in $(seq 1 12); do ok "locks # SKIP no redis-server"; done
    finish
fi
rport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$RS" --port "$rport" --bind 127.0.0.1 --save '' --appendonly no >"$T/redis.log" 2>&1 &
SMD_PIDS+=("$!")
wait_for 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$rport" || echo "# redis did not start"
start_daemon lk --storage local --route lock:=redis --redis-addr "127.0.0.1:$rport" \
    -o "redis.prefix=smtest$$:" || { echo "Bail out! statemeshd did not start"; exit 1; }

req POST '/v1/locks/lock:a?ttl=30s'
tok=$(jget "j['token']")
fence=$(jget "j['fence']")
# redis fences sit on the server clock's floor (ms * 1024, docs/redis.md)
is "POST acquires: 200 with name, token and a clock-floored fence" \
    "$CODE $(jget "(j['name'], len(j['token']) > 0, j['fence'] > 1024 * 1500000000000)")" \
    "200 ('lock:a', True, True)"
req POST '/v1/locks/lock:a?ttl=30s'
check "a second acquire while held: 409 locked" is_error 409 locked
req PUT '/v1/locks/lock:a?ttl=30s' --data-binary '{"token":"not-the-token"}'
check "renew with a wrong token: 409 not_owner" is_error 409 not_owner
req PUT '/v1/locks/lock:a?ttl=30s' --data-binary "{\"token\":\"$tok\"}"
is "renew with the token: 200, same fence" "$CODE $(jget "j['fence']")" "200 $fence"
req DELETE "/v1/locks/lock:a?token=not-the-token"
check "release with a wrong token: 409 not_owner" is_error 409 not_owner
req DELETE "/v1/locks/lock:a?token=$tok"
is "release with the token (query form): 200 released" "$CODE $(jget "j['released']")" "200 True"
req POST '/v1/locks/lock:a?ttl=30s'
is "re-acquire after release: a larger fence" "$CODE $(jget "j['fence'] > $fence")" "200 True"
req POST '/v1/locks/other?ttl=30s'
check "a name outside the routed prefix (local backend): 501 not_supported" is_error 501 not_supported

S=("$C" --addr "$ADDR")
read -r ctok cfence < <("${S[@]}" lock acquire lock:cli --ttl 30s)
is "statemesh lock acquire prints TOKEN FENCE" "${#ctok}:$((cfence > fence))" "32:1"
"${S[@]}" lock acquire lock:cli >/dev/null 2>"$T/err"; rc=$?
is "statemesh lock acquire of a held lock: exit 1, locked" "$rc:$(grep -c 'HTTP 409 locked' "$T/err")" "1:1"
out=$("${S[@]}" lock renew lock:cli "$ctok" --ttl 30s); rc=$?
is "statemesh lock renew NAME TOKEN: exit 0" "$rc:$out" "0:$ctok $cfence"
out=$("${S[@]}" lock release lock:cli "$ctok"); rc=$?
is "statemesh lock release NAME TOKEN: exit 0" "$rc:$out" "0:OK"
finish
