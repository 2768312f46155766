#!/usr/bin/env bash
# tests/run-all.sh BUILD BIN [unit|integration] - run the cmocka unit tests
# and the integration tests against a real, throwaway PostgreSQL, and end
# with one line: "N passed, N failed".
set -u
build=$1 bin=$2 what=${3:-all}
root=$(cd "$(dirname "$0")/.." && pwd)
export MAPPER_BIN="$root/$bin" MAPPER_BUILD="$root/$build"
passed=0 failed=0

if [ "$what" != integration ]; then
    for t in "$build"/tests/test_*; do
        [ -x "$t" ] || continue
        out=$("$t" 2>&1)
        rc=$?
        echo "$out"
        p=$(echo "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -1)
        f=$(echo "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -1)
        [ "$rc" -ne 0 ] && [ -z "$f" ] && f=1
        passed=$((passed + ${p:-0})) failed=$((failed + ${f:-0}))
    done
fi

if [ "$what" != unit ]; then
    out_file=$(mktemp)
    bash "$root/tests/integration/t_with_postgres.sh" >"$out_file" 2>&1
    rc=$?
    cat "$out_file"
    p=$(grep -c '^ok' "$out_file" || true)
    f=$(grep -c '^FAIL' "$out_file" || true)
    [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
    passed=$((passed + p)) failed=$((failed + f))
    "$root/scripts/with-postgres.sh" "$root/tests/integration/run.sh" 2>&1 | tee "$out_file"
    rc=${PIPESTATUS[0]}
    line=$(grep '^integration: ' "$out_file" | tail -1)
    p=$(echo "$line" | sed -n 's/.* \([0-9]*\) passed.*/\1/p')
    f=$(echo "$line" | sed -n 's/.* \([0-9]*\) failed.*/\1/p')
    [ "$rc" -ne 0 ] && [ "${f:-0}" -eq 0 ] && f=1
    passed=$((passed + ${p:-0})) failed=$((failed + ${f:-0}))
    rm -f "$out_file"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
