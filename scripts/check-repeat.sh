#!/usr/bin/env bash
# scripts/check-repeat.sh N [--load] - run `make check` N times, each in a
# fresh clone of the current commit (HEAD; uncommitted changes are not
# included), optionally with a CPU hog on every core beside it (--load:
# stress-ng, which `make deps` installs). Prints one line per run and ends
# with "N passed, N failed" counted over runs. Each run's output is kept in
# a log file named on its line.
set -uo pipefail

usage() { echo "usage: scripts/check-repeat.sh N [--load]" >&2; exit 2; }
[ $# -ge 1 ] && [[ $1 =~ ^[1-9][0-9]*$ ]] || usage
runs=$1 load=false
shift
for a in "$@"; do
    case $a in
    --load) load=true ;;
    *) usage ;;
    esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
commit=$(git -C "$root" rev-parse HEAD) || exit 2
[ -z "$(git -C "$root" status --porcelain --untracked-files=no)" ] ||
    echo "check-repeat: uncommitted changes are not part of these runs" >&2
if $load && ! command -v stress-ng >/dev/null; then
    make -C "$root" --no-print-directory deps >&2 || exit 2
    command -v stress-ng >/dev/null || { echo "check-repeat: stress-ng is not installed" >&2; exit 2; }
fi
logs=$(mktemp -d "${TMPDIR:-/tmp}/check-repeat.XXXXXX")
hog=""
stop_hog() { [ -n "$hog" ] && kill "$hog" 2>/dev/null && wait "$hog" 2>/dev/null; hog=""; }
trap 'stop_hog' EXIT
trap 'exit 130' INT TERM

echo "check-repeat: $runs run(s) of make check on ${commit:0:12}$($load && echo ", beside stress-ng --cpu $(nproc)"); logs in $logs"
passed=0 failed=0
for i in $(seq "$runs"); do
    dir=$(mktemp -d "${TMPDIR:-/tmp}/check-repeat-clone.XXXXXX")
    log="$logs/run-$i.log"
    if ! git clone -q "$root" "$dir" || ! git -C "$dir" checkout -q "$commit"; then
        echo "run $i: FAILED (could not clone)"; failed=$((failed + 1)); continue
    fi
    if $load; then
        stress-ng --cpu "$(nproc)" --timeout 0 --quiet &
        hog=$!
    fi
    start=$(date +%s)
    (cd "$dir" && make check) >"$log" 2>&1
    rc=$?
    stop_hog
    secs=$(($(date +%s) - start))
    counts=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -1)
    if [ "$rc" -eq 0 ]; then
        echo "run $i: passed (${counts:-no count}) in ${secs} s"
        passed=$((passed + 1))
        rm -rf "$dir"
    else
        echo "run $i: FAILED, exit $rc (${counts:-no count}) in ${secs} s; log $log, clone kept in $dir"
        grep -E '^FAIL' "$log" | head -10 | sed 's/^/    /'
        failed=$((failed + 1))
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
