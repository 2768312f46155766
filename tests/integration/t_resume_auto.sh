#!/usr/bin/env bash
# tests/integration/t_resume_auto.sh - supervisors: --resume=auto starts a
# new job, continues an unfinished one (its coordinator SIGKILLed), does
# nothing for a done one; one coordinator per job (the job's lock).
. "$(dirname "$0")/lib.sh"

dups() { q "$DST" "SELECT count(*) FROM (SELECT id FROM $1 GROUP BY id HAVING count(*) > 1) d"; }
exact() { # LABEL TABLE
    check "$1: same count and checksum" "$(checksum "$SRC" h)" "$(checksum "$DST" "$2")"
    check "$1: no duplicate key" 0 "$(dups "$2")"
}
# The job's state: its status, every chunk's state, rows and last change.
ledger_state() {
    q "$DST" "SELECT j.status || coalesce(j.finished_at::text, '-') || ':' ||
                     string_agg(c.chunk_id || c.state || coalesce(c.rows, 0)
                                || c.updated_at, ',' ORDER BY c.chunk_id)
              FROM mapper.jobs j JOIN mapper.chunks c USING (job_id)
              WHERE j.job_id = '$1' GROUP BY j.status, j.finished_at"
}
# The job's row: a second coordinator must leave it as it is.
job_row() {
    q "$DST" "SELECT status || created_at || coalesce(finished_at::text, '-') FROM mapper.jobs WHERE job_id = '$1'"
}
# Wait until no session holds an advisory lock in the target (a killed
# coordinator's session ends once its server process sees the socket close).
no_lock_left() {
    for _ in $(seq 2400); do
        [ "$(q "$DST" "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")" = 0 ] && return 0
        sleep 0.05
    done
    return 1
}

fresh_dbs resume_auto
q "$SRC" "CREATE TABLE h(id bigint PRIMARY KEY, v text); INSERT INTO h SELECT g, md5(g::text) FROM generate_series(1, 200000) g"
q "$DST" "CREATE TABLE h(id bigint NOT NULL, v text)"  # no PK: duplicates would show
args=(--table h --workers 2 --chunk-size 10000 --job-id ra --resume=auto)

# The first run is held mid-copy at chunk 10 of 20.
hold
MAPPER_FAULT=pause-mid-copy:10 "$COORD" "${args[@]}" >"$T_OUT/first.out" 2>"$T_OUT/first.err" &
pid=$!
held "$T_OUT/first.err" 10
check_match "new job with --resume=auto: started" "job ra \(ledger" "$(cat "$T_OUT/first.err")"

# While it runs, a second coordinator of the job is refused (exit 3),
# whatever its flags, and leaves the job as it is (the first coordinator
# goes on with the chunks other than 10).
before=$(job_row ra)
for flags in "--resume=auto" "--resume" "" "--restart"; do
    # shellcheck disable=SC2086 # flags: zero or one word
    run_coord --table h --workers 2 --chunk-size 10000 --job-id ra $flags
    check "second coordinator (${flags:-no flag}): exit 3" 3 "$RC"
    check_match "second coordinator (${flags:-no flag}): names the job" "job ra is running in another coordinator" "$ERR"
done
check "second coordinators: the job unchanged" "$before" "$(job_row ra)"

# The first is SIGKILLed mid-job: its job is left 'running'.
kill -9 $pid
wait $pid 2>/dev/null
release
check "coordinator SIGKILL: workers gone" 0 "$(no_workers_left && echo 0 || echo 1)"
check "coordinator SIGKILL: its lock went with its session" 0 "$(no_lock_left && echo 0 || echo 1)"
check "coordinator SIGKILL: job left running" running "$(q "$DST" "SELECT status FROM mapper.jobs WHERE job_id = 'ra'")"
left=$(q "$DST" "SELECT count(*) FROM mapper.chunks WHERE job_id = 'ra' AND state <> 'done'")
check_match "coordinator SIGKILL: chunks left to do" "^[1-9][0-9]*$" "$left"

# The same command line continues it and finishes it exactly.
run_coord "${args[@]}" --summary-json "$T_OUT/second.json"
check "second run: exit 0" 0 "$RC"
check "second run: resumed" true "$(json_field "$T_OUT/second.json" resumed)"
check "second run: not already_done" false "$(json_field "$T_OUT/second.json" already_done)"
check_match "second run: says it resumed" "resumed job ra: $left of 20 chunks left" "$ERR"
exact "second run" h
check "second run: job done" "done" "$(q "$DST" "SELECT status FROM mapper.jobs WHERE job_id = 'ra'")"
check "second run: every chunk done once" "0:200000" "$(q "$DST" "SELECT count(*) FILTER (WHERE state <> 'done') || ':' || sum(rows) FROM mapper.chunks WHERE job_id = 'ra'")"

# A third time: exit 0 at once, one line, nothing changed.
before=$(ledger_state ra)
sum=$(checksum "$DST" h)
run_coord "${args[@]}" --summary-json "$T_OUT/third.json"
check "third run: exit 0" 0 "$RC"
check "third run: json says already_done" "true 0" "$(json_field "$T_OUT/third.json" already_done) $(json_field "$T_OUT/third.json" chunks_succeeded)"
check "third run: one line" "job ra already done" "$OUT"
check "third run: no worker started, nothing planned" "" "$(grep -E 'planned|worker' "$T_OUT/stderr")"
check "third run: the ledger unchanged" "$before" "$(ledger_state ra)"
check "third run: the target unchanged" "$sum" "$(checksum "$DST" h)"
MAPPER_RESUME=auto run_coord --table h --workers 2 --chunk-size 10000 --job-id ra
check "MAPPER_RESUME=auto: exit 0, already done" "0 job ra already done" "$RC $OUT"

# A new id with --resume=auto is a fresh job; refusals are usage errors.
q "$DST" "CREATE TABLE h2(id bigint NOT NULL, v text)"
run_coord --table h --target-table h2 --workers 2 --chunk-size 10000 --job-id rb --resume=auto
check "new id with --resume=auto: exit 0" 0 "$RC"
exact "new id with --resume=auto" h2
# An unfinished job that cannot resume (a table without an integer key,
# cut into ctid page ranges) is refused, as with --resume.
q "$SRC" "CREATE TABLE nokey(v text); INSERT INTO nokey SELECT md5(g::text) FROM generate_series(1, 1000) g"
q "$DST" "CREATE TABLE nokey(v text)"
run_coord --table nokey --workers 2 --job-id nk --resume=auto
check "ctid job, new: exit 0" 0 "$RC"
q "$DST" "UPDATE mapper.jobs SET status = 'interrupted' WHERE job_id = 'nk'"
run_coord --table nokey --workers 2 --job-id nk --resume=auto
check "ctid job, unfinished: exit 2" 2 "$RC"
check_match "ctid job, unfinished: says why" "job nk is unfinished, and cannot be picked up .*--restart --truncate" "$ERR"

run_coord "${args[@]}" --restart
check "--resume=auto --restart: exit 2" 2 "$RC"
check_match "--resume=auto --restart: says so" "cannot be combined" "$ERR"
run_coord --table h --job-id ra --resume=maybe
check "--resume=maybe: exit 2" 2 "$RC"
MAPPER_RESUME=yes run_coord --table h --job-id ra
check "MAPPER_RESUME=yes: exit 2" 2 "$RC"
check_match "MAPPER_RESUME=yes: says so" "MAPPER_RESUME: expected auto" "$ERR"
finish
