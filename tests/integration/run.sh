#!/usr/bin/env bash
# tests/integration/run.sh - run every integration test file (t_*.sh) inside
# one throwaway PostgreSQL (started by the caller, scripts/with-postgres.sh),
# except those that start their own. Prints ok/FAIL lines and a count.
set -u
dir=$(dirname "$0")
passed=0 failed=0
for t in "$dir"/t_*.sh; do
    name=$(basename "$t" .sh)
    [ "$name" = t_with_postgres ] && continue
    [ -n "${MAPPER_TEST_ONLY:-}" ] && [[ "$name" != *"$MAPPER_TEST_ONLY"* ]] && continue
    echo "# $name"
    out=$(bash "$t" 2>&1)
    rc=$?
    echo "$out" | grep -E '^(ok|FAIL) ' || true
    p=$(echo "$out" | grep -c '^ok ' || true)
    f=$(echo "$out" | grep -c '^FAIL ' || true)
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "FAIL - $name exited $rc without reporting a failure; its output:"
        echo "$out" | tail -20
        f=1
    elif [ "$f" -gt 0 ]; then # what else it said (a psql error, say) helps
        echo "# $name said, besides its checks (last 20 lines):"
        echo "$out" | grep -v -E '^(ok|FAIL) ' | tail -20 | sed 's/^/#   /'
    fi
    passed=$((passed + p)) failed=$((failed + f))
done
echo "integration: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
