#!/usr/bin/env bash
# tests/integration/t_copy.sh - copies that must be exact: 200,000 rows with
# 4 workers, an empty table, many types, quoted identifiers, int4 -> int8
# (text path), a table without a key (ctid ranges), --split-by with NULLs,
# and a job run through the C library.
. "$(dirname "$0")/lib.sh"

fresh_dbs copy
q "$SRC" "CREATE TABLE events(id bigint PRIMARY KEY, account int, note text, amount numeric(12,2));
          INSERT INTO events SELECT g, g % 97, md5(g::text), g / 7.0 FROM generate_series(1, 200000) g;
          DELETE FROM events WHERE id BETWEEN 50000 AND 90000;  -- a gap"
q "$DST" "CREATE TABLE events(id bigint PRIMARY KEY, account int, note text, amount numeric(12,2))"
run_coord --table events --workers 4 --chunk-size 15000 --summary-json "$T_OUT/s.json"
check "200k copy exits 0" 0 "$RC"
check "200k copy: same rows and content" "$(checksum "$SRC" events)" "$(checksum "$DST" events)"
check "summary total_rows_successful" 159999 "$(json_field "$T_OUT/s.json" total_rows_successful)"
check "summary chunks all succeeded" "$(json_field "$T_OUT/s.json" chunks_total)" "$(json_field "$T_OUT/s.json" chunks_succeeded)"
check "summary chunks_failed" 0 "$(json_field "$T_OUT/s.json" chunks_failed)"
check_match "summary table printed" "total_rows_successful +159999" "$OUT"
check_match "binary COPY chosen for identical types" "binary COPY" "$ERR"

# One chunk of 10 MB: past its first MiB the relay reads the source in
# gulps (it naps when it has read all that came), and loses no row.
q "$DST" "TRUNCATE events; DROP SCHEMA mapper CASCADE"
run_coord --table events --workers 1 --chunk-size 200000 -v
check "one 10 MB chunk exits 0" 0 "$RC"
check "one 10 MB chunk: same rows and content" "$(checksum "$SRC" events)" "$(checksum "$DST" events)"
check_match "one 10 MB chunk: the relay read in gulps" "chunk 0 attempt 1: [0-9]+ bytes relayed, [1-9][0-9]* naps" "$ERR"

fresh_dbs empty
q "$SRC" "CREATE TABLE e(id int PRIMARY KEY, v text)"
q "$DST" "CREATE TABLE e(id int PRIMARY KEY, v text)"
run_coord --table e --workers 2 --summary-json "$T_OUT/e.json"
check "empty table exits 0" 0 "$RC"
check "empty table: 0 rows" 0 "$(json_field "$T_OUT/e.json" total_rows_successful)"
check "empty target stays empty" 0 "$(q "$DST" "SELECT count(*) FROM e")"

fresh_dbs types
ddl="CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
     CREATE TABLE ty(id int PRIMARY KEY, t text, n numeric, ts timestamptz, j jsonb,
                     b bytea, a int[], ta text[], u text, m mood, f float8, d date, bo bool)"
q "$SRC" "$ddl"
q "$DST" "$ddl"
q "$SRC" "INSERT INTO ty SELECT g, 'row ' || g || E'\ttab\nnewline\\\\backslash', g * 1.0001,
          '2024-01-01 00:00+00'::timestamptz + g * interval '1 minute',
          jsonb_build_object('k', g, 'arr', jsonb_build_array(g, 'x')),
          decode(md5(g::text), 'hex'), ARRAY[g, g + 1], ARRAY['a' || g, NULL, 'q\"uote'],
          'ünïcödé ✓ 日本 ' || g, (ARRAY['sad','ok','happy']::mood[])[1 + g % 3], g / 3.0,
          DATE '2020-02-29' + g, g % 2 = 0
          FROM generate_series(1, 5000) g;
          INSERT INTO ty(id) VALUES (0);  -- every other column NULL"
run_coord --table ty --workers 3 --chunk-size 700
check "many types exits 0" 0 "$RC"
check "many types: identical content" "$(checksum "$SRC" ty)" "$(checksum "$DST" ty)"
check_match "user type (enum) forces text COPY" "text COPY" "$ERR"

fresh_dbs quoted
ddl='CREATE SCHEMA "Sales"; CREATE TABLE "Sales"."Order Items"("Id" int PRIMARY KEY, "select" text, "Mixed Case" int)'
q "$SRC" "$ddl"
q "$DST" "$ddl"
q "$SRC" "INSERT INTO \"Sales\".\"Order Items\" SELECT g, 'v' || g, g FROM generate_series(1, 3000) g"
run_coord --table '"Sales"."Order Items"' --workers 2 --chunk-size 500
check "quoted identifiers exit 0" 0 "$RC"
check "quoted identifiers: identical content" "$(checksum "$SRC" '"Sales"."Order Items"')" "$(checksum "$DST" '"Sales"."Order Items"')"

fresh_dbs widen
q "$SRC" "CREATE TABLE w(id int4 PRIMARY KEY, v int4)"
q "$DST" "CREATE TABLE w(id int8 PRIMARY KEY, v int8, extra text DEFAULT 'x')"
q "$SRC" "INSERT INTO w SELECT g, -g FROM generate_series(1, 10000) g"
run_coord --table w --workers 2 --chunk-size 1000
check "int4 -> int8 exits 0" 0 "$RC"
check_match "int4 -> int8 uses text COPY" "text COPY" "$ERR"
check "int4 -> int8: identical values" "$(q "$SRC" "SELECT sum(id), sum(v) FROM w")" "$(q "$DST" "SELECT sum(id), sum(v) FROM w")"

fresh_dbs nokey
q "$SRC" "CREATE TABLE h(a int, b text); INSERT INTO h SELECT g % 10, md5(g::text) FROM generate_series(1, 30000) g; ANALYZE h"
q "$DST" "CREATE TABLE h(a int, b text)"
run_coord --table h --workers 3 --chunk-size 4000 --summary-json "$T_OUT/h.json"
check "no key (ctid ranges) exits 0" 0 "$RC"
check_match "ctid planning used" "ctid page ranges" "$ERR"
check "no key: identical content" "$(checksum "$SRC" h)" "$(checksum "$DST" h)"
check_match "no key: several chunks" "^([2-9]|[1-9][0-9]+)$" "$(json_field "$T_OUT/h.json" chunks_total)"

fresh_dbs splitby
q "$SRC" "CREATE TABLE s(k int, v text); INSERT INTO s SELECT CASE WHEN g % 10 = 0 THEN NULL ELSE (g * g) % 1000 END, g::text FROM generate_series(1, 20000) g"
q "$DST" "CREATE TABLE s(k int, v text)"
run_coord --table s --split-by k --workers 2 --chunk-size 3000
check "--split-by with NULLs and duplicates exits 0" 0 "$RC"
check "--split-by: identical content" "$(checksum "$SRC" s)" "$(checksum "$DST" s)"

fresh_dbs embed
q "$SRC" "CREATE TABLE em(id int PRIMARY KEY, v text); INSERT INTO em SELECT g, g::text FROM generate_series(1, 4321) g"
q "$DST" "CREATE TABLE em2(id int PRIMARY KEY, v text)"
emb=$("$MAPPER_BUILD/tests/embed_job" em em2 "$MAPPER_BIN/mapper-worker" 2>/dev/null)
check "library call (embed_job) returns 0 and counts rows" "rc=0 rows=4321 chunks=5/5" "$(echo "$emb" | head -1)"
check "library call: the program's own child is left for it to reap" "child=42" "$(echo "$emb" | tail -1)"
check "library call: identical content" "$(checksum "$SRC" em)" "$(checksum "$DST" em2)"
check "no worker left behind" 0 "$(no_workers_left && echo 0 || echo 1)"
finish
