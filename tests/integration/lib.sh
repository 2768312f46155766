# tests/integration/lib.sh - helpers for the integration tests, which run
# inside scripts/with-postgres.sh (MAPPER_PG_PORT etc. are set) with
# MAPPER_BIN pointing at the directory holding mapper-coord.
set -uo pipefail

: "${MAPPER_BIN:?MAPPER_BIN not set}"
: "${MAPPER_PG_PORT:?not inside scripts/with-postgres.sh}"
COORD="$MAPPER_BIN/mapper-coord"
export MAPPER_WORKER_BIN="$MAPPER_BIN/mapper-worker"
T_FAILS=0
T_OUT=$(mktemp -d)
trap 'rm -rf "$T_OUT"' EXIT

url() { echo "postgresql://postgres@127.0.0.1:$MAPPER_PG_PORT/$1"; }

# fresh_dbs NAME: new empty source and target databases for one test;
# sets SRC and DST (URLs) and exports them as the default connections.
fresh_dbs() {
    local s="${1}_src" d="${1}_dst"
    psql -q -d postgres -c "DROP DATABASE IF EXISTS $s" -c "DROP DATABASE IF EXISTS $d" \
        -c "CREATE DATABASE $s" -c "CREATE DATABASE $d" >/dev/null
    SRC=$(url "$s") DST=$(url "$d")
    export MAPPER_SOURCE_URL=$SRC MAPPER_TARGET_URL=$DST
}

q() { psql -X -v ON_ERROR_STOP=1 -qAt -d "$1" -c "$2"; }

# checksum URL TABLE: row count and an order-independent digest of rows.
checksum() {
    q "$1" "SELECT count(*) || ':' || coalesce(md5(string_agg(md5(t::text), '' ORDER BY md5(t::text))), '-') FROM $2 t"
}

# checksum_query URL SQL: the same digest over a query's result rows.
checksum_query() {
    checksum "$1" "($2)"
}

ok() { echo "ok - $*"; }
fail() { echo "FAIL - $*"; T_FAILS=$((T_FAILS + 1)); }

# check DESCRIPTION EXPECTED ACTUAL
check() {
    if [ "$2" == "$3" ]; then ok "$1"; else fail "$1: expected '$2', got '$3'"; fi
}

# check_match DESCRIPTION REGEX TEXT
check_match() {
    if [[ "$3" =~ $2 ]]; then ok "$1"; else fail "$1: '$3' does not match /$2/"; fi
}

# run_coord ARGS...: run mapper-coord, capturing stdout, stderr, status.
# One that runs past $MAPPER_TEST_COORD_TIMEOUT seconds (default 600) is
# stopped (SIGTERM, then SIGKILL), and its status is timeout's 124 or 137:
# a hang fails its test instead of holding the whole run until CI's limit.
run_coord() {
    timeout -k 10 "${MAPPER_TEST_COORD_TIMEOUT:-600}" "$COORD" "$@" >"$T_OUT/stdout" 2>"$T_OUT/stderr"
    RC=$?
    if [ "$RC" = 124 ] || [ "$RC" = 137 ]; then
        echo "# run_coord: mapper-coord ran past ${MAPPER_TEST_COORD_TIMEOUT:-600} s and was stopped: $*" >&2
    fi
    OUT=$(cat "$T_OUT/stdout")
    ERR=$(cat "$T_OUT/stderr")
}

# json_field FILE FIELD: one field of a JSON file.
json_field() { jq -r ".$2" "$1"; }

# no_workers_left: no mapper-worker process remains.
no_workers_left() {
    local n
    for _ in $(seq 50); do
        n=$(pgrep -c -f "$MAPPER_BIN/mapper-worker" || true)
        [ "$n" = 0 ] && return 0
        sleep 0.1
    done
    return 1
}

finish() {
    if [ "$T_FAILS" -gt 0 ]; then exit 1; fi
    exit 0
}

# free_port: a loopback TCP port nothing listens on now.
free_port() {
    local p
    for _ in $(seq 100); do
        p=$((20000 + RANDOM % 12000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
        echo "$p"
        return
    done
    return 1
}

# wait_for FILE REGEX [TRIES]: poll (0.05 s) until FILE matches REGEX; by
# default for up to 2 minutes, since a busy machine is slow, not wrong.
wait_for() {
    for _ in $(seq "${3:-2400}"); do
        grep -Eq "$2" "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# Holding a job where a test needs it, instead of racing it: a worker that
# meets MAPPER_FAULT=pause-POINT:CHUNK stops there (any attempt) until the
# test calls release (see copy_fault in worker/copy.h). hold arms the next
# pause; held FILE CHUNK waits until the log FILE says chunk CHUNK is held.
export MAPPER_FAULT_RELEASE="$T_OUT/release"
hold() { rm -f "$MAPPER_FAULT_RELEASE"; }
release() { touch "$MAPPER_FAULT_RELEASE"; }
held() { wait_for "$1" "chunk $2: fault injection at [a-z-]+: pausing"; }

# silent_listener PORT SECS: accept connections on 127.0.0.1:PORT and never
# answer them, for SECS seconds, in the background (its pid: $SILENT_PID).
silent_listener() {
    perl -MIO::Socket::INET -e '
        my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => $ARGV[0],
            Listen => 64, ReuseAddr => 1) or die "listen: $!";
        sleep $ARGV[1]' "$1" "$2" &
    SILENT_PID=$!
}
