#!/usr/bin/env bash
# tests/integration/t_progress.sh - progress output: JSON lines that parse,
# never go backwards and end at 100% with the source's row count (also
# across a killed worker), key=value log lines, and the live bar in a real
# terminal (tmux), cleared before the summary.
. "$(dirname "$0")/lib.sh"

fresh_dbs prog
q "$SRC" "CREATE TABLE p(id bigint PRIMARY KEY, v text); INSERT INTO p SELECT g, md5(g::text) FROM generate_series(1, 120000) g"
q "$DST" "CREATE TABLE p(id bigint PRIMARY KEY, v text)"

# check_json FILE LABEL: the JSON-lines invariants.
check_json() {
    local f=$1 l=$2
    check "$l: every line parses as JSON" "$(grep -c . "$f")" "$(jq -c . "$f" 2>/dev/null | grep -c .)"
    check "$l: several lines" t "$([ "$(grep -c . "$f")" -ge 2 ] && echo t || echo f)"
    check "$l: total_rows_successful never decreases" true \
        "$(jq -s '[.[].total_rows_successful] as $r | all(range(1; $r | length); $r[.] >= $r[. - 1])' "$f")"
    check "$l: last line at 100%" 100 "$(tail -1 "$f" | jq '.progress_percentage | floor')"
    check "$l: last line rows = source rows" 120000 "$(tail -1 "$f" | jq .total_rows_successful)"
}

run_coord --restart --table p --workers 2 --chunk-size 8000 --progress json --progress-interval 0.05 \
    --progress-file "$T_OUT/p.jsonl"
check "json progress: exit 0" 0 "$RC"
check_json "$T_OUT/p.jsonl" "json progress"
check "json fields are the snapshot's" \
    "bytes_processed,chunks_in_progress,completed_chunks,elapsed_time,estimated_remaining_time,eta_known,failed_chunks,indexes_built,indexes_total,mode,phase,progress_percentage,retries,rows_in_flight,rows_per_second,rows_total_estimate,run,swap_s,total_chunks,total_rows_failed,total_rows_processed,total_rows_successful" \
    "$(head -1 "$T_OUT/p.jsonl" | jq -r 'keys - ["bytes_per_second", "workers", "workers_busy"] | join(",")')"

q "$DST" "TRUNCATE p"
MAPPER_FAULT=mid-copy:4 run_coord --restart --table p --workers 2 --chunk-size 8000 --progress json \
    --progress-interval 0.05 --progress-file "$T_OUT/k.jsonl"
check "killed worker: exit 0" 0 "$RC"
check_json "$T_OUT/k.jsonl" "killed worker"
check "killed worker: a retry is shown" 1 "$(tail -1 "$T_OUT/k.jsonl" | jq .retries)"

q "$DST" "TRUNCATE p"
run_coord --restart --table p --workers 2 --chunk-size 8000 --progress log --progress-interval 0.05
check "log progress: exit 0" 0 "$RC"
check_match "log progress: key=value line" 'progress job="p" pct=100\.0 chunks=15/15 .*rows=120000 ' "$ERR"
check_match "log progress: names the mode, the run and the phase (the key's deferred index rebuilt last)" \
    'progress job="p" pct=100\.0 .* mode=append run=[0-9]+ phase=indexes' "$ERR"
check_match "log progress: the summary names the mode" "mode +append" "$OUT"

# A replace: its lines name the mode and the run; the copy (held while a
# line is written) then the swap, which the last line times as the
# summary does.
hold
MAPPER_FAULT=pause-mid-copy:3 "$COORD" --table p --mode replace --job-id prep --workers 2 --chunk-size 8000 \
    --progress json --progress-interval 0.05 --progress-file "$T_OUT/r.jsonl" \
    --summary-json "$T_OUT/r.json" >"$T_OUT/r.out" 2>"$T_OUT/r.err" &
pid=$!
held "$T_OUT/r.err" 3
wait_for "$T_OUT/r.jsonl" '"phase":"copy"'
release
wait $pid
check "replace progress: exit 0" 0 "$?"
check "replace progress: every line names the mode and the run" "replace 1" \
    "$(jq -r '"\(.mode) \(.run)"' "$T_OUT/r.jsonl" | sort -u)"
check "replace progress: the copy, then the swap" "copy swap" \
    "$(jq -r .phase "$T_OUT/r.jsonl" | uniq | paste -sd' ')"
check "replace progress: the last line has the swap's seconds, as the summary" \
    "$(jq .swap_s "$T_OUT/r.json")" "$(tail -1 "$T_OUT/r.jsonl" | jq .swap_s)"
check "replace progress: a swap took some time" true "$(jq '.swap_s > 0' "$T_OUT/r.json")"
check_match "replace progress: the summary table has the swap" "mode +replace \(swapped in\)
  swap_s +[0-9]+\.[0-9]{3}" "$(cat "$T_OUT/r.out")"

# An upsert run again: its second run.
for _ in 1 2; do
    run_coord --table p --mode upsert --key id --job-id pup --workers 2 --chunk-size 8000 \
        --progress log --progress-interval 0.05
done
check "upsert again: exit 0" 0 "$RC"
check_match "upsert again: the progress names the mode and run 2" \
    'progress job="p" pct=100\.0 .* mode=upsert run=2 phase=copy' "$ERR"
MAPPER_PARALLEL_PROGRESS_ENABLED=false run_coord --table p
check "MAPPER_PARALLEL_PROGRESS_ENABLED=false: no progress lines" 0 "$(printf '%s' "$ERR" | grep -c 'progress job=')"
MAPPER_PARALLEL_PROGRESS_ENABLED=perhaps run_coord --table p
check "MAPPER_PARALLEL_PROGRESS_ENABLED=perhaps: exit 2" 2 "$RC"
run_coord --restart --table p --progress fancy
check "--progress fancy: exit 2" 2 "$RC"

# The bar in a real terminal: a chunk pauses mid-copy so the pane can be
# read mid-job; at the end the bar is gone and the summary is there.
q "$DST" "TRUNCATE p"
sock="$T_OUT/tmux.sock"
hold
tmux -S "$sock" new-session -d -x 160 -y 40 \
    "env MAPPER_FAULT=pause-mid-copy:3 MAPPER_FAULT_RELEASE=$MAPPER_FAULT_RELEASE MAPPER_WORKER_BIN=$MAPPER_WORKER_BIN MAPPER_SOURCE_URL=$SRC MAPPER_TARGET_URL=$DST $COORD --restart --table p --workers 2 --chunk-size 8000; echo EXIT=\$?; sleep 60"
mid=""
for _ in $(seq 2400); do
    mid=$(tmux -S "$sock" capture-pane -p)
    [[ "$mid" =~ \[#*-+\]\ +[0-9.]+% ]] && break
    sleep 0.05
done
release
check_match "bar mid-job: bar, percentage, rows, rate, eta, chunks, busy" \
    '\[#*-+\] +[0-9.]+% +[0-9.kM]+/120k rows .* rows/s .* MB/s .* eta .* chunks [0-9]+/15 busy [0-9]/2' "$mid"
end=""
for _ in $(seq 2400); do
    end=$(tmux -S "$sock" capture-pane -p)
    [[ "$end" == *EXIT=* ]] && break
    sleep 0.05
done
tmux -S "$sock" kill-server 2>/dev/null
check_match "bar: job ended with exit 0" "EXIT=0" "$end"
check_match "bar: summary printed" "total_rows_successful +120000" "$end"
check "bar: cleared before the summary (no bar line left)" 0 "$(printf '%s\n' "$end" | grep -c '\[#')"
check "bar: content exact" "$(checksum "$SRC" p)" "$(checksum "$DST" p)"
finish
