#!/bin/bash
# test_http.sh: the statemeshd HTTP/JSON API against a real daemon (storage: local):
# every endpoint, every error path, SSE watch, typed models, metrics. Prints TAP.
. "$(dirname "$0")/http_lib.sh"
plan 53

start_daemon h1 --storage local || { echo "Bail out! statemeshd did not start"; exit 1; }

req GET /healthz
is "healthz answers 200 with status ok" "$CODE $(jget "j['status']")" "200 ok"

# ---- kv: write, read, metadata ----
req PUT /v1/kv/app/k1 --data-binary 'hello world'
is "PUT /v1/kv/{key} gives version 1" "$CODE $(jget "j['version']")" "200 1"
req PUT /v1/kv/app/k1 --data-binary 'hello again'
is "a second PUT gives version 2" "$CODE $(jget "j['version']")" "200 2"
curl -s -D "$T/h" -o "$T/v" "http://$ADDR/v1/kv/app/k1"
is "GET returns the raw value" "$(cat "$T/v")" "hello again"
is "X-Statemesh-Version header" "$(tr -d '\r' <"$T/h" | sed -n 's/^X-Statemesh-Version: //p')" "2"
is "X-Statemesh-Origin header is the node id" "$(tr -d '\r' <"$T/h" | sed -n 's/^X-Statemesh-Origin: //p')" "h1"
is "X-Statemesh-Expires is 0 without a TTL" "$(tr -d '\r' <"$T/h" | sed -n 's/^X-Statemesh-Expires: //p')" "0"
printf 'a\0b\xff' >"$T/bin"
req PUT /v1/kv/app/bin --data-binary @"$T/bin"
curl -s -o "$T/bin2" "http://$ADDR/v1/kv/app/bin"
check "binary values round-trip byte for byte" cmp -s "$T/bin" "$T/bin2"
req PUT /v1/kv/app/empty --data-binary ''
curl -s -o "$T/e" -w '%{http_code}' "http://$ADDR/v1/kv/app/empty" >"$T/code"
is "an empty value is stored and read back" "$(cat "$T/code"):$(wc -c <"$T/e")" "200:0"

# ---- TTL ----
t0=$(now_ms)
req PUT '/v1/kv/app/ttl?ttl=30s' --data-binary x
exp=$(curl -s -D - -o /dev/null "http://$ADDR/v1/kv/app/ttl" | tr -d '\r' | sed -n 's/^X-Statemesh-Expires: //p')
check "ttl=30s sets X-Statemesh-Expires to now + 30 s" \
    python3 -c "import sys; sys.exit(0 if abs(int('$exp') - ($t0 + 30000)) < 3000 else 1)"
req PUT '/v1/kv/app/short?ttl=2s' --data-binary x
req GET /v1/kv/app/short
is "a key with ttl=2s reads back at once" "$CODE" "200"
sleep 2.3
req GET /v1/kv/app/short
check "after its TTL the key reads as 404 not_found" is_error 404 not_found

# ---- missing, delete ----
req GET /v1/kv/app/none
check "GET of a missing key: 404 JSON not_found" is_error 404 not_found
req DELETE /v1/kv/app/bin
is "DELETE answers 200 with a version" "$CODE $(jget "j['version'] > 0")" "200 True"
req GET /v1/kv/app/bin
check "a deleted key reads as 404" is_error 404 not_found

# ---- listing ----
req PUT /v1/kv/list/b --data-binary B
req PUT /v1/kv/list/a --data-binary A
req PUT /v1/kv/other/c --data-binary C
req GET '/v1/kv?prefix=list/'
is "GET /v1/kv?prefix lists exactly the prefix, sorted" "$CODE $(jget "[e['key'] for e in j['entries']]")" "200 ['list/a', 'list/b']"
is "listing carries count, base64 value, version, origin, size" \
    "$(jget "(j['count'], j['entries'][0]['value'], j['entries'][0]['version'], j['entries'][0]['origin'], j['entries'][0]['size'], j['entries'][0]['expires'])")" \
    "(2, 'QQ==', 1, 'h1', 1, 0)"
req GET /v1/kv
check "GET /v1/kv without a prefix lists everything" test "$(jget "len(j['entries']) >= 5")" = True

# ---- bad input ----
long=$(head -c 300 /dev/zero | tr '\0' k)
req PUT "/v1/kv/$long" --data-binary x
check "a 300-byte key: 400 bad_key" is_error 400 bad_key
req PUT "/v1/kv/a%01b" --data-binary x
check "a key with a control character: 400 bad_key" is_error 400 bad_key
head -c 2000 /dev/zero | tr '\0' v >"$T/2k"
req PUT /v1/kv/app/big --data-binary @"$T/2k"
check "a 2000-byte value (limit 1024): 413 value_too_large" is_error 413 value_too_large
head -c 2000000 /dev/zero | tr '\0' x >"$T/2m"
req PUT /v1/kv/app/big --data-binary @"$T/2m"
check "a 2 MB value: 413 with a JSON body" is_error 413 value_too_large
req PUT /v1/kv/app/big -H 'Transfer-Encoding: chunked' --data-binary @"$T/2m"
check "a 2 MB chunked upload (no Content-Length): 413 JSON" is_error 413 value_too_large
req PUT '/v1/kv/app/t?ttl=abc' --data-binary x
check "ttl=abc: 400 bad_ttl" is_error 400 bad_ttl
req PUT '/v1/kv/app/t?ttl=-5s' --data-binary x
check "ttl=-5s: 400 bad_ttl" is_error 400 bad_ttl
req PUT '/v1/kv/app/t?ttl=100000d' --data-binary x
check "ttl over ten years: 400 bad_ttl" is_error 400 bad_ttl
req GET /v1/nothing
check "unknown route: 404 JSON not_found" is_error 404 not_found
req POST /v1/kv/app/k1 --data-binary x
check "POST on /v1/kv/{key}: 405 method_not_allowed" is_error 405 method_not_allowed
allow=$(curl -s -D - -o /dev/null -X PATCH "http://$ADDR/v1/kv/app/k1" | tr -d '\r' | sed -n 's/^Allow: //p')
is "405 answers carry an Allow header" "$allow" "GET,PUT,DELETE"
req DELETE /v1/watch
check "DELETE /v1/watch: 405" is_error 405 method_not_allowed

# ---- members, status, locks on the local backend ----
req GET /v1/members
check "members without a mesh: 501 not_supported JSON" is_error 501 not_supported
req GET /v1/status
is "status names node, storage and key count" "$CODE $(jget "(j['node_id'], j['storage'], j['backend_ok'], j['keys'] >= 5)")" "200 ('h1', 'local', True, True)"
req POST '/v1/locks/lock:a?ttl=10s'
check "lock acquire on local: 501 not_supported" is_error 501 not_supported
req POST '/v1/locks/lock:a?ttl=zz'
check "lock acquire with a bad ttl: 400 bad_ttl" is_error 400 bad_ttl
req PUT '/v1/locks/lock:a'
check "lock renew without a token: 400" is_error 400 bad_request
req DELETE '/v1/locks/lock:a' --data-binary '{"token":'
check "lock release with broken JSON: 400 bad_json" is_error 400 bad_json

# ---- SSE watch ----
curl -sN "http://$ADDR/v1/watch?prefix=w:" >"$T/sse" &
cpid=$!
wait_for 5 grep -q watching "$T/sse"
req PUT /v1/kv/w:1 --data-binary one
req PUT /v1/kv/x:ignored --data-binary no
req DELETE /v1/kv/w:1
req PUT '/v1/kv/w:2?ttl=200ms' --data-binary two
wait_for 5 grep -q '"type":"expire"' "$T/sse"
kill "$cpid" 2>/dev/null
wait "$cpid" 2>/dev/null
events=$(python3 - "$T/sse" <<'PY'
import json,sys,base64
out=[]
for line in open(sys.argv[1]):
    if line.startswith('data: '):
        e=json.loads(line[6:])
        v=base64.b64decode(e['value']).decode() if 'value' in e else '-'
        out.append('%s:%s:%s:%s' % (e['type'], e['key'], v, e['origin']))
print(' '.join(out))
PY
)
is "SSE watch delivers set (base64 value), delete and expire for its prefix only, in order" \
    "$events" "set:w:1:one:h1 delete:w:1:-:h1 set:w:2:two:h1 expire:w:2:-:h1"
check "SSE events name their type in 'event:' lines" grep -q '^event: delete' "$T/sse"

# ---- typed models ----
U='http%3A%2F%2F10.0.0.1%3A8080'
req PUT "/v1/backends/$U/health" --data-binary '{"state":"unhealthy","consecutive_fails":3}'
is "PUT backend health: 200 version 1" "$CODE $(jget "j['version']")" "200 1"
req GET "/v1/backends/$U/health"
is "GET backend health: url, state, fails, updated_by, version" \
    "$CODE $(jget "(j['url'], j['state'], j['consecutive_fails'], j['updated_by'], j['version'])")" \
    "200 ('http://10.0.0.1:8080', 'unhealthy', 3, 'h1', 1)"
req GET /v1/kv/backend:health:http://10.0.0.1:8080
is "the health record lives under backend:health:{url}" "$CODE" "200"
req PUT "/v1/backends/$U/health" --data-binary '{"state":"sideways"}'
check "unknown health state: 400 bad_json" is_error 400 bad_json
req PUT "/v1/backends/$U/health" --data-binary '{"state":'
check "broken JSON on a typed endpoint: 400 bad_json" is_error 400 bad_json
req PUT "/v1/backends/$U/health" --data-binary '{"url":"http://other:1","state":"healthy"}'
check "a body URL that differs from the path: 400 bad_json" is_error 400 bad_json
req GET "/v1/backends/http%3A%2F%2Fnowhere/health"
check "GET of a missing health record: 404" is_error 404 not_found
req PUT "/v1/circuits/$U" --data-binary '{"state":"open","consecutive_fails":5}'
req GET "/v1/circuits/$U"
is "circuit breaker round trip" "$CODE $(jget "(j['backend_url'], j['state'], j['consecutive_fails'])")" \
    "200 ('http://10.0.0.1:8080', 'open', 5)"
req PUT "/v1/lb/$U/connections" --data-binary '{"connections":7}'
req PUT "/v1/lb/http%3A%2F%2Fb%3A1/connections" --data-binary '3'
req GET "/v1/lb/$U/connections"
is "connection count: this node's slot and the sum" "$CODE $(jget "(j['connections'], j['slots'])")" "200 (7, {'h1': 7})"
req GET /v1/lb/connections
is "all connection counts by backend" "$(jget "sorted(j['backends'].items())")" \
    "[('http://10.0.0.1:8080', 7), ('http://b:1', 3)]"
req PUT "/v1/lb/$U/connections" --data-binary '{"connections":"many"}'
check "a non-integer connection count: 400 bad_json" is_error 400 bad_json
req GET /v1/raft
check "raft status without raft: 501 not_supported" is_error 501 not_supported

# ---- metrics ----
curl -s "http://$ADDR/metrics" >"$T/metrics"
check "/metrics counts HTTP answers by code" grep -q '^statemesh_http_requests_total{method="GET",code="404"} [1-9]' "$T/metrics"
check "/metrics has the store's operation counters" grep -q '^statemesh_operations_total{storage_type="local",operation="set",result="ok"} [1-9]' "$T/metrics"
check "/metrics has SSE client and dropped-event series" grep -q '^statemesh_sse_dropped_events_total 0' "$T/metrics"
finish
