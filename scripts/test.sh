#!/bin/sh
# test.sh: build if needed and run the whole test suite (make check); prints a
# final "N passed, N failed" line counted from the TAP results of every test.
set -u
cd "$(dirname "$0")/.."
if [ ! -f Makefile ]; then scripts/setup.sh --no-build && autoreconf -fi && ./configure || exit 1; fi
make -j"$(nproc)" >/dev/null || { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }
make -j"$(nproc)" check
rc=$?
pass=0; fail=0
for f in $(find tests -name '*.trs' 2>/dev/null); do
    p=$(grep -c '^:test-result: \(PASS\|XFAIL\|SKIP\)' "$f"); x=$(grep -c '^:test-result: \(FAIL\|XPASS\|ERROR\)' "$f")
    pass=$((pass + p)); fail=$((fail + x))
done
if [ "$rc" != 0 ] && [ "$fail" = 0 ]; then fail=1; fi
echo "$pass passed, $fail failed"
exit $rc
