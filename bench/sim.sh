#!/bin/bash
# bench/sim.sh: wall time of a statemesh-sim run on one thread and on T threads.
#
#   bench/sim.sh [NODES [SEED [THREADS]]]     (defaults: 10000 1 2)
#
# Runs `statemesh-sim --scenario converge --nodes NODES --seed SEED` twice, with
# --threads 1 and --threads THREADS, checks that both give the same JSON (wall_s
# aside), and prints one JSON line: both wall times and their ratio. Both runs
# are made here, one after the other, so the ratio compares like with like on a
# shared machine. Run it from the build directory, or name the binary in SM_SIM.
set -euo pipefail
nodes=${1:-10000}
seed=${2:-1}
threads=${3:-2}
sim=${SM_SIM:-./sim/statemesh-sim}
if [ ! -x "$sim" ]; then
    echo "bench/sim.sh: no $sim (run from the build directory or set SM_SIM)" >&2
    exit 2
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for t in 1 "$threads"; do
    "$sim" --scenario converge --nodes "$nodes" --seed "$seed" --threads "$t" --json -q \
        >"$tmp/t$t.json"
done
python3 - "$tmp/t1.json" "$tmp/t$threads.json" "$threads" <<'PY'
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:3])
wa, wb = a.pop("wall_s"), b.pop("wall_s")
print(json.dumps({
    "bench": "sim", "scenario": "converge", "nodes": a["nodes"], "seed": a["seed"],
    "events": a["events"], "threads": int(sys.argv[3]),
    "wall_s_1": round(wa, 2), "wall_s_n": round(wb, 2), "speedup": round(wa / wb, 3),
    "events_per_s_n": round(a["events"] / wb), "identical": a == b,
    "convergence_ms_p99": a["convergence_ms_p99"],
}))
sys.exit(0 if a == b else 1)
PY
