#!/usr/bin/env bash
# tests/integration/t_stream.sh - stream mode (a query without --split-by):
# a join with WHERE and ORDER BY copied exactly with chunks in the query's
# order, a writer and the reader SIGKILLed mid-job, memory bounded by the
# in-flight window at 500,000 and 2,000,000 rows, an empty result, a query failing
# mid-stream, and --resume refused.
. "$(dirname "$0")/lib.sh"

fresh_dbs stream
q "$SRC" "CREATE TABLE customers(id int PRIMARY KEY, name text, region text);
          INSERT INTO customers SELECT g, 'customer ' || g, (ARRAY['north','south','east'])[1 + g % 3]
          FROM generate_series(1, 1000) g;
          CREATE TABLE orders(id bigint PRIMARY KEY, customer int, amount numeric(12,2), note text);
          INSERT INTO orders SELECT g, 1 + g % 1000, (g % 10000) / 100.0, md5(g::text)
          FROM generate_series(1, 400000) g;"
# 300,100 rows: the orders of the 667 customers not in the east region
# (266,800) and those of the 333 others above id 300,000 (33,300).
QUERY="SELECT o.id, o.customer, c.name, o.amount, o.note
       FROM orders o JOIN customers c ON c.id = o.customer
       WHERE c.region <> 'east' OR o.id > 300000
       ORDER BY o.id"
want_rows=$(q "$SRC" "SELECT count(*) FROM ($QUERY) q")
want=$(checksum_query "$SRC" "$QUERY")

run_coord --query "$QUERY" --target-table report --workers 4 --chunk-size 25000 \
    --summary-json "$T_OUT/s.json" --progress none -v
check "stream join exits 0" 0 "$RC"
check "stream join: target equals the query's result" "$want" "$(checksum "$DST" report)"
check_match "stream join: the reader read its source in gulps" "source read: [0-9]+ bytes, [1-9][0-9]* naps" "$ERR"
check "stream join: rows reported" "$want_rows" "$(json_field "$T_OUT/s.json" total_rows_successful)"
check_match "stream mode announced" "stream mode: one reader" "$ERR"
chunks=$(json_field "$T_OUT/s.json" chunks_total)
check "stream join: chunks of 25,000 rows" "$(((want_rows + 24999) / 25000))" "$chunks"
# Each chunk commits in its own transaction: group the target's rows by
# xmin. The groups must be runs of the ORDER BY (no overlap), 25,000 rows
# each but the last, and the ledger's chunk k must hold result rows
# k*25000 .. k*25000+24999.
runs=$(q "$DST" "WITH g AS (SELECT xmin::text::bigint x, min(id) lo, max(id) hi, count(*) n
                            FROM report GROUP BY xmin)
                 SELECT count(*) FILTER (WHERE lo <= prev_hi) || ':' ||
                        count(*) FILTER (WHERE n <> 25000 AND hi <> (SELECT max(hi) FROM g))
                 FROM (SELECT lo, hi, n, lag(hi) OVER (ORDER BY lo) prev_hi FROM g) s")
check "stream join: each chunk is one run of the ORDER BY" "0:0" "$runs"
check "ledger: chunk k holds result rows from k*25000" \
    "0" "$(q "$DST" "SELECT count(*) FROM mapper.chunks WHERE kind = 'stream' AND lo <> chunk_id * 25000")"

fresh_dbs stream_kill
q "$SRC" "CREATE TABLE t(id int, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 300000) g"
MAPPER_FAULT=mid-copy:3 run_coord --query "SELECT * FROM t WHERE id % 7 <> 0" --target-table w \
    --workers 4 --chunk-size 20000 --progress none
check "writer SIGKILLed mid-chunk: exits 0" 0 "$RC"
check_match "writer SIGKILLed: the chunk was retried" "chunk 3 attempt 1 failed" "$ERR"
check "writer SIGKILLed: exact result" "$(checksum_query "$SRC" "SELECT * FROM t WHERE id % 7 <> 0")" "$(checksum "$DST" w)"
MAPPER_FAULT=after-send:4 run_coord --query "SELECT * FROM t ORDER BY id DESC" --target-table r \
    --workers 3 --chunk-size 20000 --progress none --job-id reader-killed
check "reader SIGKILLed: exits 0" 0 "$RC"
check_match "reader SIGKILLed: the read starts again" "reading it again from the first row" "$ERR"
check "reader SIGKILLed: exact result" "$(checksum "$SRC" t)" "$(checksum "$DST" r)"
check "reader SIGKILLed: every chunk committed once" \
    "15:15" "$(q "$DST" "SELECT count(*) || ':' || count(DISTINCT chunk_id) FROM mapper.chunks WHERE job_id = 'reader-killed' AND state = 'done'")"

run_coord --query "SELECT * FROM t WHERE id < 0" --target-table empty --workers 2 \
    --summary-json "$T_OUT/e.json" --progress none
check "empty result: exits 0" 0 "$RC"
check "empty result: no chunk" 0 "$(json_field "$T_OUT/e.json" chunks_total)"
check "empty result: target created and empty" 0 "$(q "$DST" "SELECT count(*) FROM empty")"

run_coord --query "SELECT id, 1 / (id - 150001) AS x FROM t ORDER BY id" --target-table bad \
    --workers 2 --chunk-size 20000 --progress none
check "query failing mid-stream: exits 1" 1 "$RC"
check_match "query failing mid-stream: the error is named" "22012" "$ERR"

# SIGTERM mid-stream: exit 75, and the printed command starts the job over
# (--restart --truncate), which ends exact.
hold
MAPPER_FAULT=pause-mid-copy:5 "$COORD" --query "SELECT * FROM t" --target-table term --workers 2 \
    --chunk-size 20000 --job-id term --grace 0 >"$T_OUT/t.out" 2>"$T_OUT/t.err" &
pid=$!
held "$T_OUT/t.err" 5
kill -TERM $pid
release
wait $pid
check "stream SIGTERM: exit 75" 75 "$?"
again=$(grep -A1 "a stream job starts over" "$T_OUT/t.err" | tail -1)
check_match "stream SIGTERM: prints a --restart --truncate command" \
    "--query 'SELECT \* FROM t'.* --restart --truncate --job-id term$" "$again"
eval "run_coord ${again#*mapper-coord} --progress none"
check "stream SIGTERM: the printed command exits 0" 0 "$RC"
check "stream SIGTERM: then exact" "$(checksum "$SRC" t)" "$(checksum "$DST" term)"

run_coord --query "SELECT * FROM t" --target-table w2 --workers 2 --progress none --max-inflight-chunks 0 --job-id s0
check "--max-inflight-chunks 0: refused (2)" 2 "$RC"
run_coord --query "SELECT * FROM t" --target-table w2 --workers 2 --progress none --job-id s1
run_coord --query "SELECT * FROM t" --target-table w2 --workers 2 --progress none --job-id s1 --resume
check "--resume of a stream job: refused (2)" 2 "$RC"
check_match "--resume of a stream job: says why" "cannot be picked up where it stopped" "$ERR"

# Memory: the coordinator holds at most --max-inflight-chunks chunks (2
# per worker: 8 here) plus the one being read, and each writer one chunk.
# The bound is computed from each run's own figures: base = the peak of the
# same job over an empty result; chunk = bytes / chunks. A held chunk can
# take up to four times its bytes at the peak (its buffer, grown by
# doubling; ZeroMQ's copy of frames being received or sent; holes the
# allocator keeps), so the coordinator's bound is
# base + 4 x (max-inflight + 1) x chunk + 4 MB, about 53 MB here (measured
# 28-43 MB, quiet or loaded); a writer's is base + 4 x chunk + 8 MB: its
# fixed part (libpq's output buffer grown to a 1 MB piece, the relay's
# buffer, ZeroMQ's receive thread's own malloc arena) is larger than the
# coordinator's, and it reached base + 8.96 MB once under a CPU hog at
# 500,000 rows (4.4 MB of chunks). Both hold whatever the size of the
# result: a writer that kept all it was sent would hold 28 MB over its base
# at 500,000 rows and 110 MB at 2,000,000; a coordinator that ignored the
# credit reached 73 MB at 2,000,000 rows.
fresh_dbs stream_mem
q "$SRC" "CREATE TABLE big(id bigint, a int, note text);
          INSERT INTO big SELECT g, g % 1000, md5(g::text) FROM generate_series(1, 2000000) g"
inflight=8
for n in 0 500000 2000000; do
    run_coord --query "SELECT * FROM big WHERE id <= $n" --target-table m$n --workers 4 \
        --chunk-size 20000 --max-inflight-chunks $inflight --summary-json "$T_OUT/m$n.json" --progress none
    check "memory run $n: exits 0" 0 "$RC"
    check "memory run $n: rows" "$n" "$(json_field "$T_OUT/m$n.json" total_rows_successful)"
done
for who in coord worker; do
    if [ -n "${ASAN_OPTIONS:-}" ]; then # make check-asan: not a measure
        echo "# memory bounds not checked under AddressSanitizer (its shadow memory and quarantine inflate RSS)"
        break
    fi
    base=$(json_field "$T_OUT/m0.json" ${who}_max_rss_kb)
    for n in 500000 2000000; do
        chunk_kb=$(jq '.bytes / .chunks_total / 1024 | ceil' "$T_OUT/m$n.json")
        copies=4
        [ $who = coord ] && copies=$((4 * (inflight + 1)))
        fixed=8192
        [ $who = coord ] && fixed=4096
        bound=$((base + copies * chunk_kb + fixed))
        peak=$(json_field "$T_OUT/m$n.json" ${who}_max_rss_kb)
        echo "# peak RSS of the $who at $n rows: $peak kB; base $base kB, chunk $chunk_kb kB, bound $bound kB"
        if [ "$peak" -le "$bound" ]; then ok "memory: $who at $n rows within base + $copies chunks + $((fixed / 1024)) MB"
        else fail "memory: $who at $n rows: $peak kB, bound $bound kB (base $base + $copies x $chunk_kb + $fixed)"; fi
    done
done

finish
