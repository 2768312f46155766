#!/usr/bin/env bash
# tests/integration/t_lookahead.sh - a busy worker is handed its next chunk
# before it finishes the one it runs (no idle gap between chunks); a worker
# that dies gives that chunk back without using one of its attempts, and
# the job stays exact; a chunk is never held ahead while a worker idles.
. "$(dirname "$0")/lib.sh"

fresh_dbs ahead
q "$SRC" "CREATE TABLE la(id bigint PRIMARY KEY, v text); INSERT INTO la SELECT g, md5(g::text) FROM generate_series(1, 40000) g"
q "$DST" "CREATE TABLE la(id bigint PRIMARY KEY, v text)"

# One worker, held in the middle of chunk 3: chunk 4 is already its own
# (the first or a later one it holds ahead: its chunks may be short).
hold
MAPPER_FAULT=pause-mid-copy:3 "$COORD" -v --table la --workers 1 --chunk-size 2000 \
    --summary-json "$T_OUT/la.json" >"$T_OUT/la.out" 2>"$T_OUT/la.err" &
pid=$!
held "$T_OUT/la.err" 3
wait_for "$T_OUT/la.err" "chunk 4 attempt 1 -> w[0-9a-f]+ \\(ahead, [1-8] held\\)"
check_match "while chunk 3 runs, chunk 4 is handed out ahead" \
    "chunk 4 attempt 1 -> w[0-9a-f]+ \\(ahead, [1-8] held\\)" "$(cat "$T_OUT/la.err")"
victim=$(sed -n 's/.* worker\[\([0-9]*\)\] .*chunk 3: fault injection at mid-copy: pausing.*/\1/p' "$T_OUT/la.err")
kill -9 "$victim"
release
wait $pid
check "worker killed holding a chunk ahead: exit 0" 0 "$?"
check_match "its chunk ahead was taken back" "chunk 4: taken back before its turn" "$(cat "$T_OUT/la.err")"
check "exact content" "$(checksum "$SRC" la)" "$(checksum "$DST" la)"
check "no duplicate keys" 0 "$(q "$DST" "SELECT count(*) FROM (SELECT id FROM la GROUP BY id HAVING count(*) > 1) d")"
check "every chunk done once in the summary" 20 "$(json_field "$T_OUT/la.json" chunks_succeeded)"
check "the chunk it ran cost an attempt" 2 "$(q "$DST" "SELECT attempts FROM mapper.chunks WHERE chunk_id = 3")"
check "the chunk it held ahead cost none" 1 "$(q "$DST" "SELECT attempts FROM mapper.chunks WHERE chunk_id = 4")"

# Two chunks, two workers: neither is held ahead while the other idles.
q "$DST" "TRUNCATE la"
run_coord -v --restart --table la --workers 2 --chunk-size 20000
check "two chunks, two workers: exit 0" 0 "$RC"
check "two chunks, two workers: nothing held ahead" 0 "$(printf '%s\n' "$ERR" | grep -c '(ahead')"
check "two chunks, two workers: exact content" "$(checksum "$SRC" la)" "$(checksum "$DST" la)"

# Short chunks: a worker holds several ahead (about MAPPER_AHEAD_MS of
# them), and the loop rests between turns so that one turn hears several
# DONEs.
q "$DST" "TRUNCATE la"
run_coord -v --restart --table la --workers 2 --chunk-size 20 --summary-json "$T_OUT/short.json"
check "short chunks: exit 0" 0 "$RC"
check "short chunks: exact content" "$(checksum "$SRC" la)" "$(checksum "$DST" la)"
check_match "short chunks: a worker holds more than one ahead" \
    "\\(ahead, [2-9] held\\)" "$ERR"
rests=$(printf '%s\n' "$ERR" | sed -n 's/.* turns of the loop, \([0-9]*\) after a rest.*/\1/p')
check "short chunks: the loop rested (turns after a rest > 0)" 1 "$([ "${rests:-0}" -gt 0 ] && echo 1 || echo 0)"
check "short chunks: every chunk done once" 2000 "$(json_field "$T_OUT/short.json" chunks_succeeded)"
finish
