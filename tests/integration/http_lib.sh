# http_lib.sh: helpers for the statemeshd/statemesh shell tests (TAP output,
# daemons on free ports, JSON field checks). Sourced by test_http*.sh, test_cli*.sh.
set -uo pipefail
B=${SM_BUILDDIR:-$(pwd)}
D=$B/src/statemeshd
C=$B/src/statemesh
T=$(mktemp -d /tmp/sm-http.XXXXXX)
declare -a SMD_PIDS=()
. "$(dirname "${BASH_SOURCE[0]}")/tap_lib.sh"

cleanup() {
    for p in "${SMD_PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT

tap_diag() { tail_logs 3 "$T"/*.log; }

# start_daemon NAME ARGS...: run statemeshd with --http 127.0.0.1:0 (unless
# ARGS has --http), wait for its "http listening" log line; sets PID and ADDR.
start_daemon() {
    local name=$1; shift
    local extra=(--http 127.0.0.1:0)
    case " $* " in *" --http "*) extra=() ;; esac
    "$D" --node-id "$name" "${extra[@]}" "$@" 2>"$T/$name.log" &
    PID=$!
    SMD_PIDS+=("$PID")
    ADDR=
    local end=$(($(now_ms) + 10000))
    while [ "$(now_ms)" -lt "$end" ]; do
        ADDR=$(sed -n -e 's/.*msg="http listening" addr=\([^ ]*\).*/\1/p' \
            -e 's/.*"msg":"http listening","addr":"\([^"]*\)".*/\1/p' "$T/$name.log" | head -1)
        [ -n "$ADDR" ] && return 0
        kill -0 "$PID" 2>/dev/null || return 1
        sleep 0.02
    done
    return 1
}

# req METHOD PATH [curl args...]: sets CODE and BODY (from $ADDR)
req() {
    local m=$1 p=$2; shift 2
    BODY=$(curl -s -o "$T/body" -w '%{http_code}' -X "$m" "$@" "http://$ADDR$p"; echo)
    CODE=${BODY%$'\n'}
    BODY=$(tr -d '\000' <"$T/body")
    LAST="$CODE $BODY"
}

# jget EXPR: evaluate a python expression on j = json.loads($BODY); prints it
jget() { printf '%s' "$BODY" | python3 -c "import json,sys; j=json.load(sys.stdin); print($1)" 2>/dev/null; }
# is_error CODE ERRCODE: last answer has this HTTP status and a JSON
# {"error": "...", "code": ERRCODE} body (the daemon writes compact JSON, so a
# pattern match is exact enough and spares a python start per check)
is_error() {
    [ "$CODE" = "$1" ] && [[ $BODY == '{"error":"'?*'","code":"'"$2"'"}' ]]
}
