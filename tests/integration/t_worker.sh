#!/usr/bin/env bash
# tests/integration/t_worker.sh - the worker's event loop: a chunk whose
# source takes longer than --worker-timeout to return its first row keeps
# its lease (heartbeats go out while libpq waits); SIGTERM to a worker
# waiting for that first row rolls the chunk back and exits at once; the
# worker's memory stays flat with 2 MB values in one large chunk; a worker
# waiting for its chunk's ledger row keeps its lease.
. "$(dirname "$0")/lib.sh"
WORKER="$MAPPER_BIN/mapper-worker"

fresh_dbs worker
q "$SRC" "CREATE TABLE r(id bigint PRIMARY KEY, v text);
          INSERT INTO r SELECT g, md5(g::text) FROM generate_series(1, 20000) g"
q "$DST" "CREATE TABLE slow(id bigint NOT NULL, v text)"
# The query sleeps 8 s before its first row, but only in a worker's
# session (planning runs it too, as mapper-coord): one InitPlan, run once.
slow="SELECT id, v FROM r
      WHERE (SELECT count(*) FROM pg_sleep(CASE WHEN current_setting('application_name') = 'mapper-worker'
                                                THEN 8 ELSE 0 END)) = 1"
exact() {
    check "$1: same count and checksum" "$(checksum_query "$SRC" "SELECT id, v FROM r")" "$(checksum "$DST" slow)"
    check "$1: no duplicate key" 0 "$(q "$DST" "SELECT count(*) FROM (SELECT id FROM slow GROUP BY id HAVING count(*) > 1) d")"
}
attempts() { q "$DST" "SELECT string_agg(state || ':' || attempts, ',' ORDER BY chunk_id) FROM mapper.chunks WHERE job_id = '$1'"; }
# sleeping DB: worker sessions of DB now in the query's pg_sleep.
sleeping() {
    q postgres "SELECT count(*) FROM pg_stat_activity WHERE datname = '$1'
                AND application_name = 'mapper-worker' AND wait_event = 'PgSleep'"
}
# worker_sessions DB: worker sessions connected to DB.
worker_sessions() {
    q postgres "SELECT count(*) FROM pg_stat_activity WHERE datname = '$1' AND application_name = 'mapper-worker'"
}

# (a) A remote worker, --worker-timeout 3, a chunk whose first row takes 8 s:
# the worker's heartbeats keep its lease; the chunk runs once.
port=$(free_port)
"$COORD" --query "$slow" --split-by id --target-table slow --workers 0 --chunk-size 1000000 \
    --listen "tcp://127.0.0.1:$port" --insecure --worker-timeout 3 --job-id slowfirst \
    --summary-json "$T_OUT/a.json" >"$T_OUT/a.out" 2>"$T_OUT/a.err" &
pid=$!
"$WORKER" --connect "tcp://127.0.0.1:$port" --id patient 2>"$T_OUT/patient.err" &
wp=$!
wait $pid
check "slow first row: job exit 0" 0 "$?"
wait $wp
check "slow first row: the worker exits 0" 0 "$?"
check "slow first row: one chunk, done on its first attempt" "done:1" "$(attempts slowfirst)"
check "slow first row: no lease lost" 0 "$(grep -c 'lease is lost' "$T_OUT/a.err")"
# (A lower bound: the chunk did wait its 8 s, longer than --worker-timeout.)
check "slow first row: the job took the 8 s sleep" yes \
    "$(jq -r 'if .elapsed_s >= 8 then "yes" else "no: \(.elapsed_s) s" end' "$T_OUT/a.json")"
exact "slow first row"

# (b) SIGTERM to a worker waiting for its source's first row: it rolls the
# chunk back and exits at once; the chunk runs again on another worker.
q "$DST" "TRUNCATE slow"
port=$(free_port)
"$COORD" --query "$slow" --split-by id --target-table slow --workers 0 --chunk-size 1000000 \
    --listen "tcp://127.0.0.1:$port" --insecure --worker-timeout 3 --initial-delay 0.1 --job-id slowterm \
    --summary-json "$T_OUT/b.json" >"$T_OUT/b.out" 2>"$T_OUT/b.err" &
pid=$!
"$WORKER" --connect "tcp://127.0.0.1:$port" --id sleeper 2>"$T_OUT/sleeper.err" &
ws=$!
waited=no
for _ in $(seq 2400); do
    [ "$(sleeping worker_src)" = 1 ] && { waited=yes; break; }
    sleep 0.05
done
check "SIGTERM while waiting: the worker waits in its source's query" yes "$waited"
t0=$(date +%s.%N)
kill -TERM $ws
# The one time bound here is the requirement itself (exit within 2 s); a
# hang fails it, a busy machine still has the whole margin.
gone=no
for _ in $(seq 40); do
    kill -0 $ws 2>/dev/null || { gone=yes; break; }
    sleep 0.05
done
t1=$(date +%s.%N)
check "SIGTERM while waiting for the first row: exits within 2 s" yes "$gone"
echo "# SIGTERM to exit: $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s"
[ "$gone" = yes ] || kill -9 $ws 2>/dev/null
wait $ws
check "SIGTERM while waiting: exit 0" 0 "$?"
check_match "SIGTERM while waiting: rolled back and said so" "rolled the chunk back: asked to stop" \
    "$(cat "$T_OUT/sleeper.err")"
closed=no
for _ in $(seq 200); do
    [ "$(worker_sessions worker_dst)" = 0 ] && { closed=yes; break; }
    sleep 0.05
done
check "SIGTERM while waiting: its target session (and transaction) ended" yes "$closed"
check "SIGTERM while waiting: nothing reached the target" 0 "$(q "$DST" "SELECT count(*) FROM slow")"
"$WORKER" --connect "tcp://127.0.0.1:$port" --id heir 2>"$T_OUT/heir.err"
check "the next worker: exit 0" 0 "$?"
wait $pid
check "job after SIGTERM while waiting: exit 0" 0 "$?"
# (The coordinator may first offer attempt 2 to the worker that just left;
# that one is lost with its lease, and a later attempt runs on heir.)
check_match "the chunk ran again: done on a later attempt" "^done:([2-9]|[1-9][0-9]+)$" "$(attempts slowterm)"
check_match "the rolled-back attempt was retried" "chunk 0 attempt 1 failed .*57P01.*retry in" "$(cat "$T_OUT/b.err")"
exact "after SIGTERM while waiting"

# (b2) Stream mode (no --split-by): the reader's source takes 8 s before
# its first row; the reader keeps its lease, the job ends exact.
q "$DST" "TRUNCATE slow"
port=$(free_port)
"$COORD" --query "$slow" --target-table slow --workers 0 --chunk-size 5000 \
    --listen "tcp://127.0.0.1:$port" --insecure --worker-timeout 3 --job-id slowstream \
    --summary-json "$T_OUT/s.json" >"$T_OUT/s.out" 2>"$T_OUT/s.err" &
pid=$!
"$WORKER" --connect "tcp://127.0.0.1:$port" --id reader-a 2>"$T_OUT/ra.err" &
wa=$!
"$WORKER" --connect "tcp://127.0.0.1:$port" --id reader-b 2>"$T_OUT/rb.err" &
wb=$!
wait $pid
check "stream, slow first row: job exit 0" 0 "$?"
wait $wa
check "stream, slow first row: worker a exits 0" 0 "$?"
wait $wb
check "stream, slow first row: worker b exits 0" 0 "$?"
check "stream, slow first row: no lease lost" 0 "$(grep -c 'lease is lost' "$T_OUT/s.err")"
check "stream, slow first row: the query was read once, whole" 1 "$(grep -c 'read the whole query' "$T_OUT/s.err")"
exact "stream, slow first row"

# (c) 2 MB values, one chunk of up to 1,000,000 rows: the worker's peak
# RSS stays within 32 MB (the relay holds a bounded buffer, not the chunk).
q "$SRC" "CREATE TABLE wide(id bigint PRIMARY KEY, v text);
          INSERT INTO wide SELECT g, (SELECT string_agg(md5(g::text || ':' || i), '')
                                      FROM generate_series(1, 65536) i)
          FROM generate_series(1, 40) g"
q "$DST" "CREATE TABLE wide(id bigint NOT NULL, v text)"
check "wide: values are 2 MB" 2097152 "$(q "$SRC" "SELECT min(length(v)) FROM wide")"
run_coord --table wide --workers 1 --chunk-size 1000000 --job-id wide --summary-json "$T_OUT/c.json"
check "wide: exit 0" 0 "$RC"
check "wide: same count and checksum" "$(checksum "$SRC" wide)" "$(checksum "$DST" wide)"
rss=$(json_field "$T_OUT/c.json" worker_max_rss_kb)
echo "# wide: worker peak RSS $rss kB"
if [ -n "${ASAN_OPTIONS:-}" ]; then # make check-asan: not a measure
    echo "# memory bound not checked under AddressSanitizer (its shadow memory and quarantine inflate RSS)"
else
    check "wide: worker peak RSS <= 32 MB" yes "$([ "$rss" -le 32768 ] && echo yes || echo "no ($rss kB)")"
fi
# (d) Every source session a worker copies on has the mover's settings,
# the first one too (opened to read the source's identity): a source whose
# default statement_timeout is 100 ms cannot cancel a chunk that reads for
# longer.
fresh_dbs worker_timeout
q "$SRC" "CREATE TABLE st(id int PRIMARY KEY); INSERT INTO st SELECT generate_series(1, 4);
          ALTER DATABASE worker_timeout_src SET statement_timeout = '100ms'"
q "$DST" "CREATE TABLE st(id int PRIMARY KEY)"
run_coord --query "SELECT id FROM st, pg_sleep(0.1)" --target-table st --split-by id --chunk-size 2 \
    --workers 1 --no-retry --job-id st --summary-json "$T_OUT/st.json"
check "source statement_timeout 100 ms, 0.4 s chunks: exit 0" 0 "$RC"
check "source statement_timeout: every chunk on its first attempt" 0 "$(json_field "$T_OUT/st.json" chunks_failed)"
check "source statement_timeout: exact" "$(checksum "$SRC" st)" "$(checksum "$DST" st)"

# (e) A worker waiting for its chunk's ledger row (another session, e.g. a
# stale attempt, holds it) longer than --worker-timeout keeps its lease:
# the wait goes on hearing the coordinator and sending heartbeats.
fresh_dbs worker_lock
q "$SRC" "CREATE TABLE r(id bigint PRIMARY KEY, v text);
          INSERT INTO r SELECT g, md5(g::text) FROM generate_series(1, 20000) g"
q "$DST" "CREATE TABLE lk(id bigint NOT NULL, v text)"
port=$(free_port)
"$COORD" --query "SELECT id, v FROM r" --split-by id --target-table lk --workers 0 --chunk-size 1000000 \
    --listen "tcp://127.0.0.1:$port" --insecure --worker-timeout 3 --job-id lockwait \
    >"$T_OUT/e.out" 2>"$T_OUT/e.err" &
pid=$!
wait_for_sql() { # WHAT SQL: poll (up to 2 minutes) until SQL on DST says t
    for _ in $(seq 2400); do
        [ "$(q "$DST" "$2")" = t ] && return 0
        sleep 0.05
    done
    fail "$1: never happened"
    return 1
}
wait_for_sql "the ledger row of chunk 0" "SELECT EXISTS (SELECT FROM mapper.chunks WHERE job_id = 'lockwait' AND chunk_id = 0)"
PGAPPNAME=locker psql -X -q -d "$DST" -c "BEGIN" \
    -c "SELECT FROM mapper.chunks WHERE job_id = 'lockwait' AND chunk_id = 0 FOR UPDATE" \
    -c "SELECT pg_sleep(600)" >/dev/null 2>&1 &
locker=$!
wait_for_sql "the locker holds the row" "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE application_name = 'locker' AND wait_event = 'PgSleep')"
"$WORKER" --connect "tcp://127.0.0.1:$port" --id waiter 2>"$T_OUT/waiter.err" &
ww=$!
wait_for_sql "the worker waits for the row" "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE application_name = 'mapper-worker' AND wait_event_type = 'Lock')"
# Held past --worker-timeout (3 s), within the worker's lock wait (5 s).
sleep 4
q "$DST" "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'locker'" >/dev/null
wait $locker 2>/dev/null
wait $pid
check "ledger row lock wait: job exit 0" 0 "$?"
wait $ww
check "ledger row lock wait: the worker exits 0" 0 "$?"
check "ledger row lock wait: no lease lost" 0 "$(grep -c 'lease is lost' "$T_OUT/e.err")"
check "ledger row lock wait: exact" "$(checksum "$SRC" r)" "$(checksum "$DST" lk)"

check "no worker left" 0 "$(no_workers_left && echo 0 || echo 1)"
finish
