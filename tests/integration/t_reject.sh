#!/usr/bin/env bash
# tests/integration/t_reject.sh - --on-bad-rows=reject on a real PostgreSQL:
# rows a CHECK constraint refuses (binary COPY) and values of the wrong type
# (text COPY) are set aside while every other row lands; the reject file
# holds exactly those rows, byte for byte, and FILE.log one line each;
# --max-rejects stops the job; the default still fails the chunk; a worker
# killed after reporting its rejects, before COMMIT, duplicates nothing;
# --resume keeps the count; 2,500 rejects from one chunk all arrive; a
# stream-mode query sets the same rows aside.
. "$(dirname "$0")/lib.sh"

fresh_dbs reject
# 100,000 rows in 3 chunks; 7 bad ones: the first and the last row, two
# pairs of neighbours, spread over all three chunks (3 + 3 + 1).
BAD="1, 17000, 17001, 50000, 50001, 60000, 100000"
q "$SRC" "CREATE TABLE b(id bigint PRIMARY KEY, v int, s text);
          INSERT INTO b SELECT g, CASE WHEN g IN ($BAD) THEN -g ELSE g END,
                 'row ' || g || E'\\ttab\\\\back\\nline'
          FROM generate_series(1, 100000) g"
q "$DST" "CREATE TABLE b(id bigint PRIMARY KEY, v int CONSTRAINT v_ok CHECK (v >= 0), s text)"
GOOD="(SELECT * FROM b WHERE v >= 0)"

# expect_rejects NAME FILE WHERE SQLSTATE: FILE holds exactly the source
# rows matching WHERE (COPY text, compared sorted) and FILE.log one line per
# row with SQLSTATE, over all 3 chunks.
expect_rejects() {
    local name=$1 file=$2 where=$3 state=$4
    psql -X -qAt -d "$SRC" -c "COPY (SELECT * FROM ${where}) TO STDOUT" | sort >"$T_OUT/want"
    sort "$file" >"$T_OUT/got"
    if cmp -s "$T_OUT/want" "$T_OUT/got"; then
        ok "$name: the reject file holds exactly the 7 bad rows, byte for byte"
    else
        fail "$name: the reject file differs: $(diff "$T_OUT/want" "$T_OUT/got" | head -5)"
    fi
    check "$name: 7 log lines" 7 "$(wc -l <"$file.log")"
    check "$name: every log line is 'chunk C row R $state message'" 7 \
        "$(grep -cE "^chunk [0-2] row [0-9]+ $state [^ ].*$" "$file.log")"
    check "$name: rejects from all 3 chunks" 3 "$(cut -d' ' -f2 "$file.log" | sort -u | wc -l)"
}

run_coord --table b --workers 3 --chunk-size 34000 --on-bad-rows=reject \
    --reject-file "$T_OUT/b.rej" --summary-json "$T_OUT/b.json"
check "CHECK violations rejected: exit 1" 1 "$RC"
check "3 chunks, none failed" "3 0" "$(jq -r '"\(.chunks_total) \(.chunks_failed)"' "$T_OUT/b.json")"
check "rows_rejected 7, total_rows_failed 7, 99993 successful" "7 7 99993" \
    "$(jq -r '"\(.rows_rejected) \(.total_rows_failed) \(.total_rows_successful)"' "$T_OUT/b.json")"
check_match "the summary table shows rows_rejected 7" "rows_rejected +7" "$OUT"
check "99,993 rows landed, exactly the good ones" "$(checksum "$SRC" "$GOOD")" "$(checksum "$DST" b)"
expect_rejects "CHECK" "$T_OUT/b.rej" "b WHERE v < 0" 23514
check_match "the log line names the constraint" 'violates check constraint "v_ok"' "$(head -1 "$T_OUT/b.rej.log")"
check "the ledger counts the rejected rows" 7 \
    "$(q "$DST" "SELECT sum(rejected) FROM mapper.chunks WHERE job_id = '$(jq -r .job_id "$T_OUT/b.json")'")"

# --resume of the finished job: nothing runs, the count comes from the ledger.
run_coord --resume --table b --workers 3 --chunk-size 34000 --on-bad-rows=reject \
    --reject-file "$T_OUT/resume.rej" --summary-json "$T_OUT/resume.json"
check "--resume: rows_rejected 7 from the ledger, exit 1" "7 1" \
    "$(jq -r .rows_rejected "$T_OUT/resume.json") $RC"
check "--resume: nothing written to its reject file" 0 "$(cat "$T_OUT/resume.rej" | wc -c)"

# A worker killed before COMMIT, after it reported its rejects: the retry
# reports them again, and the file holds each row once. A ledger from
# before the rejected column gets it back.
q "$DST" "TRUNCATE b; ALTER TABLE mapper.chunks DROP COLUMN rejected"
MAPPER_FAULT=before-commit:1 run_coord --restart --table b --workers 3 --chunk-size 34000 \
    --initial-delay 0.1 --on-bad-rows=reject --reject-file "$T_OUT/k.rej" \
    --summary-json "$T_OUT/k.json"
check_match "the fault fired in chunk 1 after isolation" \
    "chunk 1 attempt 1: 3 of [0-9]+ rows set aside.*fault injection at before-commit" "$(echo $ERR)"
check "killed and retried: exit 1, no failed chunk, 7 rejected" "1 0 7" \
    "$RC $(jq -r '"\(.chunks_failed) \(.rows_rejected)"' "$T_OUT/k.json")"
check "killed and retried: exact content" "$(checksum "$SRC" "$GOOD")" "$(checksum "$DST" b)"
expect_rejects "killed and retried" "$T_OUT/k.rej" "b WHERE v < 0" 23514

# --max-rejects 5 with one worker: chunks 0 and 1 reject 6 rows, so chunk 2
# never starts.
q "$DST" "TRUNCATE b"
run_coord --restart --table b --workers 1 --chunk-size 34000 --on-bad-rows=reject \
    --reject-file "$T_OUT/m.rej" --max-rejects 5 --summary-json "$T_OUT/m.json"
check "--max-rejects 5: exit 1" 1 "$RC"
check_match "--max-rejects 5: the limit is named" "more than 5 rows rejected \(--max-rejects 5\)" "$ERR"
check "--max-rejects 5: chunk 2 failed, not run" "2 not run: more than 5 rows rejected (--max-rejects 5)" \
    "$(jq -r '.chunk_errors[] | "\(.chunk_id) \(.error)"' "$T_OUT/m.json")"
check "--max-rejects 5: 6 rows in the reject file" 6 "$(wc -l <"$T_OUT/m.rej")"

# The default: a CHECK violation fails its chunk, nothing is set aside.
q "$DST" "TRUNCATE b"
before=$(ls "$T_OUT" | sort)
run_coord --restart --table b --workers 3 --chunk-size 34000 --summary-json "$T_OUT/f.json"
check "--on-bad-rows=fail: no reject file written" "$before" "$(ls "$T_OUT" | grep -v '^f.json$' | sort)"
check "--on-bad-rows=fail (default): exit 1, 3 chunks failed, 0 rejected" "1 3 0" \
    "$RC $(jq -r '"\(.chunks_failed) \(.rows_rejected)"' "$T_OUT/f.json")"
check "--on-bad-rows=fail: every error is 23514" "23514" \
    "$(jq -r '[.chunk_errors[].sqlstate] | unique | join(",")' "$T_OUT/f.json")"
check "--on-bad-rows=fail: nothing landed" 0 "$(q "$DST" "SELECT count(*) FROM b")"

# A value of the wrong type (text into int: text COPY): 22P02.
q "$SRC" "CREATE TABLE n(id bigint PRIMARY KEY, n text);
          INSERT INTO n SELECT g, CASE WHEN g IN ($BAD) THEN 'x' || g ELSE g::text END
          FROM generate_series(1, 100000) g"
q "$DST" "CREATE TABLE n(id bigint PRIMARY KEY, n int)"
run_coord --table n --workers 3 --chunk-size 34000 --on-bad-rows=reject \
    --reject-file "$T_OUT/n.rej" --summary-json "$T_OUT/n.json"
check "type errors rejected: exit 1, 7 rejected, 99993 landed" "1 7 99993" \
    "$RC $(jq -r .rows_rejected "$T_OUT/n.json") $(q "$DST" "SELECT count(*) FROM n")"
check "type errors: the good rows landed intact" \
    "$(q "$SRC" "SELECT md5(string_agg(id || ':' || n, ',' ORDER BY id)) FROM n WHERE n NOT LIKE 'x%'")" \
    "$(q "$DST" "SELECT md5(string_agg(id || ':' || n, ',' ORDER BY id)) FROM n")"
expect_rejects "type" "$T_OUT/n.rej" "n WHERE n LIKE 'x%'" 22P02

# Every row of a chunk bad: 2,500 rejects from one worker, more than the
# send queue holds (1,000 messages); none may be dropped.
q "$SRC" "CREATE TABLE a(id int PRIMARY KEY, v int); INSERT INTO a SELECT g, -g FROM generate_series(1, 2500) g"
q "$DST" "CREATE TABLE a(id int PRIMARY KEY, v int CHECK (v > 0))"
run_coord --table a --workers 1 --on-bad-rows=reject --reject-file "$T_OUT/a.rej" \
    --summary-json "$T_OUT/a.json"
check "all 2,500 rows bad: exit 1, 2500 rejected, none landed" "1 2500 0" \
    "$RC $(jq -r .rows_rejected "$T_OUT/a.json") $(q "$DST" "SELECT count(*) FROM a")"
check "all 2,500 rows bad: each in the reject file once" 2500 "$(sort -u "$T_OUT/a.rej" | wc -l)"
check "all 2,500 rows bad: 2,500 log lines" 2500 "$(wc -l <"$T_OUT/a.rej.log")"

# Usage errors: exit 2, one line.
run_coord --table b --on-bad-rows=reject
check "reject without --reject-file: exit 2" 2 "$RC"
check_match "reject without --reject-file: named" "needs --reject-file" "$ERR"
run_coord --table b --reject-file "$T_OUT/x.rej"
check "--reject-file without reject: exit 2" 2 "$RC"
run_coord --table b --max-rejects 3
check "--max-rejects without reject: exit 2" 2 "$RC"
run_coord --table b --on-bad-rows=maybe
check "--on-bad-rows=maybe: exit 2" 2 "$RC"
run_coord --table b --on-bad-rows=reject --reject-file "$T_OUT/no/such/dir/r.rej"
check "an unopenable reject file: exit 2, one line" "2 1" "$RC $(echo "$ERR" | wc -l)"
check_match "an unopenable reject file: named" "cannot open .*r.rej for appending" "$ERR"

# Stream mode (a query without --split-by): writers set rows aside from the
# rows they hold (the stream is read as text).
q "$DST" "CREATE TABLE bs(id bigint, v int CONSTRAINT v_ok CHECK (v >= 0), s text)"
run_coord --query "SELECT * FROM b ORDER BY id" --target-table bs --workers 3 --chunk-size 34000 \
    --on-bad-rows=reject --reject-file "$T_OUT/bs.rej" --summary-json "$T_OUT/bs.json"
check "stream mode: CHECK violations rejected, exit 1" 1 "$RC"
check_match "stream mode: it was a stream" "stream mode: one reader" "$ERR"
check "stream mode: rows_rejected 7, 99993 successful" "7 99993" \
    "$(jq -r '"\(.rows_rejected) \(.total_rows_successful)"' "$T_OUT/bs.json")"
check "stream mode: exactly the good rows landed" "$(checksum "$SRC" "$GOOD")" "$(checksum "$DST" bs)"
expect_rejects "stream mode" "$T_OUT/bs.rej" "b WHERE v < 0" 23514

finish
