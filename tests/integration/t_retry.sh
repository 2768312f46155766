#!/usr/bin/env bash
# tests/integration/t_retry.sh - the retry policy on a real PostgreSQL:
# terminated target connections are retried and the job stays exact; a
# CHECK violation fails its chunk at once (23514, attempts 1) while the
# others land; --no-retry fails a terminated chunk; the target server
# stopped for 20 s mid-job costs no chunk.
. "$(dirname "$0")/lib.sh"

fresh_dbs retry
q "$SRC" "CREATE TABLE r(id bigint PRIMARY KEY, v text); INSERT INTO r SELECT g, md5(g::text) FROM generate_series(1, 60000) g"
q "$DST" "CREATE TABLE r(id bigint PRIMARY KEY, v text)"

# terminate_when_held LOG: wait until chunk 2 is held mid-copy, terminate
# every worker session on the target database, then let the job go on.
terminate_when_held() {
    held "$1" 2
    q "$DST" "SELECT count(pg_terminate_backend(pid)) > 0 FROM pg_stat_activity
              WHERE application_name = 'mapper-worker' AND datname = current_database()"
    release
}

hold
MAPPER_FAULT=pause-mid-copy:2 "$COORD" --restart --table r --workers 2 --chunk-size 5000 \
    --initial-delay 0.1 --summary-json "$T_OUT/r.json" >"$T_OUT/r.out" 2>"$T_OUT/r.err" &
pid=$!
check "target sessions were terminated" t "$(terminate_when_held "$T_OUT/r.err")"
wait $pid
check "terminated connections: exit 0" 0 "$?"
check_match "a retry was logged with its delay" "chunk 2 attempt 1 failed \(target.*connection.*retry in [0-9.]+ s" "$(cat "$T_OUT/r.err")"
check "terminated connections: exact content" "$(checksum "$SRC" r)" "$(checksum "$DST" r)"
check "no failed chunk" 0 "$(json_field "$T_OUT/r.json" chunks_failed)"

q "$DST" "TRUNCATE r"
hold
MAPPER_FAULT=pause-mid-copy:2 "$COORD" --restart --table r --workers 2 --chunk-size 5000 --no-retry \
    --summary-json "$T_OUT/n.json" >"$T_OUT/n.out" 2>"$T_OUT/n.err" &
pid=$!
terminate_when_held "$T_OUT/n.err" >/dev/null
wait $pid
check "--no-retry: exit 1" 1 "$?"
check "--no-retry: chunk 2 failed after 1 attempt" 1 "$(jq '[.chunk_errors[] | select(.chunk_id == 2 and .attempts == 1)] | length' "$T_OUT/n.json")"

q "$DST" "TRUNCATE r; ALTER TABLE r ADD CONSTRAINT small CHECK (id < 31000 OR id > 34000)"
run_coord --restart --table r --workers 2 --chunk-size 5000 --summary-json "$T_OUT/c.json"
check "CHECK violation: exit 1" 1 "$RC"
check "CHECK violation: one failed chunk" 1 "$(json_field "$T_OUT/c.json" chunks_failed)"
check "CHECK violation: SQLSTATE 23514, attempts 1, integrity" "23514 1 integrity target" \
    "$(jq -r '.chunk_errors[0] | "\(.sqlstate) \(.attempts) \(.classification) \(.side)"' "$T_OUT/c.json")"
check "CHECK violation: the other chunks landed" 55000 "$(q "$DST" "SELECT count(*) FROM r")"
check_match "summary groups errors by side and SQLSTATE" "target +23514 +1 chunk" "$OUT"

# Environment: garbage is a usage error; false turns retries off.
MAPPER_PARALLEL_RETRY_ENABLED=maybe run_coord --table r
check "MAPPER_PARALLEL_RETRY_ENABLED=maybe: exit 2" 2 "$RC"
check_match "MAPPER_PARALLEL_RETRY_ENABLED=maybe: named" "MAPPER_PARALLEL_RETRY_ENABLED" "$ERR"
MAPPER_PARALLEL_MAX_RETRIES=-1 run_coord --table r
check "MAPPER_PARALLEL_MAX_RETRIES=-1: exit 2" 2 "$RC"
run_coord --restart --table r --backoff-base 0.5
check "--backoff-base 0.5: exit 2" 2 "$RC"
check_match "--backoff-base 0.5: named" "exponential_base" "$ERR"

# The target in its own cluster, stopped for 20 s in the middle of a job.
fresh_dbs outage
q "$SRC" "CREATE TABLE o(id bigint PRIMARY KEY, v text); INSERT INTO o SELECT g, md5(g::text) FROM generate_series(1, 300000) g"
OUTER_SRC=$SRC T_OUT=$T_OUT "$(dirname "$0")/../../scripts/with-postgres.sh" \
    bash "$(dirname "$0")/outage_inner.sh" 2>/dev/null
finish
