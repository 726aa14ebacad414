# tap_lib.sh: TAP output and polling for the shell tests. Sourced (by http_lib.sh,
# test_mesh_cluster.sh, test_mesh_attacks.sh, test_embed.sh).
#
#   plan N              the "1..N" line
#   ok / not_ok DESC    one result; not_ok also prints $WHY and $LAST when set and
#                       calls tap_diag (define it to print log tails) if defined
#   check DESC CMD...   ok when CMD succeeds
#   is DESC GOT WANT    ok when GOT = WANT (GOT is kept in LAST for the diagnostics)
#   skip DESC WHY       a skipped result
#   finish              exit 1 if anything failed, else 0
#   wait_for SECS CMD...  poll CMD every 50 ms until it succeeds; SECS is scaled by
#                       $SLOW (default 1: valgrind runs set more)
#   free_port tcp|udp   an unused loopback port
#   tail_logs N FILE... the last N lines of each non-empty FILE as TAP comments
_n=0
_failed=0

plan() { echo "1..$1"; }
ok() { _n=$((_n + 1)); echo "ok $_n - $*"; }
not_ok() {
    _n=$((_n + 1)); _failed=$((_failed + 1)); echo "not ok $_n - $*"
    [ -n "${WHY:-}" ] && echo "# $WHY"
    [ -n "${LAST:-}" ] && printf '%s\n' "$LAST" | head -5 | sed 's/^/# got: /'
    if declare -F tap_diag >/dev/null; then tap_diag; fi
    return 0
}
check() { local what=$1; shift; WHY=""; if "$@"; then ok "$what"; else not_ok "$what"; fi; }
is() { LAST=$2; if [ "$2" = "$3" ]; then ok "$1"; else not_ok "$1 (want '$3')"; fi; }
skip() { _n=$((_n + 1)); echo "ok $_n - $1 # SKIP ${2:-}"; }
finish() { exit $((_failed > 0)); }

now_ms() { date +%s%3N; }
wait_for() { # seconds cmd...
    local end=$(($(now_ms) + $1 * ${SLOW:-1} * 1000)); shift
    while [ "$(now_ms)" -lt "$end" ]; do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
    return 1
}
free_port() { # tcp|udp (default tcp)
    python3 -c 'import socket,sys
t = socket.SOCK_DGRAM if sys.argv[1] == "udp" else socket.SOCK_STREAM
s = socket.socket(socket.AF_INET, t); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' "${1:-tcp}"
}
tail_logs() { # lines files...
    local k=$1 f; shift
    for f in "$@"; do [ -s "$f" ] && tail -"$k" "$f" | sed "s|^|# ${f##*/}: |"; done
    return 0
}
