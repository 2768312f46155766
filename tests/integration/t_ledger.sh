#!/usr/bin/env bash
# tests/integration/t_ledger.sh - exactly once: the ledger committed with
# each chunk, SIGKILL of workers (at random and at each fault point) and of
# the coordinator, SIGTERM, --resume and its refusals, --truncate,
# --no-ledger. Every copy is compared by count, checksum and duplicates.
. "$(dirname "$0")/lib.sh"

dups() { q "$DST" "SELECT count(*) FROM (SELECT id FROM $1 GROUP BY id HAVING count(*) > 1) d"; }
exact() { # LABEL TABLE
    check "$1: same count and checksum" "$(checksum "$SRC" "$2")" "$(checksum "$DST" "$2")"
    check "$1: no duplicate key" 0 "$(dups "$2")"
}
ledger_done_once() { # JOB ROWS: every chunk done once, rows add up
    q "$DST" "SELECT count(*) FILTER (WHERE state <> 'done') || ':' || sum(rows)
              FROM mapper.chunks WHERE job_id = '$1'"
}

fresh_dbs ledger
q "$SRC" "CREATE TABLE big(id bigint PRIMARY KEY, v text);
          INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 1000000) g"
q "$DST" "CREATE TABLE big(id bigint NOT NULL, v text)"  # no PK: duplicates would show

# 1,000,000 rows, 4 workers, 10 of them SIGKILLed at random moments while
# they copy (a worker that has started a chunk: killing fresh ones before
# they say ready is a crash loop, which the coordinator rightly gives up
# on). The last chunk is held mid-copy (every attempt, until released), so
# the job cannot end before the tenth kill: once the other chunks are
# done, the kills hit the holder, and its chunk's next attempt holds again.
hold
MAPPER_FAULT=pause-mid-copy:49 "$COORD" --table big --workers 4 --chunk-size 20000 --max-retries 10 \
    --initial-delay 0.1 --job-id chaos --summary-json "$T_OUT/chaos.json" -v \
    >"$T_OUT/chaos.out" 2>"$T_OUT/chaos.err" &
pid=$!
kills=0 running_kills=0
while [ $kills -lt 10 ] && kill -0 $pid 2>/dev/null; do
    sleep "0.$((RANDOM % 3 + 1))"
    working=$(sed -n 's/.* worker\[\([0-9]*\)\] debug: chunk [0-9]* attempt [0-9]*: start$/\1/p' "$T_OUT/chaos.err" | sort -u)
    victim=$(pgrep -f "$MAPPER_BIN/mapper-worker" | grep -Fx -f <(echo "$working") | shuf -n 1)
    [ -n "$victim" ] && kill -9 "$victim" 2>/dev/null || continue
    kills=$((kills + 1))
    kill -0 $pid 2>/dev/null && running_kills=$((running_kills + 1))
done
release
wait $pid
check "chaos: exit 0" 0 "$?"
check "chaos: 10 workers killed while the job ran" 10 "$running_kills"
check "chaos: the coordinator saw each death" 10 "$(grep -c 'killed by signal 9' "$T_OUT/chaos.err")"
exact "chaos" big
check "chaos: ledger has every chunk done once" "0:1000000" "$(ledger_done_once chaos)"

# SIGKILL at each point of a chunk's life; after-commit is settled by the
# ledger instead of being copied again.
q "$SRC" "CREATE TABLE f(id bigint PRIMARY KEY, v text); INSERT INTO f SELECT g, md5(g::text) FROM generate_series(1, 50000) g"
q "$DST" "CREATE TABLE f(id bigint NOT NULL, v text)"
for point in mid-copy before-commit after-commit; do
    q "$DST" "TRUNCATE f"
    MAPPER_FAULT=$point:2 run_coord --restart --table f --workers 2 --chunk-size 5000 --initial-delay 0.1 --job-id "f-$point"
    check "kill at $point: exit 0" 0 "$RC"
    check_match "kill at $point: the worker died" "killed by signal 9" "$ERR"
    exact "kill at $point" f
done
check_match "after-commit: the ledger settled it" "chunk 2 .*(ledger says it committed|already committed)" "$ERR"

# SIGKILL of the coordinator at about half-way: nothing left running, and
# --resume finishes exactly.
q "$SRC" "CREATE TABLE h(id bigint PRIMARY KEY, v text); INSERT INTO h SELECT g, md5(g::text) FROM generate_series(1, 400000) g"
q "$DST" "CREATE TABLE h(id bigint NOT NULL, v text)"
# Chunk 20 of 40 is held mid-copy (hold/release), so the job is surely
# still running when the coordinator is killed.
hold
MAPPER_FAULT=pause-mid-copy:20 "$COORD" --table h --workers 2 --chunk-size 10000 --job-id k9 \
    >"$T_OUT/k9.out" 2>"$T_OUT/k9.err" &
pid=$!
held "$T_OUT/k9.err" 20
kill -9 $pid
wait $pid 2>/dev/null
release
check "coordinator SIGKILL: workers gone within 10 s" 0 "$(no_workers_left && sleep 0 && echo 0 || echo 1)"
partial=$(q "$DST" "SELECT count(*) FROM h")
check "coordinator SIGKILL: the target holds whole chunks only" 0 "$((partial % 10000))"
run_coord --table h --workers 2 --chunk-size 10000 --job-id k9 --resume --summary-json "$T_OUT/k9.json"
check "resume after SIGKILL: exit 0" 0 "$RC"
check_match "resume after SIGKILL: says so" "resumed" "$OUT"
check "resume after SIGKILL: json says resumed" true "$(json_field "$T_OUT/k9.json" resumed)"
exact "resume after SIGKILL" h
check "resume after SIGKILL: ledger every chunk done once" "0:400000" "$(ledger_done_once k9)"

# SIGTERM at about half-way: exit 75, the resume command, then --resume.
q "$DST" "TRUNCATE h"
hold
MAPPER_FAULT=pause-mid-copy:20 "$COORD" --table h --workers 2 --chunk-size 10000 --job-id term \
    >"$T_OUT/t.out" 2>"$T_OUT/t.err" &
pid=$!
held "$T_OUT/t.err" 20
kill -TERM $pid
release
wait $pid
check "SIGTERM: exit 75" 75 "$?"
check_match "SIGTERM: prints the resume command" "resume with:.*--table h .*--resume --job-id term" "$(tr '\n' ' ' <"$T_OUT/t.err")"
run_coord --table h --chunk-size 10000 --job-id term --restart --truncate
check "--restart --truncate of an unfinished job with committed chunks: exit 2" 2 "$RC"
check_match "--restart --truncate: says why" "--truncate refused: job term has committed chunks" "$ERR"
run_coord --table h --workers 2 --chunk-size 10000 --job-id term --resume
check "resume after SIGTERM: exit 0" 0 "$RC"
exact "resume after SIGTERM" h

# Refusals, each exit 2 with a line saying what is wrong.
run_coord --table h --workers 2 --chunk-size 5000 --job-id term --resume
check "resume with another --chunk-size: exit 2" 2 "$RC"
check_match "resume with another --chunk-size: says so" "job term was started with --chunk-size 10000, not 5000" "$ERR"
run_coord --table f --chunk-size 10000 --job-id term --resume
check "resume with another table: exit 2" 2 "$RC"
check_match "resume with another table: says so" "job term was started with table .*h.*, not .*f" "$ERR"
run_coord --table h --chunk-size 10000 --job-id term
check "same job id without --resume: exit 2" 2 "$RC"
check_match "same job id without --resume: says so" "job term already exists .*--resume.*--restart" "$ERR"
run_coord --table h --job-id nosuch --resume
check "--resume of an unknown job: exit 2" 2 "$RC"
run_coord --table h --job-id term --resume --truncate
check "--resume --truncate: exit 2" 2 "$RC"

# A finished job: --restart --truncate copies it afresh.
run_coord --table h --workers 2 --chunk-size 10000 --job-id term --restart --truncate
check "--restart --truncate of a finished job: exit 0" 0 "$RC"
exact "--restart --truncate of a finished job" h

# --truncate empties the target before a fresh job.
run_coord --table h --workers 2 --chunk-size 50000 --job-id tr --truncate
check "--truncate: exit 0" 0 "$RC"
exact "--truncate" h

# --no-ledger: no schema is created, and the summary says what it costs.
fresh_dbs noledger
q "$SRC" "CREATE TABLE n(id int PRIMARY KEY); INSERT INTO n SELECT generate_series(1, 1000)"
q "$DST" "CREATE TABLE n(id int PRIMARY KEY)"
run_coord --table n --no-ledger --chunk-size 100
check "--no-ledger: exit 0" 0 "$RC"
check "--no-ledger: no ledger schema created" 0 "$(q "$DST" "SELECT count(*) FROM pg_namespace WHERE nspname = 'mapper'")"
check_match "--no-ledger: summary warns of duplicates" "no ledger: a chunk retried" "$OUT"
exact "--no-ledger" n
finish
