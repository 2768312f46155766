#!/usr/bin/env bash
# tests/integration/t_with_postgres.sh - checks scripts/with-postgres.sh: environment and databases,
# exit status, cleanup after failure and SIGTERM, parallel runs, password auth over TCP.
set -uo pipefail
wrap=$(cd "$(dirname "$0")/../.." && pwd)/scripts/with-postgres.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fails=0
check() { # check NAME CMD...: print ok/FAIL for CMD's success
    local name=$1; shift
    if "$@"; then echo "ok - $name"; else echo "FAIL - $name"; fails=$((fails + 1)); fi
}
# gone FILE: the data dir and postmaster pid recorded in FILE (lines 1, 2) no longer exist
gone() {
    local dir pid; { read -r dir; read -r pid; } <"$1" || return 1
    [ -n "$dir" ] && [ ! -e "$dir" ] && [ ! -e "$(dirname "$dir")" ] &&
        ! ps -o stat= -p "$pid" | grep -qv '^Z' && ! pgrep -f -- "$dir" >/dev/null
}
# Helpers run inside the wrapper (exported so `bash -c NAME` sees them).
record() { { echo "$MAPPER_PG_DATADIR"; head -n 1 "$MAPPER_PG_DATADIR/postmaster.pid"; } >"$1"; }
basics() {
    [ "$(psql "$MAPPER_SOURCE_URL" -XAtc 'select 1')" = 1 ] || return 1
    [ "$(psql "$MAPPER_SOURCE_URL" -XAtc 'select current_database()')" = mapper_src ] || return 1
    [ "$(psql "$MAPPER_TARGET_URL" -XAtc 'select current_database()')" = mapper_dst ] || return 1
    $MAPPER_PG_CTL stop -s -m fast && $MAPPER_PG_CTL start -s -w || return 1
    [ "$(psql -XAtc 'select 2')" = 2 ]    # PGHOST/PGPORT/... and same port after restart
}
passwords() {
    psql -XqAtc "create role alice login password 'secret'" || return 1
    local url="postgresql://alice@127.0.0.1:$PGPORT/mapper_src"
    PGPASSWORD=secret psql -w "$url" -XAtc 'select 1' >/dev/null || return 1
    ! PGPASSWORD=wrong psql -w "$url" -XAtc 'select 1' 2>"$1" &&
        grep -q 'password authentication failed' "$1"
}
export -f record basics passwords

check "psql works inside, both databases exist, restart via MAPPER_PG_CTL" \
    "$wrap" bash -c basics </dev/null

"$wrap" bash -c 'record "$1"; exit 7' _ "$work/exit7" </dev/null
check "wrapper exits with CMD's status (7)" [ $? -eq 7 ]
check "after exit 7: no postgres left, temp dir removed" gone "$work/exit7"

"$wrap" bash -c 'record "$1"; exec sleep 300' _ "$work/term" </dev/null &
wpid=$!
for _ in $(seq 100); do [ -s "$work/term" ] && break; sleep 0.3; done
sleep 0.3
kill -TERM "$wpid"
wait "$wpid"
check "SIGTERM: wrapper exits 143" [ $? -eq 143 ]
check "after SIGTERM: no postgres left, temp dir removed" gone "$work/term"

for i in 1 2 3; do
    "$wrap" bash -c 'record "$1"; psql -XAtc "select 1" >/dev/null && echo "$PGPORT" >>"$1"' _ "$work/par$i" </dev/null &
done
wait
check "three parallel runs each get a working server" [ "$(cat "$work"/par? | wc -l)" -eq 9 ]
check "parallel runs use different ports" [ "$(tail -qn 1 "$work"/par? | sort -u | wc -l)" -eq 3 ]
check "parallel runs clean up" eval 'gone "$work/par1" && gone "$work/par2" && gone "$work/par3"'

check "password role over TCP: right password accepted, wrong one rejected" \
    "$wrap" bash -c 'passwords "$1"' _ "$work/pw.err" </dev/null

[ "$fails" -eq 0 ] || { echo "t_with_postgres: $fails failure(s)"; exit 1; }
