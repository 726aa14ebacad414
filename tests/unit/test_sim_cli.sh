#!/bin/sh
# test_sim_cli.sh: the statemesh-sim command-line contract (help, argument errors, JSON, CSV).
SIM="${SM_BUILDDIR:-.}/sim/statemesh-sim"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
n=0
fails=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
no() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $1"; }
check() { if eval "$2"; then ok "$1"; else no "$1"; fi; }
echo "1..17"

"$SIM" --help >"$TMP/help" 2>&1
check "--help exits 0" "[ $? -eq 0 ]"
check "--help documents the contract" "grep -q -- '--latency-ms MIN-MAX' '$TMP/help' && grep -q 'Exit status' '$TMP/help'"

"$SIM" --nodes 10 --seed 1 >/dev/null 2>"$TMP/e1"
check "missing --scenario exits 2" "[ $? -eq 2 ]"
check "missing --scenario is named" "grep -q -- '--scenario is required' '$TMP/e1'"
"$SIM" --scenario nope --nodes 10 --seed 1 >/dev/null 2>"$TMP/e2"
check "unknown scenario exits 2 with the list" "[ $? -eq 2 ] && grep -q 'converge, failure, partition or churn' '$TMP/e2'"
"$SIM" --scenario converge --nodes 10 --seed 1 --loss 1.5 >/dev/null 2>"$TMP/e3"
check "loss out of range exits 2" "[ $? -eq 2 ] && grep -q 'not in \[0, 1)' '$TMP/e3'"
"$SIM" --scenario converge --nodes 10 --seed 1 --latency-ms 9-3 >/dev/null 2>"$TMP/e4"
check "inverted latency range exits 2" "[ $? -eq 2 ] && grep -q 'MIN <= MAX' '$TMP/e4'"
"$SIM" --scenario converge --nodes ten --seed 1 >/dev/null 2>"$TMP/e5"
check "non-numeric --nodes exits 2" "[ $? -eq 2 ] && grep -q \"'ten' is not an unsigned integer\" '$TMP/e5'"
"$SIM" --scenario converge --nodes 10 --seed 1 --crypto maybe >/dev/null 2>"$TMP/e6"
check "bad --crypto exits 2" "[ $? -eq 2 ] && grep -q 'not on or off' '$TMP/e6'"
"$SIM" --scenario converge --nodes 10 --seed 1 --bogus >/dev/null 2>"$TMP/e7"
check "unknown option exits 2" "[ $? -eq 2 ] && grep -q \"unknown option '--bogus'\" '$TMP/e7'"

# the engine alone (flooding protocol): fast and exact
"$SIM" --scenario converge --nodes 20 --seed 5 --protocol flood --duration-s 2 --updates 10 \
    --latency-ms 2 --json --csv "$TMP/s.csv" >"$TMP/j1" 2>/dev/null
check "a flood run exits 0" "[ $? -eq 0 ]"
check "JSON has every contract field" "python3 - '$TMP/j1' <<'PY'
import json,sys
o=json.load(open(sys.argv[1]))
need='scenario nodes seed converged convergence_ms_p50 convergence_ms_p99 convergence_ms_max msgs_per_node_per_update bytes_per_node_per_s false_positives detection_ms_p99 heal_ms replicas_identical events wall_s'.split()
assert all(k in o for k in need), [k for k in need if k not in o]
assert o['converged'] is True and o['false_positives'] is None and o['heal_ms'] is None
# fixed 2 ms links: the writer's 19 sends arrive at 2 ms, so every update spreads in 2 ms;
# each receiver forwards to the 18 others once
assert o['convergence_ms_p50'] == 2 and o['convergence_ms_max'] == 2, o
assert o['msgs_per_node_per_update'] == 18.05, o  # (19 + 19*18) / 20 nodes
PY"
check "CSV has the header and 20 rows per update" "[ \"\$(head -1 '$TMP/s.csv')\" = update,t_ms,fraction ] && [ \$(wc -l <'$TMP/s.csv') -eq 201 ]"
"$SIM" --scenario converge --nodes 20 --seed 5 --protocol flood --duration-s 2 --updates 10 \
    --latency-ms 2 --json >"$TMP/j2" 2>/dev/null
check "same seed, same JSON (wall_s aside)" "python3 -c \"
import json,sys
a,b=(json.load(open(f)) for f in ('$TMP/j1','$TMP/j2'))
a.pop('wall_s'); b.pop('wall_s'); sys.exit(a!=b)\""
"$SIM" --scenario converge --nodes 10 --seed 1 --threads 0 >/dev/null 2>"$TMP/e8"
check "--threads 0 exits 2" "[ $? -eq 2 ] && grep -q 'threads: 0 is out of range' '$TMP/e8'"
# the gossip core with 2% loss on one and on three threads: the same run
for t in 1 3; do
    "$SIM" --scenario failure --nodes 300 --seed 9 --loss 0.02 --duration-s 5 --threads $t \
        --json -q >"$TMP/t$t" 2>/dev/null
done
check "a gossip run on three threads exits 0" "[ -s '$TMP/t3' ]"
check "one thread and three give the same JSON (wall_s aside)" "python3 -c \"
import json,sys
a,b=(json.load(open(f)) for f in ('$TMP/t1','$TMP/t3'))
a.pop('wall_s'); b.pop('wall_s'); sys.exit(a!=b or a['events'] < 50000)\""
[ $fails -eq 0 ]
