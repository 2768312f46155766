#!/usr/bin/env bash
# tests/integration/trust_local.sh - part of t_trust.sh (items 3-6 of the
# trust work), run by it in a process of its own: attacks from the same host: passwords
# in every spelling never leave the process (ps, logs, summary, JSON,
# progress file), planted symbolic links are never followed, files that hold
# rows are 0600 and not inherited by workers, control characters from rows
# and errors never reach a terminal, a ctid-planned job is never resumed.
. "$(dirname "$0")/lib.sh"

fresh_dbs trust_local
P=$MAPPER_PG_PORT
SRCDB=trust_local_src
q "$SRC" "CREATE TABLE pw(id int PRIMARY KEY, v text); INSERT INTO pw SELECT g, md5(g::text) FROM generate_series(1, 20000) g"
q "$DST" "CREATE TABLE pw(id int NOT NULL, v text)"
psql -q -d postgres -c "DROP ROLE IF EXISTS trust_app" -c "CREATE ROLE trust_app LOGIN PASSWORD 'RightPwJ'" >/dev/null

# no_secret NAME FILE... -- SECRET...: none of the SECRETs in any FILE.
no_secret() {
    local name=$1 files=() s hit=""
    shift
    while [ "$1" != -- ]; do
        [ -e "$1" ] && files+=("$1")
        shift
    done
    shift
    for s in "$@"; do
        if grep -aqF -- "$s" "${files[@]}" /dev/null; then hit="$hit $s"; fi
    done
    check "$name: the password appears nowhere" "" "$hit"
}

# cmdline PID: the process's argv, one line.
cmdline() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null; }

# run_form NAME EXPECTED_RC CONNINFO SECRET...: run a job with CONNINFO as
# --source; for a job that runs, hold a chunk mid-copy and read the argv of
# the coordinator and of its workers; then look for every SECRET in argv,
# stdout, stderr, the JSON summary and the progress file.
run_form() {
    local name=$1 want=$2 conninfo=$3 d="$T_OUT/$1"
    shift 3
    mkdir -p "$d"
    q "$DST" "TRUNCATE pw"
    hold
    MAPPER_FAULT=pause-mid-copy:1 "$COORD" --source "$conninfo" --table pw --workers 2 \
        --chunk-size 5000 --no-ledger --progress log --progress-interval 0.1 \
        --progress-file "$d/progress" --summary-json "$d/summary.json" \
        >"$d/stdout" 2>"$d/stderr" &
    local pid=$! w
    : >"$d/argv"
    if [ "$want" = 0 ]; then
        if wait_for "$d/stderr" "fault injection at mid-copy: pausing" 600; then
            cmdline "$pid" >>"$d/argv"
            for w in $(pgrep -P "$pid"); do cmdline "$w" >>"$d/argv"; done
            check "$name: coordinator argv read while running" 1 "$(grep -c -- --source "$d/argv")"
        else
            fail "$name: the job never reached its pause"
        fi
    fi
    release
    wait "$pid"
    check "$name: exit $want" "$want" "$?"
    no_secret "$name" "$d/argv" "$d/stdout" "$d/stderr" "$d/summary.json" "$d/progress" -- "$@"
}

# --- 3. Passwords -------------------------------------------------------
db="host=127.0.0.1 port=$P dbname=$SRCDB user=postgres"
uri="127.0.0.1:$P/$SRCDB"
run_form kv-spaces 0 "$db password = Sp4ceSecretA" Sp4ceSecretA
run_form kv-quoted 0 "$db password='two w0rdsB s3cretB'" "w0rdsB" "s3cretB"
run_form kv-escaped 0 "$db password='it\\'sK s3cretK'" "sK s3cretK" "s3cretK"
run_form uri-percent 0 "postgresql://postgres:p%40ssC%2Fw0rd@$uri" "p@ssC/w0rd" "p%40ssC%2Fw0rd" "ssC"
run_form uri-query 0 "postgresql://postgres@$uri?password=Qu3ryPwD" Qu3ryPwD
run_form uri-raw-at 2 "postgresql://postgres:p@ssRawE@$uri" "ssRawE"
check_match "uri-raw-at: says what to do" "percent-encode|%40" "$(cat "$T_OUT/uri-raw-at/stderr")"
run_form uri-bad-percent 2 "postgresql://postgres:50%offF@$uri" "offF"
check_match "uri-bad-percent: names the option, quotes nothing" "--source: not a valid connection string" "$(cat "$T_OUT/uri-bad-percent/stderr")"
run_form kv-missing-eq 2 "$db password=correctG horseG battery" "horseG" "correctG"
run_form unreachable 3 "host=no-such-host.invalid user=postgres password=Unr3achH dbname=x" Unr3achH
run_form unreachable-uri 3 "postgresql://postgres:Unr3ach%21I@no-such-host.invalid/x" "Unr3ach!I" "Unr3ach%21I"
run_form wrong-password 3 "host=127.0.0.1 port=$P dbname=$SRCDB user=trust_app password=WrongPwJ" WrongPwJ
check_match "wrong-password: still says why" "password authentication failed" "$(cat "$T_OUT/wrong-password/stderr")"

# The same password in the target and in the environment.
d="$T_OUT/env"
mkdir -p "$d"
q "$DST" "TRUNCATE pw"
MAPPER_SOURCE_URL="postgresql://postgres:Env%20Pw%20L@$uri" "$COORD" --target "host=127.0.0.1 port=$P dbname=trust_local_dst user=postgres password=TargetPwM" \
    --table pw --workers 1 --no-ledger --summary-json "$d/summary.json" >"$d/stdout" 2>"$d/stderr"
check "env and --target: exit 0" 0 "$?"
no_secret "env and --target" "$d/stdout" "$d/stderr" "$d/summary.json" -- "Env Pw L" "Env%20Pw%20L" TargetPwM

# A worker given a password on its own command line hides it too.
d="$T_OUT/worker"
mkdir -p "$d"
"$MAPPER_BIN/mapper-worker" -v --connect "tcp://127.0.0.1:$(free_port)" --source "postgresql://postgres:Wk%40Pw@$uri" \
    --target "$db password=WkTgtPw" >"$d/stdout" 2>"$d/stderr" &
wpid=$!
wait_for "$d/stderr" "no coordinator connected yet" 400
cmdline "$wpid" >"$d/argv"
kill "$wpid" 2>/dev/null
wait "$wpid" 2>/dev/null
check "worker: argv read" 1 "$(grep -c -- --source "$d/argv")"
no_secret "worker" "$d/argv" "$d/stdout" "$d/stderr" -- "Wk@Pw" "Wk%40Pw" WkTgtPw

# --- 6. Files: no symlink followed, rows 0600, not inherited ----------------
q "$DST" "TRUNCATE pw"
echo keep >"$T_OUT/victim"
ln -sf "$T_OUT/victim" "$T_OUT/rej-link"
run_coord --table pw --workers 1 --no-ledger --on-bad-rows=reject --reject-file "$T_OUT/rej-link"
check "reject file is a symlink: exit 2" 2 "$RC"
check_match "reject file is a symlink: says so" "rej-link.*symbolic link" "$ERR"
ln -sf "$T_OUT/victim" "$T_OUT/rej2.log"
run_coord --table pw --workers 1 --no-ledger --on-bad-rows=reject --reject-file "$T_OUT/rej2"
check "reject log is a symlink: exit 2" 2 "$RC"
ln -sf "$T_OUT/victim" "$T_OUT/prog-link"
run_coord --table pw --workers 1 --no-ledger --progress log --progress-file "$T_OUT/prog-link"
check "progress file is a symlink: exit 2" 2 "$RC"
check_match "progress file is a symlink: says so" "prog-link.*symbolic link" "$ERR"
ln -sf "$T_OUT/victim" "$T_OUT/sum.json"
ln -sf "$T_OUT/victim" "$T_OUT/sum.json.tmp"
run_coord --table pw --workers 1 --no-ledger --summary-json "$T_OUT/sum.json"
check "summary over a symlink: exit 0" 0 "$RC"
check "summary over a symlink: the link is replaced by a file" "regular file 600" "$(stat -c '%F %a' "$T_OUT/sum.json")"
check "summary over a symlink: valid JSON" 0 "$(json_field "$T_OUT/sum.json" exit_code)"
check "planted symlinks: their target is untouched" keep "$(cat "$T_OUT/victim")"

# Reject and progress files: 0600 (rows), and no worker holds them open.
q "$DST" "TRUNCATE pw"
rm -f "$T_OUT/rows.rej" "$T_OUT/rows.rej.log" "$T_OUT/prog"
hold
MAPPER_FAULT=pause-mid-copy:1 "$COORD" --table pw --workers 2 --chunk-size 5000 --no-ledger \
    --on-bad-rows=reject --reject-file "$T_OUT/rows.rej" --progress log --progress-file "$T_OUT/prog" \
    >"$T_OUT/fd.out" 2>"$T_OUT/fd.err" &
pid=$!
held=""
if wait_for "$T_OUT/fd.err" "fault injection at mid-copy: pausing" 600; then
    n=0
    for w in $(pgrep -P "$pid"); do
        n=$((n + 1))
        held="$held$(ls -l "/proc/$w/fd" 2>/dev/null | grep -E 'rows\.rej|/prog$')"
    done
    check "paused job: two workers seen" 2 "$n"
else
    fail "fd: the job never reached its pause"
fi
release
wait "$pid"
check "fd job: exit 0" 0 "$?"
check "workers hold neither the reject file nor the progress file" "" "$held"
check "reject file and its log are 0600" "600 600" "$(stat -c %a "$T_OUT/rows.rej" "$T_OUT/rows.rej.log" | tr '\n' ' ' | sed 's/ $//')"

# --- 6. Control characters from rows and errors never reach a terminal ----
q "$SRC" "CREATE TABLE esc(id int PRIMARY KEY, n text); INSERT INTO esc SELECT g, g::text FROM generate_series(1, 100) g; UPDATE esc SET n = E'7\\x1b[31mRED\\x1b]0;owned\\x07' WHERE id = 50"
q "$DST" "CREATE TABLE esc(id int NOT NULL, n int)"
run_coord --table esc --workers 1 --no-ledger --summary-json "$T_OUT/esc.json"
check "escape in a failing row: exit 1" 1 "$RC"
check "escape in a failing row: no ESC or BEL on stderr or stdout" 0 "$(printf '%s%s' "$OUT" "$ERR" | tr -cd '\033\007' | wc -c)"
check_match "escape in a failing row: shown as \\x1b" '\\x1b\[31mRED' "$ERR"
rm -f "$T_OUT/esc.rej" "$T_OUT/esc.rej.log"
run_coord --table esc --workers 1 --no-ledger --on-bad-rows=reject --reject-file "$T_OUT/esc.rej"
check "escape in a rejected row: exit 1" 1 "$RC"
check "escape in a rejected row: the reject log holds no ESC or BEL" 0 "$(tr -cd '\033\007' <"$T_OUT/esc.rej.log" | wc -c)"
check "escape in a rejected row: the row itself is kept as is" 1 "$(grep -c "$(printf '\033')\[31mRED" "$T_OUT/esc.rej")"

# --- 4. --resume of a ctid-planned job is refused ---------------------------
q "$SRC" "CREATE TABLE noid(v text, n int); INSERT INTO noid SELECT md5(g::text), g FROM generate_series(1, 200000) g"
q "$DST" "CREATE TABLE noid(v text, n int)"
hold
MAPPER_FAULT=pause-mid-copy:3 "$COORD" --table noid --workers 2 --chunk-size 10000 --job-id noid \
    >"$T_OUT/noid.out" 2>"$T_OUT/noid.err" &
pid=$!
if wait_for "$T_OUT/noid.err" "chunk 3: fault injection at mid-copy: pausing" 600; then
    kill -TERM "$pid"
else
    fail "ctid: the job never reached its pause"
fi
release
wait "$pid"
check "ctid job, SIGTERM: exit 75" 75 "$?"
check_match "ctid job, SIGTERM: says it starts over" "ctid page ranges starts over.*--restart --truncate --job-id noid" "$(tr '\n' ' ' <"$T_OUT/noid.err")"
before="$(checksum "$DST" noid) $(q "$DST" "SELECT string_agg(chunk_id || state, ',' ORDER BY chunk_id) FROM mapper.chunks WHERE job_id = 'noid'")"
run_coord --table noid --workers 2 --chunk-size 10000 --job-id noid --resume
check "ctid --resume: exit 2" 2 "$RC"
check "ctid --resume: one line" 1 "$(echo "$ERR" | grep -c .)"
check_match "ctid --resume: says why and what to do" "ctid page ranges.*rows may move between pages.*--restart --truncate" "$ERR"
after="$(checksum "$DST" noid) $(q "$DST" "SELECT string_agg(chunk_id || state, ',' ORDER BY chunk_id) FROM mapper.chunks WHERE job_id = 'noid'")"
check "ctid --resume: nothing changed in the target" "$before" "$after"
run_coord --table noid --workers 2 --chunk-size 10000 --job-id noid --restart --truncate
check "ctid --restart --truncate: exit 0" 0 "$RC"
check "ctid --restart --truncate: exact" "$(checksum "$SRC" noid)" "$(checksum "$DST" noid)"
readme=$(tr '\n' ' ' <"$(dirname "$0")/../../README.md")
check_match "README: a ctid-planned job is never resumed" "ctid page ranges\*\* +\(no integer key, no .--split-by.\) +is never resumed.*--restart --truncate" "$readme"
check_match "README: the key-range promise names a changed key" "A row whose +\*\*key\*\* changes between the runs may be lost" "$readme"

# --- 5. Rejected rows are as durable as their chunk --------------------------
# Chunks of 5000 rows by id: rows 100 (chunk 0), 5100 and 5200 (chunk 1),
# 10100 (chunk 2) and 15100 (chunk 3) are refused by the target.
q "$SRC" "CREATE TABLE rj(id int PRIMARY KEY, n text); INSERT INTO rj SELECT g, g::text FROM generate_series(1, 20000) g; UPDATE rj SET n = 'bad' || id WHERE id IN (100, 5100, 5200, 10100, 15100)"
q "$DST" "CREATE TABLE rj(id int NOT NULL, n int)"
rm -f "$T_OUT/rj.rej" "$T_OUT/rj.rej.log"
hold
MAPPER_FAULT=pause-after-commit:1 "$COORD" --table rj --workers 1 --chunk-size 5000 --job-id rj \
    --on-bad-rows=reject --reject-file "$T_OUT/rj.rej" >"$T_OUT/rj.out" 2>"$T_OUT/rj.err" &
pid=$!
if wait_for "$T_OUT/rj.err" "chunk 1: fault injection at after-commit: pausing" 600; then
    # Chunk 0's DONE is checked in the ledger with others heard about the
    # same time, a few ms later: its rows reach the reject file then.
    for _ in $(seq 600); do
        [ "$(q "$DST" "SELECT rejects_written FROM mapper.chunks WHERE job_id = 'rj' AND chunk_id = 0")" = t ] && break
        sleep 0.05
    done
    kill -9 "$pid"
else
    fail "rejects: the job never reached its pause"
fi
release
wait "$pid" 2>/dev/null
no_workers_left || fail "rejects: workers left after the coordinator's SIGKILL"
check "coordinator killed after chunk 1 committed: chunks 0 and 1 committed" "0,1" "$(q "$DST" "SELECT string_agg(chunk_id::text, ',' ORDER BY chunk_id) FROM mapper.chunks WHERE job_id = 'rj' AND state = 'done'")"
check "coordinator killed after chunk 0's rejected row reached the reject file" 100 "$(cut -f1 "$T_OUT/rj.rej" 2>&1)"
check "coordinator killed: the rejected rows committed with their chunks" "100,5100,5200" "$(q "$DST" "SELECT string_agg(split_part(row, E'\t', 1), ',' ORDER BY chunk_id, row_index) FROM mapper.rejects WHERE job_id = 'rj'")"
# As if the coordinator had also died in the middle of writing chunk 1's
# rows: where the write began is in the ledger, and part of it in the files.
q "$DST" "UPDATE mapper.chunks SET rejects_at = ARRAY[$(stat -c %s "$T_OUT/rj.rej"), $(stat -c %s "$T_OUT/rj.rej.log")] WHERE job_id = 'rj' AND chunk_id = 1"
printf '%s' "$(q "$DST" "SELECT row FROM mapper.rejects WHERE job_id = 'rj' AND chunk_id = 1 ORDER BY row_index LIMIT 1")" >>"$T_OUT/rj.rej"
printf '%s' "$(q "$DST" "SELECT 'chunk 1 row ' || row_index + 1 || ' ' || sqlstate || ' ' || left(message, 5) FROM mapper.rejects WHERE job_id = 'rj' AND chunk_id = 1 ORDER BY row_index LIMIT 1")" >>"$T_OUT/rj.rej.log"
run_coord --table rj --workers 1 --chunk-size 5000 --job-id rj --resume --on-bad-rows=reject --reject-file "$T_OUT/rj.rej"
check "rejects, --resume: exit 1 (rows were rejected)" 1 "$RC"
check "rejects, --resume: the unfinished write is undone in both files" 2 "$(echo "$ERR" | grep -c "removed the [0-9]* bytes of an unfinished write")"
check "rejects, --resume: every log line is whole" 5 "$(grep -c '^chunk [0-9]* row [0-9]* 22P02 invalid input syntax for type integer: "bad[0-9]*"$' "$T_OUT/rj.rej.log")"
check "rejects, --resume: rows_rejected counts all" 1 "$(echo "$OUT" | grep -c 'rows_rejected  *5$')"
check "rejects, --resume: the reject file holds every rejected row exactly once" \
    "$(printf '%s\n' 100 10100 15100 5100 5200 | sort)" "$(cut -f1 "$T_OUT/rj.rej" | sort)"
check "rejects, --resume: the log has one line per row, none twice" "5 5" \
    "$(wc -l <"$T_OUT/rj.rej.log") $(cut -d' ' -f1-4 "$T_OUT/rj.rej.log" | sort -u | wc -l)"
check "rejects, --resume: the target has the other rows" 19995 "$(q "$DST" "SELECT count(*) FROM rj")"
check "rejects, --resume: every chunk's rows recorded as written" 0 "$(q "$DST" "SELECT count(*) FROM mapper.chunks WHERE job_id = 'rj' AND rejected > 0 AND NOT rejects_written")"
run_coord --table rj --workers 1 --chunk-size 5000 --job-id rj --resume --on-bad-rows=reject --reject-file "$T_OUT/rj.rej"
check "rejects, a second --resume writes nothing again" 5 "$(wc -l <"$T_OUT/rj.rej")"
q "$DST" "UPDATE mapper.chunks SET rejects_written = false WHERE job_id = 'rj' AND chunk_id = 0"
run_coord --table rj --workers 1 --chunk-size 5000 --job-id rj --resume
check_match "rejects not written, --resume without a reject file: says where they are" \
    "rows set aside by 1 committed chunk\(s\) are not in a reject file yet: resume with --on-bad-rows=reject" "$ERR"

# --- 6. The ledger never takes over tables that are not its own ---------------
q "$DST" "CREATE TABLE public.jobs(id int, name text); INSERT INTO public.jobs VALUES (1, 'mine')"
run_coord --table pw --workers 1 --state-schema public
check "--state-schema public with a user's jobs table: exit 3" 3 "$RC"
check_match "--state-schema public: names the table and why" '"public"\.jobs exists and is not a ledger table' "$ERR"
check "--state-schema public: the user's table is untouched" "id,name 1" \
    "$(q "$DST" "SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'public.jobs'::regclass AND attnum > 0 AND NOT attisdropped") $(q "$DST" "SELECT count(*) FROM public.jobs")"
check "--state-schema public: no ledger table created beside it" "" "$(q "$DST" "SELECT to_regclass('public.chunks')")"
q "$DST" "TRUNCATE pw"
run_coord --table pw --workers 1 --state-schema theirs --job-id own1
check "a ledger of one's own: exit 0" 0 "$RC"
q "$DST" "ALTER TABLE theirs.chunks OWNER TO trust_app"
run_coord --table pw --workers 1 --state-schema theirs --job-id own2
check "a ledger table owned by another role: exit 3" 3 "$RC"
check_match "a ledger table owned by another role: names it and its owner" '"theirs"\.chunks exists and is not a table of yours \(owner trust_app' "$ERR"
check "a ledger table owned by another role: no job recorded" 0 "$(q "$DST" "SELECT count(*) FROM theirs.jobs WHERE job_id = 'own2'")"

finish
