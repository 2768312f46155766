#!/usr/bin/env bash
# tests/integration/t_failures.sh - bad input gets one clear line and the
# documented exit code; passwords never show; a worker killed with SIGKILL
# costs one chunk attempt; SIGTERM stops the job with 75 and no orphans.
. "$(dirname "$0")/lib.sh"

fresh_dbs bad
q "$SRC" "CREATE TABLE t(id int PRIMARY KEY, v text); INSERT INTO t SELECT g, g::text FROM generate_series(1, 1000) g"
q "$DST" "CREATE TABLE t(id int PRIMARY KEY, v text)"

expect_exit() { # DESCRIPTION CODE REGEX ARGS...
    local d=$1 code=$2 re=$3
    shift 3
    run_coord "$@"
    check "$d: exit $code" "$code" "$RC"
    check_match "$d: message" "$re" "$ERR"
    check "$d: one line on stderr" 1 "$(printf '%s\n' "$ERR" | grep -c .)"
}
expect_exit "--workers 0" 2 "workers must be between 1 and 1024, not 0 \\(0 needs --listen\\)" --table t --workers 0
expect_exit "--workers -3" 2 "--workers: expected a whole number" --table t --workers -3
expect_exit "--workers abc" 2 "--workers: expected a whole number.*'abc'" --table t --workers abc
expect_exit "--chunk-size 0" 2 "--chunk-size: expected a whole number" --table t --chunk-size 0
expect_exit "unknown option" 2 "unknown option '--bogus'" --table t --bogus
expect_exit "missing --table" 2 "--table or --query is required" --workers 2
expect_exit "missing source table" 3 "source table nope does not exist" --table nope
expect_exit "missing target table" 3 "target table nope2 does not exist" --table t --target-table nope2 --if-target-missing=fail
expect_exit "split-by not integer" 2 "column \"v\" is not an integer" --table t --split-by v
expect_exit "--state-schema too long" 2 \
    "--state-schema '$(printf 's%.0s' {1..40})': expected 1 to 32 bytes" \
    --source "postgresql://postgres@127.0.0.1:1/x" --table t --state-schema "$(printf 's%.0s' {1..40})"
expect_exit "--summary-json in a missing directory" 2 \
    "--summary-json $T_OUT/nodir/s.json: No such file or directory" \
    --table t --target-table t_json --summary-json "$T_OUT/nodir/s.json"
check "--summary-json in a missing directory: checked before the copy" "" \
    "$(q "$DST" "SELECT to_regclass('t_json')")"
q "$DST" "CREATE TABLE t2(id int PRIMARY KEY)"
expect_exit "column missing on target" 3 "target table.*t2 has no column \"v\"" --table t --target-table t2
expect_exit "unreachable server" 3 "source database unreachable.*host=127.0.0.1 port=1 " \
    --source "postgresql://postgres@127.0.0.1:1/x" --table t

q "$SRC" "CREATE ROLE pwuser LOGIN PASSWORD 'right-pass'"
expect_exit "wrong password" 3 "source database unreachable.*password authentication failed" \
    --source "postgresql://pwuser:sekrit-pw-123@127.0.0.1:$MAPPER_PG_PORT/bad_src" --table t
check "password never in the log" 0 "$(printf '%s' "$ERR$OUT" | grep -c sekrit-pw-123)"

# ps never shows a password: not the coordinator's, not a worker's.
q "$SRC" "GRANT SELECT ON t TO pwuser"
q "$SRC" "CREATE TABLE slow(id int PRIMARY KEY, v text); INSERT INTO slow SELECT g, repeat('x', 200) FROM generate_series(1, 200000) g; GRANT SELECT ON slow TO pwuser"
q "$DST" "CREATE TABLE slow(id int PRIMARY KEY, v text)"
hold
MAPPER_FAULT=pause-mid-copy:0 "$COORD" --source "postgresql://pwuser:right-pass@127.0.0.1:$MAPPER_PG_PORT/bad_src" \
    --table slow --workers 2 --chunk-size 5000 >"$T_OUT/ps.out" 2>"$T_OUT/ps.err" &
pid=$!
held "$T_OUT/ps.err" 0  # the coordinator and its workers are all up now
seen=$(ps -eo args | grep -E "mapper-(coord|worker)" | grep -v grep)
release
wait $pid
check "job with password in URL exits 0" 0 "$?"
check_match "processes were seen in ps" "mapper-worker" "$seen"
check "ps shows no password" 0 "$(printf '%s' "$seen" | grep -c right-pass)"
check "log shows no password" 0 "$(cat "$T_OUT/ps.err" "$T_OUT/ps.out" | grep -c right-pass)"

# A worker SIGKILLs itself mid-COPY (fault injection) and another is killed
# from outside: each costs one attempt, the job stays exact.
fresh_dbs kill
q "$SRC" "CREATE TABLE k(id bigint PRIMARY KEY, v text); INSERT INTO k SELECT g, md5(g::text) FROM generate_series(1, 100000) g"
q "$DST" "CREATE TABLE k(id bigint PRIMARY KEY, v text)"
MAPPER_FAULT=mid-copy:3 run_coord --restart --table k --workers 3 --chunk-size 12000 --summary-json "$T_OUT/k.json"
check "worker killed mid-copy: exit 0" 0 "$RC"
check_match "the kill was seen" "killed by signal 9" "$ERR"
check "worker killed mid-copy: exact content" "$(checksum "$SRC" k)" "$(checksum "$DST" k)"
check "no failed chunk" 0 "$(json_field "$T_OUT/k.json" chunks_failed)"

q "$DST" "TRUNCATE k"
hold
MAPPER_FAULT=pause-mid-copy:10 "$COORD" --restart --table k --workers 2 --chunk-size 2000 \
    >"$T_OUT/k2.out" 2>"$T_OUT/k2.err" &
pid=$!
held "$T_OUT/k2.err" 10
victim=$(sed -n 's/.* worker\[\([0-9]*\)\] .*chunk 10: fault injection at mid-copy: pausing.*/\1/p' "$T_OUT/k2.err")
kill -9 "$victim"
release
wait $pid
check "external kill -9: exit 0" 0 "$?"
check_match "external kill -9: it landed mid-chunk and cost a retry" "chunk 10 attempt 1 failed" "$(cat "$T_OUT/k2.err")"
check "external kill -9: exact content" "$(checksum "$SRC" k)" "$(checksum "$DST" k)"
check "no duplicate keys" 0 "$(q "$DST" "SELECT count(*) FROM (SELECT id FROM k GROUP BY id HAVING count(*) > 1) d")"

# SIGTERM: stop, exit 75, no orphans; committed chunks stay committed.
q "$DST" "TRUNCATE k"
hold
MAPPER_FAULT=pause-mid-copy:5 "$COORD" --restart --table k --workers 2 --chunk-size 500 \
    >"$T_OUT/t.out" 2>"$T_OUT/t.err" &
pid=$!
held "$T_OUT/t.err" 5
kill -TERM $pid
release
wait $pid
check "SIGTERM: exit 75" 75 "$?"
check_match "SIGTERM: summary says interrupted" "interrupted" "$(cat "$T_OUT/t.out")"
check "SIGTERM: no worker left" 0 "$(no_workers_left && echo 0 || echo 1)"
check "SIGTERM: committed rows are whole chunks" 0 "$(q "$DST" "SELECT count(*) % 500 FROM k")"
finish
