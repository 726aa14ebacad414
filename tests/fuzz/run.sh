#!/bin/sh
# run.sh: build and run the libFuzzer target for the gossip receive path (envelope + decode + node).
#   tests/fuzz/run.sh [SECONDS]      (default 600; needs clang with libFuzzer)
# Builds with clang -fsanitize=fuzzer,address,undefined straight from the sources into
# $OUT (default /tmp/statemesh-fuzz), independent of the normal gcc/autotools build; it
# only needs a configured build dir for config.h ($BUILD, default: ./ if it has config.h).
set -e
SRC=$(cd "$(dirname "$0")/../.." && pwd)
SECS=${1:-600}
OUT=${OUT:-/tmp/statemesh-fuzz}
BUILD=${BUILD:-$PWD}
[ -f "$BUILD/config.h" ] || { echo "run.sh: no config.h in BUILD=$BUILD (run from a configured build dir)" >&2; exit 1; }
mkdir -p "$OUT/corpus"
clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I"$BUILD" -I"$SRC" -I"$SRC/src" -DSM_BUILDING \
    "$SRC/tests/fuzz/fuzz_recv.c" $(ls "$SRC"/gossip/*.c | grep -v /udp.c) \
    "$SRC/crdt/record.c" "$SRC/crdt/replica.c" $(ls "$SRC"/crypto/*.c) "$SRC/src/error.c" \
    -lsodium -lmsgpackc -lxxhash -lm -o "$OUT/fuzz_recv"
cp -n "$SRC"/tests/data/gossip-corpus/* "$OUT/corpus/" 2>/dev/null || true
exec "$OUT/fuzz_recv" -max_total_time="$SECS" -max_len=1500 -timeout=10 \
    -artifact_prefix="$OUT/" "$OUT/corpus" "$SRC/tests/data/gossip-corpus"
