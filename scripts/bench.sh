#!/usr/bin/env bash
# scripts/bench.sh - benchmark mapper-coord against psql COPY pipes, pgcopydb and pgloader (make bench).
#
# usage: scripts/bench.sh [--bin DIR] [--rows N] [--runs N] [--workers-list W1,W2,..]
#                         [--json FILE] [--only LIST] [--no-install]
#
#   --bin DIR           where mapper-coord and mapper-worker are (default: bin)
#   --rows N            rows in the events table (default 5000000)
#   --runs N            timed runs per contender (default 3)
#   --workers-list L    worker counts to try, comma separated (default: number of CPUs)
#   --json FILE         raw figures and aggregates as JSON (default: build/bench.json)
#   --only LIST         run only these contenders (comma separated):
#                       psql1, psqlpar, pgcopydb, pgloader, mapper, chunks,
#                       stream (mapper-coord --query without --split-by),
#                       onechunk (mapper-coord --workers 1, the table as one chunk,
#                       with its indexes deferred and with --defer-indexes off),
#                       indexes (psql and mapper-coord into a target with the key
#                       and 3 secondary indexes, and mapper-coord --defer-indexes off
#                       into both targets)
#                       nokey (psql, W id ranges, into the same table without its
#                       key: what a load costs before any index; and the same, then
#                       ALTER TABLE ADD PRIMARY KEY: deferring the key by hand;
#                       neither is a baseline)
#                       sweep (mapper-coord at --chunk-size 200, 1000, 5000, 50000,
#                       500000 and 100: wall, coordinator CPU and peak RSS per chunk;
#                       and PostgreSQL alone at 1000, 5000 and 50000: W sessions
#                       loading the chunks from files on the server, one binary
#                       COPY FROM each, what a chunk costs the target by itself)
#                       modes (only when named: the write modes against append:
#                       append into the empty table, replace of the filled table,
#                       upsert of a table missing 10% of the rows and with 10%
#                       changed, the same upsert again with nothing to change)
#   --no-install        do not apt-get install missing pgcopydb / pgloader (skip them)
#
# Set-up (outside the database): installs pgcopydb and pgloader with apt-get when
# missing (root or sudo), then re-executes itself inside scripts/with-postgres.sh
# with the internal flag --in-cluster. There it creates the data set, runs every
# contender --runs times, alternating contenders within each round (the order is
# rotated each round), truncates the target before every run and checks the
# target's row count after every run (and a checksum after each contender's
# first run). A wrong count, or a failing psql/mapper run, is a loud failure
# (exit 1). Targets are reported (met / NOT met), never enforced.
set -euo pipefail
export LC_ALL=C

root=$(cd "$(dirname "$0")/.." && pwd)
self="$root/scripts/bench.sh"

say() { echo "bench: $*" >&2; }
die() {
    echo "bench: $*" >&2
    exit 1
}
usage() {
    sed -n '4,28p' "$self" | sed 's/^# \{0,1\}//'
    exit "${1:-2}"
}

# ---------------------------------------------------------------- options
bin=bin rows=5000000 runs=3 workers_list="" json="" only="" install=true in_cluster=false
while [ $# -gt 0 ]; do
    case $1 in
    --bin) bin=${2:?--bin needs a value}; shift 2 ;;
    --rows) rows=${2:?--rows needs a value}; shift 2 ;;
    --runs) runs=${2:?--runs needs a value}; shift 2 ;;
    --workers-list | --workers) workers_list=${2:?$1 needs a value}; shift 2 ;;
    --json) json=${2:?--json needs a value}; shift 2 ;;
    --only) only=${2:?--only needs a value}; shift 2 ;;
    --no-install) install=false; shift ;;
    --in-cluster) in_cluster=true; shift ;;
    -h | --help) usage 0 ;;
    *) echo "bench: unknown option: $1" >&2; usage 2 ;;
    esac
done
cpus=$(nproc)
[ -n "$workers_list" ] || workers_list=$cpus
[[ $rows =~ ^[1-9][0-9]*$ ]] || die "--rows must be a positive integer"
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer"
[[ $workers_list =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--workers-list must look like 2,4,8"
[[ $only =~ ^[a-z0-9,]*$ ]] || die "--only must be a comma-separated list"
IFS=, read -r -a workers_arr <<<"$workers_list"

# ------------------------------------------------------- set-up (outside)
# install_tool PKG: apt-get install PKG when its command is missing; on failure
# the reason is exported as BENCH_WHY_<PKG> for the in-cluster phase to print.
install_tool() {
    local pkg=$1 sudo="" out var="BENCH_WHY_$1"
    command -v "$pkg" >/dev/null && return 0
    if ! $install; then
        export "$var=not installed (--no-install given)"
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
            sudo="sudo -n"
        else
            export "$var=not installed, and cannot apt-get install it (not root, no password-less sudo)"
            return 0
        fi
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        say "apt-get update (no candidate for $pkg yet)"
        $sudo apt-get -o DPkg::Lock::Timeout=120 update -qq >/dev/null 2>&1 || true
    fi
    say "installing $pkg with apt-get"
    if ! out=$($sudo apt-get -o DPkg::Lock::Timeout=120 install -y -qq --no-install-recommends "$pkg" 2>&1); then
        export "$var=apt-get install $pkg failed: $(echo "$out" | grep -v '^\s*$' | tail -n 1)"
        return 0
    fi
    command -v "$pkg" >/dev/null || export "$var=apt-get install $pkg succeeded but no '$pkg' command on PATH"
}

if ! $in_cluster; then
    bin=$(cd "$bin" 2>/dev/null && pwd) || die "--bin: no such directory"
    { [ -x "$bin/mapper-coord" ] && [ -x "$bin/mapper-worker" ]; } ||
        die "no mapper-coord / mapper-worker in $bin (run make all)"
    command -v psql >/dev/null || die "psql is not installed (make deps)"
    command -v jq >/dev/null || die "jq is not installed (make deps)"
    [ -n "$json" ] || json="$root/build/bench.json"
    mkdir -p "$(dirname "$json")"
    json="$(cd "$(dirname "$json")" && pwd)/$(basename "$json")"
    want() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }
    want pgcopydb && install_tool pgcopydb
    want pgloader && install_tool pgloader
    exec "$root/scripts/with-postgres.sh" "$self" --in-cluster --bin "$bin" --rows "$rows" \
        --runs "$runs" --workers-list "$workers_list" --json "$json" ${only:+--only "$only"}
fi

# ------------------------------------------------- in-cluster: helpers
: "${MAPPER_PG_PORT:?--in-cluster is internal: run scripts/bench.sh without it}"
SRC=$MAPPER_SOURCE_URL DST=$MAPPER_TARGET_URL
export MAPPER_WORKER_BIN="$bin/mapper-worker"
work=$(mktemp -d "${TMPDIR:-/tmp}/bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
runs_jsonl=$work/runs.jsonl contenders_jsonl=$work/contenders.jsonl
: >"$runs_jsonl"
: >"$contenders_jsonl"
failures=0

q() { psql -X -q -v ON_ERROR_STOP=1 -At -d "$1" -c "$2"; }
want() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
oneline() { tr -s '\n\t ' '   ' <"$1" | tail -c 300; }
# why_failed LOG: the most telling line of a failed tool's output.
why_failed() {
    local line
    line=$(grep -i -m1 -E 'heap exhausted|fatal|error' "$1" | tr -s '\t ' '  ' | cut -c1-300)
    echo "${line:-$(oneline "$1")}"
}

ddl="CREATE TABLE events(id bigint PRIMARY KEY, account_id int NOT NULL,
     created_at timestamptz NOT NULL, amount numeric(12,2), status text,
     payload jsonb, note text)"
# events_ix: the same table with 3 secondary indexes beside its key.
ddl_ix="${ddl/events(/events_ix(};
        CREATE INDEX events_ix_account ON events_ix(account_id);
        CREATE INDEX events_ix_created ON events_ix(created_at);
        CREATE INDEX events_ix_status ON events_ix(status, amount)"
# events_nokey: the same table without its key (the nokey contender).
ddl_nokey="${ddl/events(/events_nokey(}"
ddl_nokey="${ddl_nokey/ PRIMARY KEY/ NOT NULL}"
# events_byhand: likewise; the byhand contender adds the key after its load.
ddl_byhand="${ddl_nokey/events_nokey(/events_byhand(}"
checksum_sql="SELECT count(*) || ':' || coalesce(sum(hashtext(e::text)), 0) FROM events e"
# target_of KIND: the table a contender loads.
target_of() {
    case $1 in
    *ix) echo events_ix ;;
    *nokey) echo events_nokey ;;
    *byhand) echo events_byhand ;;
    *) echo events ;;
    esac
}

create_dataset() {
    say "creating $rows rows in mapper_src.events"
    local t0=$EPOCHREALTIME
    psql -X -q -v ON_ERROR_STOP=1 -d "$SRC" -c "$ddl" -c "
        INSERT INTO events
        SELECT g, g % 1000, timestamptz '2024-01-01' + g * interval '1 second',
               (g % 100000) / 100.0, (ARRAY['new','paid','shipped','void'])[1 + g % 4],
               jsonb_build_object('n', g, 'tag', 't' || g % 10, 'ok', g % 3 = 0),
               md5(g::text)
        FROM generate_series(1, $rows) g" -c "VACUUM ANALYZE events" >/dev/null
    q "$DST" "$ddl" >/dev/null
    psql -X -q -v ON_ERROR_STOP=1 -d "$DST" -c "$ddl_ix" -c "$ddl_nokey" -c "$ddl_byhand" >/dev/null
    src_sum=$(q "$SRC" "$checksum_sql")
    read -r id_min id_max < <(q "$SRC" "SELECT min(id), max(id) FROM events" | tr '|' ' ')
    table_bytes=$(q "$SRC" "SELECT pg_table_size('events')")
    say "data set ready in $(secs "$t0" "$EPOCHREALTIME") s ($((table_bytes / 1048576)) MB)"
}

# reset_target: empty the target table (and mapper's ledger), flush dirty buffers.
reset_target() {
    q "$DST" "TRUNCATE events, events_ix, events_nokey, events_byhand" >/dev/null
    q "$DST" "ALTER TABLE events_byhand DROP CONSTRAINT IF EXISTS events_byhand_pkey" >/dev/null
    q "$DST" "DROP SCHEMA IF EXISTS mapper CASCADE" >/dev/null 2>&1
    q "$DST" "CHECKPOINT" >/dev/null
}

# ------------------------------------------------- contenders
# Each run_<kind> W [CHUNK] runs one copy (source -> empty target) with its
# output in $log and returns the tool's status. describe_<kind> prints the
# command for the table's JSON.

psql_pipe() { # psql_pipe SELECT-OR-TABLE [TARGET]: one binary COPY stream source -> target
    psql -X -q -v ON_ERROR_STOP=1 -d "$SRC" -c "COPY $1 TO STDOUT (FORMAT binary)" |
        psql -X -q -v ON_ERROR_STOP=1 -d "$DST" -c "COPY ${2:-events} FROM STDIN (FORMAT binary)"
}
describe_psql1ix() {
    echo "psql -c 'COPY events TO STDOUT (FORMAT binary)' | psql -c 'COPY events_ix FROM STDIN (FORMAT binary)'"
}
run_psql1ix() { psql_pipe events events_ix; }

describe_psql1() {
    echo "psql -c 'COPY events TO STDOUT (FORMAT binary)' | psql -c 'COPY events FROM STDIN (FORMAT binary)'"
}
run_psql1() { psql_pipe events; }

describe_psqlpar() {
    echo "$1 concurrent: psql -c 'COPY (SELECT * FROM events WHERE id >= LO AND id < HI) TO STDOUT (FORMAT binary)' | psql -c 'COPY events FROM STDIN (FORMAT binary)'"
}
run_psqlpar() { # run_psqlpar W [-] [TARGET]
    local w=$1 i lo hi step pids=() rc=0
    step=$(((id_max - id_min + w) / w))
    for ((i = 0; i < w; i++)); do
        lo=$((id_min + i * step)) hi=$((id_min + (i + 1) * step))
        ((i == w - 1)) && hi=$((id_max + 1))
        psql_pipe "(SELECT * FROM events WHERE id >= $lo AND id < $hi)" "${3:-events}" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    return "$rc"
}
describe_psqlparnokey() { describe_psqlpar "$1" | sed 's/COPY events FROM/COPY events_nokey FROM/'; }
run_psqlparnokey() { run_psqlpar "$1" - events_nokey; }
describe_psqlbyhand() {
    echo "$(describe_psqlpar "$1" | sed 's/COPY events FROM/COPY events_byhand FROM/'); then psql -c 'ALTER TABLE events_byhand ADD PRIMARY KEY (id)'"
}
run_psqlbyhand() { run_psqlpar "$1" - events_byhand && q "$DST" "ALTER TABLE events_byhand ADD PRIMARY KEY (id)"; }

# PostgreSQL alone (the sweep): the rows of each chunk in a file on the
# server, written by the source before the clock starts (once per chunk
# size); W sessions then load their share of the files, one binary COPY
# FROM (one transaction) each. No source, relay or ledger: what loading a
# chunk costs the target by itself.
pgfiles_dir() { echo "$work/pgfiles-$1"; }
pgfiles_count() { echo $(((id_max - id_min + $1) / $1)); }
prep_pgfiles() { # prep_pgfiles W CHUNK
    local dir k n lo
    dir=$(pgfiles_dir "$2") n=$(pgfiles_count "$2")
    [ -f "$dir/ready" ] && return 0
    mkdir -p "$dir" && chmod 0777 "$dir" && chmod o+x "$work" || return 1
    for ((k = 0; k < n; k++)); do
        lo=$((id_min + k * $2))
        echo "COPY (SELECT * FROM events WHERE id >= $lo AND id < $((lo + $2))) TO '$dir/$k' (FORMAT binary);"
    done | psql -X -q -v ON_ERROR_STOP=1 -d "$SRC" && touch "$dir/ready"
}
describe_pgfiles() {
    echo "$1 concurrent: psql -c \"COPY events FROM 'FILE' (FORMAT binary)\" for each of its share of $(pgfiles_count "$2") files of $2 rows (written by COPY (SELECT * FROM events WHERE id >= LO AND id < HI) TO 'FILE' (FORMAT binary) before the clock starts), one statement and transaction each"
}
run_pgfiles() { # run_pgfiles W CHUNK
    local w=$1 dir n i k pids=() rc=0
    dir=$(pgfiles_dir "$2") n=$(pgfiles_count "$2")
    for ((i = 0; i < w; i++)); do
        for ((k = i * n / w; k < (i + 1) * n / w; k++)); do
            echo "COPY events FROM '$dir/$k' (FORMAT binary);"
        done | psql -X -q -v ON_ERROR_STOP=1 -d "$DST" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    return "$rc"
}

pgcopydb_split_size() { # pgcopydb_split_size W: a threshold that cuts the table in W parts
    local w=$1
    echo $(((table_bytes + w * 1024 - 1) / (w * 1024)))kB
}
describe_pgcopydb() {
    echo "pgcopydb copy table-data --source \$SRC --target \$DST --dir WORKDIR --table-jobs $1 --split-tables-larger-than $(pgcopydb_split_size "$1")"
}
run_pgcopydb() {
    local w=$1
    pgcopydb copy table-data --source "$SRC" --target "$DST" --dir "$work/pgcopydb" \
        --table-jobs "$w" --split-tables-larger-than "$(pgcopydb_split_size "$w")"
}

pgloader_file() { # pgloader_file W: the load command file
    local w=$1 f=$work/pgloader-$1.load
    cat >"$f" <<EOF
LOAD DATABASE
     FROM pgsql://postgres@127.0.0.1:$MAPPER_PG_PORT/mapper_src
     INTO pgsql://postgres@127.0.0.1:$MAPPER_PG_PORT/mapper_dst
WITH data only, truncate, workers = $w, concurrency = $w, prefetch rows = 25000
INCLUDING ONLY TABLE NAMES MATCHING 'events' IN SCHEMA 'public';
EOF
    echo "$f"
}
describe_pgloader() {
    echo "pgloader --dynamic-space-size $(pgloader_heap_mb) --root-dir WORKDIR FILE, FILE = $(tr -s '\n ' '  ' <"$(pgloader_file "$1")" | sed "s/:$MAPPER_PG_PORT/:PORT/g")"
}
# pgloader's Lisp heap (SBCL --dynamic-space-size, MB): the Debian build's 1 GB
# default is exhausted ("Heap exhausted, game over") by 1,000,000 rows, so give
# it half the available memory, at most 8 GB; fewer prefetched rows (25000,
# not 100000) also keep its memory down.
pgloader_heap_mb() {
    awk '/^MemAvailable:/ { mb = int($2 / 1024 / 2); if (mb > 8192) mb = 8192;
                            if (mb < 1024) mb = 1024; print mb }' /proc/meminfo
}
run_pgloader() {
    local f
    f=$(pgloader_file "$1")
    pgloader --dynamic-space-size "$(pgloader_heap_mb)" --root-dir "$work/pgloader" "$f"
}

describe_mapper() {
    echo "mapper-coord --source \$SRC --target \$DST --table events --workers $1${2:+ --chunk-size $2} --summary-json FILE -q"
}
run_mapper() {
    "$bin/mapper-coord" --source "$SRC" --target "$DST" --table events --workers "$1" \
        ${2:+--chunk-size "$2"} --summary-json "$work/summary.json" -q "${@:3}"
}
describe_mapperix() {
    echo "mapper-coord --source \$SRC --target \$DST --table events --target-table events_ix --workers $1 --summary-json FILE -q"
}
run_mapperix() { "$bin/mapper-coord" --source "$SRC" --target "$DST" --table events \
    --target-table events_ix --workers "$1" --summary-json "$work/summary.json" -q "${@:3}"; }
describe_mapperoff() {
    echo "mapper-coord --source \$SRC --target \$DST --table events --workers $1${2:+ --chunk-size $2} --defer-indexes off --summary-json FILE -q"
}
run_mapperoff() { run_mapper "$1" "$2" --defer-indexes off; }
describe_mapperoffix() {
    echo "mapper-coord --source \$SRC --target \$DST --table events --target-table events_ix --workers $1 --defer-indexes off --summary-json FILE -q"
}
run_mapperoffix() { run_mapperix "$1" "" --defer-indexes off; }

# The write modes (--only modes). prep_<kind>, when there is one, fills the
# target after it was emptied and before the clock starts.
fill_target() { # fill_target [WHERE]: the source's rows (those matching) into the target
    psql_pipe "(SELECT * FROM events ${1:-})" >/dev/null &&
        q "$DST" "VACUUM ANALYZE events" >/dev/null && q "$DST" "CHECKPOINT" >/dev/null
}
describe_mapperreplace() { echo "$(describe_mapper "$1" "$2") --mode replace (target filled with the source's rows)"; }
prep_mapperreplace() { fill_target; }
run_mapperreplace() { run_mapper "$1" "$2" --mode replace; }
describe_mapperupsert() {
    echo "$(describe_mapper "$1" "$2") --mode upsert --key id (target missing the last 10% of the ids, note changed on every tenth id)"
}
prep_mapperupsert() {
    psql_pipe "(SELECT * FROM events WHERE id <= $((id_max - rows / 10)))" >/dev/null &&
        q "$DST" "UPDATE events SET note = 'changed' WHERE id % 10 = 0" >/dev/null &&
        q "$DST" "VACUUM ANALYZE events" >/dev/null && q "$DST" "CHECKPOINT" >/dev/null
}
run_mapperupsert() { run_mapper "$1" "$2" --mode upsert --key id; }
describe_mapperupsert0() { echo "$(describe_mapper "$1" "$2") --mode upsert --key id (target equal to the source)"; }
prep_mapperupsert0() { fill_target; }
run_mapperupsert0() { run_mapperupsert "$@"; }
describe_mapperq() {
    echo "mapper-coord --source \$SRC --target \$DST --query 'SELECT * FROM events' --target-table events --workers $1 --summary-json FILE -q"
}
run_mapperq() { # stream mode: one reader, W writers
    "$bin/mapper-coord" --source "$SRC" --target "$DST" --query "SELECT * FROM events" \
        --target-table events --workers "$1" --summary-json "$work/summary.json" -q
}

# The chunk-size sweep (--only sweep): what a chunk costs the coordinator.
sweep_sizes="200 1000 5000 50000 500000 100"
sweep_alone_sizes="1000 5000 50000"

# ------------------------------------------------- the contender list
# One line per contender: KEY KIND W CHUNK LABEL ("-" = none).
contenders=()
add() { contenders+=("$1|$2|$3|$4|$5"); }
want psql1 && add psql1 psql1 1 - "psql COPY binary, 1 stream"
want onechunk && add mapper-one mapper 1 "$rows" "mapper-coord --workers 1, one chunk"
want onechunk && add mapper-one-off mapperoff 1 "$rows" "mapper-coord one chunk, defer off"
want indexes && add psql1ix psql1ix 1 - "psql COPY binary, key + 3 indexes"
for w in "${workers_arr[@]}"; do
    want psqlpar && add "psqlpar-$w" psqlpar "$w" - "psql COPY binary, $w id range$( ((w > 1)) && echo s)"
    want nokey && add "psqlparnokey-$w" psqlparnokey "$w" - "psql, $w range$( ((w > 1)) && echo s), table without key"
    want nokey && add "psqlbyhand-$w" psqlbyhand "$w" - "psql, $w range$( ((w > 1)) && echo s), then add the key"
    want pgcopydb && add "pgcopydb-$w" pgcopydb "$w" - "pgcopydb copy table-data"
    want pgloader && add "pgloader-$w" pgloader "$w" - "pgloader (data only)"
    want mapper && add "mapper-$w" mapper "$w" - "mapper-coord"
    want stream && add "mapperq-$w" mapperq "$w" - "mapper-coord --query (stream mode)"
    if want indexes; then
        add "mapperoff-$w" mapperoff "$w" - "mapper-coord --defer-indexes off"
        add "mapperix-$w" mapperix "$w" - "mapper-coord, key + 3 indexes"
        add "mapperoffix-$w" mapperoffix "$w" - "mapper-coord off, key + 3 indexes"
    fi
    if want chunks; then
        add "mapper-c5000-$w" mapper "$w" 5000 "mapper-coord --chunk-size 5000"
        add "mapper-c100000-$w" mapper "$w" 100000 "mapper-coord --chunk-size 100000"
    fi
    if [[ ",$only," == *",modes,"* ]]; then
        add "mode-append-$w" mapper "$w" - "append, empty target"
        add "mode-replace-$w" mapperreplace "$w" - "replace, full target"
        add "mode-upsert-$w" mapperupsert "$w" - "upsert, 10% changed + 10% new"
        add "mode-upsert0-$w" mapperupsert0 "$w" - "upsert again, nothing changed"
    fi
    if want sweep; then
        for c in $sweep_sizes; do
            add "mapper-s$c-$w" mapper "$w" "$c" "mapper-coord --chunk-size $c"
        done
        for c in $sweep_alone_sizes; do
            add "pgfiles-$c-$w" pgfiles "$w" "$c" "PostgreSQL alone, $c-row COPYs"
        done
    fi
done
[ ${#contenders[@]} -gt 0 ] || die "--only selected no contender"

declare -A status reason checked
# skip KEY REASON: the contender is not run (printed and recorded).
skip() {
    status[$1]=skipped reason[$1]=$2
    say "skipping $1: $2"
}
# failed KEY REASON: a loud failure; the run exits 1 at the end.
failed() {
    status[$1]=failed reason[$1]=$2
    failures=$((failures + 1))
    {
        echo "bench: ################################################################"
        echo "bench: FAILURE: $1: $2"
        echo "bench: ################################################################"
    } >&2
}

# tool_missing KIND: why an external contender cannot run (empty when it can).
tool_missing() {
    local var="BENCH_WHY_$1"
    if ! command -v "$1" >/dev/null; then
        echo "${!var:-$1 is not installed}"
    fi
}

# timed_run SPEC ROUND: reset the target, run one contender, check the target.
timed_run() {
    local key kind w chunk label t0 t1 rc n sum summary=null
    IFS='|' read -r key kind w chunk label <<<"$1"
    [ "$chunk" = - ] && chunk=""
    log=$work/$key.$2.log
    reset_target
    if declare -F "prep_$kind" >/dev/null && ! "prep_$kind" "$w" "$chunk" >"$log" 2>&1; then
        failed "$key" "preparing the target failed: $(why_failed "$log")"
        return 0
    fi
    rm -rf "$work/pgcopydb" "$work/summary.json"
    say "round $2/$runs: $label (W=$w)"
    t0=$EPOCHREALTIME
    "run_$kind" "$w" "$chunk" >"$log" 2>&1 && rc=0 || rc=$?
    t1=$EPOCHREALTIME
    if [ "$rc" -ne 0 ]; then
        # An external tool that fails (here, in this set-up) is skipped, its
        # times dropped; psql or mapper failing is a failure of the benchmark.
        if [[ $kind == pgcopydb || $kind == pgloader ]]; then
            skip "$key" "$kind exited $rc on run $2: $(why_failed "$log")"
        else
            failed "$key" "exited $rc: $(why_failed "$log")"
        fi
        return 0
    fi
    local tbl
    tbl=$(target_of "$kind")
    n=$(q "$DST" "SELECT count(*) FROM $tbl")
    if [ "$n" != "$rows" ]; then
        failed "$key" "target has $n rows after the run, expected $rows$( [ -s "$log" ] && echo " (log: $(oneline "$log"))")"
        return 0
    fi
    if [ -z "${checked[$key]:-}" ]; then
        sum=$(q "$DST" "${checksum_sql/FROM events e/FROM $tbl e}")
        if [ "$sum" != "$src_sum" ]; then
            failed "$key" "target checksum $sum differs from the source's $src_sum"
            return 0
        fi
        checked[$key]=1
    fi
    if [[ $kind == mapper* ]]; then
        summary=$(jq -c . "$work/summary.json" 2>/dev/null) || summary=null
        if [ "$(jq -r '.total_rows_successful // empty' <<<"$summary")" != "$rows" ]; then
            failed "$key" "summary JSON does not report $rows rows successful: $summary"
            return 0
        fi
    fi
    jq -nc --arg key "$key" --argjson round "$2" --arg s "$(secs "$t0" "$t1")" \
        --argjson summary "$summary" \
        '{key: $key, round: $round, seconds: ($s | tonumber), summary: $summary}' >>"$runs_jsonl"
    local note=""
    [ "$kind" = pgcopydb ] && note=$(grep -o -m1 "[0-9]* COPY processes will be used" "$log" || true)
    say "  $(secs "$t0" "$t1") s${note:+ ($note)}"
}

# ------------------------------------------------- run
pg_version=$(q "$SRC" "SHOW server_version" | cut -d" " -f1)
tool_versions=$(
    for t in pgcopydb pgloader; do
        command -v "$t" >/dev/null || continue
        printf '%s\t%s\n' "$t" "$("$t" --version 2>/dev/null | grep -o -m1 'version "\{0,1\}[0-9][^" ]*' | tr -d '"' | cut -d" " -f2)"
    done | jq -Rn '[inputs | split("\t") | {(.[0]): .[1]}] | add // {}'
)
say "$rows rows, $runs run(s) per contender, W = $workers_list, $cpus CPUs, PostgreSQL $pg_version"
create_dataset

for spec in "${contenders[@]}"; do
    IFS='|' read -r key kind _ _ _ <<<"$spec"
    status[$key]=ok reason[$key]=""
    case $kind in
    pgcopydb | pgloader)
        why=$(tool_missing "$kind")
        [ -n "$why" ] && skip "$key" "$why"
        ;;
    esac
done

n=${#contenders[@]}
for ((round = 1; round <= runs; round++)); do
    for ((j = 0; j < n; j++)); do # rotate the order each round
        spec=${contenders[$(((j + round - 1) % n))]}
        key=${spec%%|*}
        [ "${status[$key]}" = ok ] || continue
        timed_run "$spec" "$round"
    done
done
reset_target

# ------------------------------------------------- results
for spec in "${contenders[@]}"; do
    IFS='|' read -r key kind w chunk label <<<"$spec"
    [ "$chunk" = - ] && chunk=""
    jq -nc --arg key "$key" --arg kind "$kind" --argjson w "$w" --arg chunk "$chunk" \
        --arg lbl "$label" --arg status "${status[$key]}" --arg reason "${reason[$key]}" \
        --arg command "$("describe_$kind" "$w" "$chunk")" \
        '{key: $key, kind: $kind, "label": $lbl, workers: $w,
          chunk_size: (if $chunk == "" then null else ($chunk | tonumber) end),
          status: $status, reason: (if $reason == "" then null else $reason end),
          command: $command}' >>"$contenders_jsonl"
done

jq -n --slurpfile c "$contenders_jsonl" --slurpfile r "$runs_jsonl" \
    --argjson rows "$rows" --argjson runs "$runs" --argjson cpus "$cpus" \
    --arg workers "$workers_list" --arg pg "$pg_version" --argjson failures "$failures" \
    --argjson tools "$tool_versions" --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" '
def median: sort | if length == 0 then null
    elif length % 2 == 1 then .[length / 2 | floor]
    else (.[length / 2 - 1] + .[length / 2]) / 2 end;
def r3: if . == null then null else (. * 1000 | round) / 1000 end;
($c | map(. as $k | ($r | map(select(.key == $k.key))) as $mine
    | $k + {runs: ($mine | map({round, seconds, summary}))}
    | if (.runs | length) > 0 and .status == "ok" then
        (.runs | map(.seconds)) as $s
        | . + {median_s: ($s | median), min_s: ($s | min), max_s: ($s | max),
               rows_per_s: ($rows / ($s | median) | round)}
      else . + {median_s: null, min_s: null, max_s: null, rows_per_s: null} end
    | if (.kind | startswith("mapper")) and .median_s != null then
        (.runs | map(.summary)) as $m
        | . + {mapper: {
            coord_max_rss_kb: ($m | map(.coord_max_rss_kb) | max),
            chunks: ($m | map(.chunks_total) | max),
            worker_max_rss_kb: ($m | map(.worker_max_rss_kb) | max),
            coord_cpu_s: ($m | map(.coord_cpu_s) | median | r3),
            workers_cpu_s: ($m | map(.workers_cpu_s) | median | r3),
            coord_cpu_share: ($m | map(.coord_cpu_s / ([.coord_cpu_s + .workers_cpu_s, 1e-9] | max)) | median),
            planning_s: ($m | map(.planning_s) | median | r3),
            elapsed_s: ($m | map(.elapsed_s) | median | r3),
            index_build_s: ($m | map(.index_build_s // 0) | median | r3),
            planning_share: ($m | map(.planning_s / ([.elapsed_s, 1e-9] | max)) | median)}}
      else . end)) as $all
| ($all | map(select(.kind == "psql1" or .kind == "psqlpar") | select(.median_s != null))) as $psql
| def base($w): [$psql[] | select(.kind == "psql1" or .workers == $w) | .median_s] | min;
  def find($kind; $w; $chunk): first($all[] | select(.kind == $kind and .workers == $w
        and .chunk_size == $chunk and .median_s != null)) // null;
  ($workers | split(",") | map(tonumber)) as $ws
| ($all | map(. + {ratio_to_best_psql:
        (if .median_s == null then null
         elif .kind == "psql1" then ([$psql[].median_s] | min) as $b | (.median_s / $b)
         elif (.kind | endswith("ix")) then (first($all[] | select(.kind == "psql1ix") | .median_s) // null) as $b
             | if $b == null then null else .median_s / $b end
         else base(.workers) as $b | if $b == null then null else .median_s / $b end end)})) as $all
| ($all | map(. as $k | if (.key | startswith("mode-")) then
        (first($all[] | select(.key == "mode-append-\($k.workers)") | .median_s) // null) as $b
        | . + {ratio_to_append: (if $b == null or .median_s == null then null else .median_s / $b end)}
      else . end)) as $all
| (first($all[] | select(.kind == "psql1" and .median_s != null)) // null) as $p1
| (find("mapper"; 1; $rows)) as $one
| {date: $date, rows: $rows, runs: $runs, cpus: $cpus, workers_list: $ws,
   postgresql: $pg, tools: $tools, failures: $failures, contenders: $all,
   one_chunk_vs_psql1: (if $one == null or $p1 == null then null
                        else $one.median_s / $p1.median_s end),
   targets: [$ws[] as $w
     | find("mapper"; $w; null) as $m
     | base($w) as $b
     | find("pgcopydb"; $w; null) as $pc
     | find("pgloader"; $w; null) as $pl
     | find("mapper"; $w; 5000) as $c5 | find("mapper"; $w; 100000) as $c100
     | find("mapper"; $w; 1000) as $s1k | find("mapper"; $w; 50000) as $s50k
     | find("mapper"; $w; 100) as $s100
     | find("pgfiles"; $w; 1000) as $a1k | find("pgfiles"; $w; 50000) as $a50k
     | def t($name; $value; $limit; $detail):
         {workers: $w, name: $name, value: $value, limit: $limit,
          met: (if $value == null then null else $value <= $limit end), detail: $detail};
       def ratio($a; $b): if $a == null or $b == null then null else $a.median_s / $b end;
       t("mapper vs best psql baseline (x)"; ratio($m; $b); 0.85;
         "\($m.median_s // "-") s vs \($b // "-") s"),
       (find("psqlbyhand"; $w; null) as $h
        | t("mapper vs the key deferred by hand (x)"; ratio($m; $h.median_s); 1.0;
            "\($m.median_s // "-") s vs \($h.median_s // "-") s"),
          t("key deferred by hand vs best psql (x)"; ratio($h; $b); 0.85;
            "the same PostgreSQL work as mapper-coord, driven by psql")),
       (find("mapperix"; $w; null) as $mx | find("psql1ix"; 1; null) as $px
        | t("mapper vs psql, key + 3 indexes (x)"; ratio($mx; $px.median_s); 0.85;
            "\($mx.median_s // "-") s vs \($px.median_s // "-") s")),
       (find("mapperoff"; $w; null) as $mo
        | t("deferred vs kept indexes, key (x)"; ratio($m; $mo.median_s); 1.0;
            "\($m.median_s // "-") s vs \($mo.median_s // "-") s")),
       (find("mapperix"; $w; null) as $mx | find("mapperoffix"; $w; null) as $mo
        | t("deferred vs kept, key + 3 indexes (x)"; ratio($mx; $mo.median_s); 1.0;
            "\($mx.median_s // "-") s vs \($mo.median_s // "-") s")),
       t("mapper vs pgcopydb (x)"; ratio($m; $pc.median_s); 0.85;
         "\($m.median_s // "-") s vs \($pc.median_s // "-") s"),
       t("mapper vs pgloader (x)"; ratio($m; $pl.median_s); 0.4;
         "\($m.median_s // "-") s vs \($pl.median_s // "-") s"),
       t("coordinator CPU share of job CPU (%)"; ($m.mapper.coord_cpu_share // null | if . == null then null else . * 100 end); 2;
         "coord \($m.mapper.coord_cpu_s // "-") s, workers \($m.mapper.workers_cpu_s // "-") s"),
       t("coordinator peak RSS (MB)"; ($m.mapper.coord_max_rss_kb // null | if . == null then null else . / 1024 end); 32;
         "\($m.mapper.coord_max_rss_kb // "-") kB"),
       t("largest worker peak RSS (MB)"; ($m.mapper.worker_max_rss_kb // null | if . == null then null else . / 1024 end); 32;
         "\($m.mapper.worker_max_rss_kb // "-") kB"),
       t("planning share of wall time (%)"; ($m.mapper.planning_share // null | if . == null then null else . * 100 end); 3;
         "planning \($m.mapper.planning_s // "-") s of \($m.mapper.elapsed_s // "-") s"),
       t("chunk-size 5000 vs 100000 (x)"; ratio($c5; $c100.median_s); 1.15;
         "\($c5.median_s // "-") s vs \($c100.median_s // "-") s"),
       t("chunk-size 1000 vs 50000 (x)"; ratio($s1k; $s50k.median_s); 1.15;
         "\($s1k.median_s // "-") s vs \($s50k.median_s // "-") s"),
       t("PostgreSQL alone, 1000 vs 50000 (x)"; ratio($a1k; $a50k.median_s); 1.15;
         "\($a1k.median_s // "-") s vs \($a50k.median_s // "-") s"),
       t("1000 vs 50000 over PostgreSQL alone (x)";
         (if $s1k == null or $s50k == null or $a1k == null or $a50k == null then null
          else ($s1k.median_s / $s50k.median_s) / ($a1k.median_s / $a50k.median_s) end); 1.15;
         "mapper-coord ratio over the ratio of the same loads by PostgreSQL alone"),
       t("coord CPU per chunk at 100 (us)";
         ($s100.mapper // null | if . == null then null else .coord_cpu_s / .chunks * 1e6 end); 50;
         "\($s100.mapper.coord_cpu_s // "-") s over \($s100.mapper.chunks // "-") chunks"),
       t("coord RSS at 100 over 32 MB (B/chunk)";
         ($s100.mapper // null | if . == null then null else (.coord_max_rss_kb * 1024 - 33554432) / .chunks end); 128;
         "\($s100.mapper.coord_max_rss_kb // "-") kB over \($s100.mapper.chunks // "-") chunks")]}
' >"$json.tmp"
mv "$json.tmp" "$json"

# ------------------------------------------------- the table
{
    echo
    echo "mapper bench: $rows rows, $runs run(s) each, $cpus CPUs, PostgreSQL $pg_version"
    echo
    printf '%-34s %4s %9s %9s %9s %11s %9s\n' contender W "median s" "min s" "max s" "rows/s" "vs psql"
    jq -r '.contenders[] | [.label, .workers, .status, (.reason // ""),
        (.median_s // ""), (.min_s // ""), (.max_s // ""), (.rows_per_s // ""),
        (.ratio_to_best_psql // "")] | map(tostring) | join("\u001f")' "$json" |
        while IFS=$'\x1f' read -r label w st why med mn mx rps ratio; do
            if [ "$st" = ok ]; then
                if [ -z "$ratio" ] || [ "$ratio" = null ]; then ratio=-; else ratio=$(printf '%.2fx' "$ratio"); fi
                printf '%-34s %4s %9.3f %9.3f %9.3f %11d %9s\n' \
                    "$label" "$w" "$med" "$mn" "$mx" "$rps" "$ratio"
            else
                printf '%-34s %4s %s: %s\n' "$label" "$w" "${st^^}" "$why"
            fi
        done
    echo "(vs psql: median / the best psql baseline median at the same W, 1 stream or W ranges;"
    echo " key + 3 indexes: median / psql's into that table; the table without key and ADD PRIMARY KEY after it are compared, never baselines)"
    jq -r 'if .one_chunk_vs_psql1 == null then empty else
        "mapper-coord --workers 1, one chunk vs psql COPY binary, 1 stream: \(.one_chunk_vs_psql1 * 1000 | round / 1000)x (target <= 0.97)" end' "$json"
    if jq -e '[.contenders[] | select(.mapper)] | length > 0' "$json" >/dev/null; then
        echo
        printf '%-34s %4s %10s %10s %9s %9s %7s %9s %7s %9s\n' "mapper resources" W \
            "coord MB" "worker MB" "coord s" "workers s" "coord%" "plan s" "plan%" "rebuild s"
        jq -r '.contenders[] | select(.mapper) | [.label, .workers,
            .mapper.coord_max_rss_kb / 1024, .mapper.worker_max_rss_kb / 1024,
            .mapper.coord_cpu_s, .mapper.workers_cpu_s, .mapper.coord_cpu_share * 100,
            .mapper.planning_s, .mapper.planning_share * 100,
            .mapper.index_build_s] | map(tostring) | join("\u001f")' "$json" |
            while IFS=$'\x1f' read -r label w crss wrss ccpu wcpu cshare plan pshare built; do
                printf '%-34s %4s %10.1f %10.1f %9.3f %9.3f %6.2f%% %9.3f %6.2f%% %9.3f\n' \
                    "$label" "$w" "$crss" "$wrss" "$ccpu" "$wcpu" "$cshare" "$plan" "$pshare" "$built"
            done
        echo "(MB: peak RSS, the largest over the runs; CPU, planning and rebuild: medians; coord%: coordinator CPU / job CPU;"
        echo " plan%: planning / mapper-coord's own elapsed time; rebuild: the deferred indexes' index_build_s)"
    fi
    if jq -e '[.contenders[] | select(.key | startswith("mapper-s")) | select(.mapper)] | length > 0' "$json" >/dev/null; then
        echo
        printf '%-12s %4s %9s %9s %12s %10s %12s\n' "chunk size" W chunks "median s" \
            "coord us/ch" "coord MB" "coord B/ch"
        jq -r '.contenders[] | select(.key | startswith("mapper-s")) | select(.mapper) |
            [.chunk_size, .workers, .mapper.chunks, .median_s,
             .mapper.coord_cpu_s / .mapper.chunks * 1e6, .mapper.coord_max_rss_kb / 1024,
             .mapper.coord_max_rss_kb * 1024 / .mapper.chunks] | map(tostring) | join("\u001f")' "$json" |
            while IFS=$'\x1f' read -r size w chunks med us mb per; do
                printf '%-12s %4s %9s %9.3f %12.1f %10.1f %12.0f\n' \
                    "$size" "$w" "$chunks" "$med" "$us" "$mb" "$per"
            done
        echo "(the chunk-size sweep: coordinator CPU per chunk (median run) and its peak RSS per chunk)"
    fi
    if jq -e '[.contenders[] | select(.kind == "pgfiles" and .median_s)] | length > 0' "$json" >/dev/null; then
        echo
        printf '%-12s %4s %9s %9s %12s %12s\n' "alone" W chunks "median s" "mapper s" "mapper/alone"
        jq -r '.contenders as $c | $c[] | select(.kind == "pgfiles" and .median_s) | . as $a |
            (first($c[] | select(.key == "mapper-s\($a.chunk_size)-\($a.workers)") | .median_s) // null) as $m |
            [.chunk_size, .workers, .median_s, ($m // "-"),
             (if $m then $m / .median_s else "-" end)] | map(tostring) | join("\u001f")' "$json" |
            while IFS=$'\x1f' read -r size w med m ratio; do
                [ "$m" = - ] || m=$(printf '%.3f' "$m")
                [ "$ratio" = - ] || ratio=$(printf '%.2fx' "$ratio")
                printf '%-12s %4s %9s %9.3f %12s %12s\n' "$size" "$w" "$(pgfiles_count "$size")" "$med" "$m" "$ratio"
            done
        echo "(PostgreSQL alone: W sessions loading the same chunks from files on the server, one binary COPY"
        echo " FROM and transaction per chunk, no source, relay or ledger; mapper s: mapper-coord at that chunk size)"
    fi
    if jq -e '[.contenders[] | select(.ratio_to_append)] | length > 0' "$json" >/dev/null; then
        echo
        printf '%-34s %4s %9s %9s %12s %12s\n' "write modes" W "median s" "vs append" "inserted" "updated"
        jq -r '.contenders[] | select(.ratio_to_append) | [.label, .workers, .median_s,
            .ratio_to_append, (.runs[0].summary.rows_inserted // 0),
            (.runs[0].summary.rows_updated // 0)] | map(tostring) | join("\u001f")' "$json" |
            while IFS=$'\x1f' read -r label w med ratio ins upd; do
                printf '%-34s %4s %9.3f %8.2fx %12s %12s\n' "$label" "$w" "$med" "$ratio" "$ins" "$upd"
            done
        echo "(vs append: median / the median of mapper-coord appending the same rows into the empty table;"
        echo " replace and upsert start from a filled target, prepared before the clock starts;"
        echo " inserted, updated: the upserts' counts, first run)"
    fi
    echo
    echo "targets (reported, not enforced):"
    jq -r '.targets[] | [.workers, .name, (.value // ""), .limit,
        (if .met == null then "n/a" elif .met then "met" else "NOT met" end), .detail] | map(tostring) | join("\u001f")' "$json" |
        while IFS=$'\x1f' read -r w name value limit verdict detail; do
            if [ -n "$value" ]; then value=$(printf '%.3f' "$value"); else value="-"; fi
            printf '  W=%-3s %-40s %8s <= %-5s %-8s (%s)\n' "$w" "$name" "$value" "$limit" "$verdict" "$detail"
        done
    echo
    echo "raw figures: $json"
}

if [ "$failures" -gt 0 ]; then
    echo "bench: FAILED: $failures contender(s) failed (see FAILURE lines above)" >&2
    exit 1
fi
