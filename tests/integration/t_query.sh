#!/usr/bin/env bash
# tests/integration/t_query.sh - --query: a 300,000-row join split on a
# result column; statements that are not a SELECT refused before anything
# runs; target tables created with the source's types (tables and queries,
# enums present or absent on the target); --if-target-missing=fail;
# --columns; usage errors.
. "$(dirname "$0")/lib.sh"

# A join with WHERE and ORDER BY; --split-by on a column of its result.
fresh_dbs qjoin
q "$SRC" "CREATE TABLE customers(id int PRIMARY KEY, name text, region int);
          CREATE TABLE orders(id bigint PRIMARY KEY, customer int REFERENCES customers, amount numeric(10,2), note text);
          INSERT INTO customers SELECT g, 'c' || g, g % 7 FROM generate_series(1, 1000) g;
          INSERT INTO orders SELECT g, 1 + g % 1000, g / 100.0, md5(g::text) FROM generate_series(1, 350000) g;
          ANALYZE"
join="SELECT o.id AS order_id, c.name, c.region, o.amount, o.note
      FROM orders o JOIN customers c ON c.id = o.customer
      WHERE o.id % 7 <> 0 AND c.region >= 0
      ORDER BY o.id DESC"
check "the join returns 300,000 rows" 300000 "$(q "$SRC" "SELECT count(*) FROM ($join) x")"
run_coord --query "$join" --target-table joined --split-by order_id --workers 4 --chunk-size 40000 \
    --summary-json "$T_OUT/j.json"
check "join query exits 0" 0 "$RC"
check "join: target equals the query's result" "$(checksum_query "$SRC" "$join")" "$(checksum "$DST" joined)"
check_match "join: several chunks" "^([2-9]|[1-9][0-9]+)$" "$(json_field "$T_OUT/j.json" chunks_succeeded)"
check "join: no chunk failed" 0 "$(json_field "$T_OUT/j.json" chunks_failed)"
check_match "join: the target was created" "created target table joined \\(5 columns\\)" "$ERR"
check_match "join: planned over the query's result" "planned [0-9]+ chunks \\(.*query's" "$ERR"

# A sparse key (every 5th id) is walked, with NULL keys in their own chunk.
sparse="SELECT CASE WHEN id % 50 = 1 THEN NULL ELSE id * 5 END AS k, note FROM orders WHERE id <= 40000"
run_coord --query "$sparse" --target-table sparse --split-by k --workers 3 --chunk-size 5000 \
    --summary-json "$T_OUT/s.json"
check "sparse key with NULLs exits 0" 0 "$RC"
check_match "sparse key: walked" "walk of the query's sorted result" "$ERR"
check "sparse key: target equals the query's result" "$(checksum_query "$SRC" "$sparse")" "$(checksum "$DST" sparse)"
check_match "sparse key: several chunks" "^([2-9]|[1-9][0-9]+)$" "$(json_field "$T_OUT/s.json" chunks_succeeded)"

# A dense key that repeats (350 rows per customer): equal key ranges,
# narrowed so that a chunk still holds about --chunk-size rows.
rep="SELECT customer, amount FROM orders WHERE id <= 70000"
run_coord --query "$rep" --target-table rep --split-by customer --workers 3 --chunk-size 7000 \
    --summary-json "$T_OUT/rep.json"
check "repeated dense key exits 0" 0 "$RC"
check_match "repeated dense key: equal key ranges" "equal key ranges over the query's result" "$ERR"
check "repeated dense key: exact" "$(checksum_query "$SRC" "$rep")" "$(checksum "$DST" rep)"
check "repeated dense key: 10 chunks of about 7000 rows" 10 "$(json_field "$T_OUT/rep.json" chunks_succeeded)"

# Without --split-by, a query is read once (stream mode): a small result
# is one chunk.
run_coord --query "SELECT id, name FROM customers WHERE region = 3  -- trailing comment" \
    --target-table region3 --workers 2 --summary-json "$T_OUT/r.json"
check "query without --split-by exits 0" 0 "$RC"
check "query without --split-by: one chunk" 1 "$(json_field "$T_OUT/r.json" chunks_succeeded)"
check "query without --split-by: exact" "$(checksum_query "$SRC" "SELECT id, name FROM customers WHERE region = 3")" \
    "$(checksum "$DST" region3)"

# --query-file, and a different query under the same job id is refused.
printf '%s;\n\n' "SELECT id, name FROM customers WHERE region = 4" >"$T_OUT/q.sql"
run_coord --query-file "$T_OUT/q.sql" --target-table region4 --job-id qf --workers 1 --split-by id
check "--query-file exits 0" 0 "$RC"
check "--query-file: exact" "$(checksum_query "$SRC" "SELECT id, name FROM customers WHERE region = 4")" \
    "$(checksum "$DST" region4)"
check "--query-file: the ledger holds the query" "SELECT id, name FROM customers WHERE region = 4" \
    "$(q "$DST" "SELECT rtrim(query, E';\\n') FROM mapper.jobs WHERE job_id = 'qf'")"
run_coord --query "SELECT id, name FROM customers WHERE region = 5" --target-table region4 --job-id qf \
    --split-by id --resume
check "--resume with another query: exit 2" 2 "$RC"
check_match "--resume with another query: names the field" "started with a different --query" "$ERR"
run_coord --query-file "$T_OUT/nope.sql" --target-table x
check "unreadable --query-file: exit 2" 2 "$RC"
check_match "unreadable --query-file: says why" "--query-file .*nope.sql: No such file" "$ERR"
check "unreadable --query-file: one line" 1 "$(printf '%s\n' "$ERR" | grep -c .)"

# Not a SELECT: refused with exit 2 before anything is created or run.
fresh_dbs qbad
q "$SRC" "CREATE TABLE t(id int PRIMARY KEY, v text); INSERT INTO t SELECT g, g::text FROM generate_series(1, 100) g"
before=$(checksum "$SRC" t)
for bad in "DELETE FROM t" "SELECT 1; SELECT 2" "INSERT INTO t VALUES (1000, 'x')" \
    "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d" "UPDATE t SET v = 'y'"; do
    run_coord --query "$bad" --target-table out --workers 1
    check "'$bad': exit 2" 2 "$RC"
    check_match "'$bad': says so" "--query: not a single SELECT statement: " "$ERR"
    check "'$bad': one line on stderr" 1 "$(printf '%s\n' "$ERR" | grep -c .)"
done
check "source unchanged" "$before" "$(checksum "$SRC" t)"
check "target table not created" "" "$(q "$DST" "SELECT to_regclass('out')")"
check "no ledger schema in the target" 0 "$(q "$DST" "SELECT count(*) FROM pg_namespace WHERE nspname = 'mapper'")"
run_coord --query "SELEC id FROM t" --target-table out
check "syntax error: exit 2" 2 "$RC"
run_coord --query "SELECT id, v AS id FROM t" --target-table out
check "duplicate result column: exit 2" 2 "$RC"
check_match "duplicate result column: named" "column \"id\" appears more than once.*alias it" "$ERR"
run_coord --query "SELECT id, v FROM t" --target-table out --split-by nope
check "unknown --split-by of a query: exit 2" 2 "$RC"
check_match "unknown --split-by: named" "--split-by: the query has no column \"nope\"" "$ERR"
run_coord --query "SELECT id, v FROM t" --target-table out --split-by v
check "text --split-by of a query: exit 2" 2 "$RC"
run_coord --query "SELECT id FROM t" --table t --target-table out
check "--query with --table: exit 2" 2 "$RC"
run_coord --query "SELECT id FROM t"
check "--query without --target-table: exit 2" 2 "$RC"
check_match "--query without --target-table: says so" "--query needs --target-table" "$ERR"
check "after all refusals: no table, no ledger" "0" \
    "$(q "$DST" "SELECT count(*) FROM pg_class WHERE relname IN ('out', 'jobs')")"

# Created target tables have the source's types, for a table and a query;
# an enum is used when the target has it, refused (exit 3) when not.
fresh_dbs qtypes
q "$SRC" "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
          CREATE TABLE ty(s int2, i int4 PRIMARY KEY, b int8, n numeric(10,2), ts timestamptz, j jsonb,
                          ai int[], at text[], by bytea, t text, m mood);
          INSERT INTO ty SELECT g::int2, g, g * 1000000000::int8, g / 3.0, '2024-01-01 00:00+00'::timestamptz + g * interval '1 hour',
                 jsonb_build_object('k', g), ARRAY[g, -g], ARRAY['a' || g, NULL], decode(md5(g::text), 'hex'),
                 E'tab\\there ' || g, (ARRAY['sad','ok','happy']::mood[])[1 + g % 3]
          FROM generate_series(1, 3000) g;
          INSERT INTO ty(i) VALUES (0)"
types="SELECT attname || ' ' || format_type(atttypid, atttypmod) FROM pg_attribute
       WHERE attrelid = '%s'::regclass AND attnum > 0 ORDER BY attnum"
run_coord --table ty --workers 2 --chunk-size 500
check "enum missing on the target: exit 3" 3 "$RC"
check_match "enum missing: names the column and type" "column \"m\" has type mood.*create the type or the table on the target first" "$ERR"
check "enum missing: no table created" "" "$(q "$DST" "SELECT to_regclass('ty')")"
q "$DST" "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')"
run_coord --table ty --workers 2 --chunk-size 500
check "created from a table: exit 0" 0 "$RC"
check "created from a table: same types" "$(q "$SRC" "$(printf "$types" ty)")" "$(q "$DST" "$(printf "$types" ty)")"
check "created from a table: identical data" "$(checksum "$SRC" ty)" "$(checksum "$DST" ty)"
check "created from a table: no constraints" 0 "$(q "$DST" "SELECT count(*) FROM pg_constraint WHERE conrelid = 'ty'::regclass")"
run_coord --query "SELECT * FROM ty" --target-table qty --split-by i --workers 2 --chunk-size 500
check "created from a query: exit 0" 0 "$RC"
check "created from a query: same types" "$(q "$SRC" "$(printf "$types" ty)")" "$(q "$DST" "$(printf "$types" qty)")"
check "created from a query: identical data" "$(checksum "$SRC" ty)" "$(checksum "$DST" qty)"
run_coord --query "SELECT i, m FROM ty" --target-table '"Q Mood"' --workers 1 --no-ledger
check "created with a quoted name: exit 0" 0 "$RC"
check "created with a quoted name: exact" "$(checksum_query "$SRC" "SELECT i, m FROM ty")" "$(checksum "$DST" '"Q Mood"')"

# --if-target-missing=fail, --columns, NOT NULL columns left out.
run_coord --table ty --target-table absent --if-target-missing=fail
check "--if-target-missing=fail: exit 3" 3 "$RC"
check_match "--if-target-missing=fail: names the table" "target table absent does not exist" "$ERR"
check "--if-target-missing=fail: nothing created" "" "$(q "$DST" "SELECT to_regclass('absent')")"
run_coord --table ty --target-table sub --columns 'i,t,n' --workers 2 --chunk-size 1000
check "--columns: exit 0" 0 "$RC"
check "--columns: only those columns, in that order" "i integer,t text,n numeric(10,2)" \
    "$(q "$DST" "$(printf "$types" sub)" | sed 's/ /§/; s/§/ /' | paste -sd,)"
check "--columns: identical data" "$(checksum_query "$SRC" "SELECT i, t, n FROM ty")" "$(checksum "$DST" sub)"
run_coord --table ty --target-table sub2 --columns 'i,T'
check "--columns unknown name (case-sensitive): exit 2" 2 "$RC"
check_match "--columns unknown name: named" "--columns: source table .*ty has no column \"T\"" "$ERR"
q "$DST" "CREATE TABLE strict(i int, t text, must int NOT NULL, also text NOT NULL, fine int NOT NULL DEFAULT 0,
                              idc int GENERATED ALWAYS AS IDENTITY)"
run_coord --table ty --target-table strict --columns i,t
check "NOT NULL target column left out: exit 3" 3 "$RC"
check_match "NOT NULL target columns: all named" "not copied, but NOT NULL without a default: \"must\", \"also\"$" "$ERR"
run_coord --table ty --target-table sub --columns i,t,n,m
check "copied column the target lacks: exit 3" 3 "$RC"
check_match "copied column the target lacks: named" "has no column \"m\"" "$ERR"
q "$DST" "DROP TABLE sub"
run_coord --table ty --target-table sub --columns i,t --resume --job-id nojob
check "--resume never creates the target: exit 3" 3 "$RC"
check_match "--resume: names the table" "target table sub does not exist" "$ERR"
check "no worker left behind" 0 "$(no_workers_left && echo 0 || echo 1)"
finish
