#!/usr/bin/env bash
# tests/integration/t_indexes.sh - deferred indexes (--defer-indexes): a
# target with a primary key, a partial, an expression and a collated index,
# unique constraints, a foreign key out and one in ends with every index and
# constraint as it was and the rows exact; what auto keeps and why; kill -9
# of the coordinator during the copy and during the rebuild, then --resume;
# a rebuild failing on duplicates under "on", fixed, resumed; with
# --on-bad-rows=reject and in stream mode.
. "$(dirname "$0")/lib.sh"

fresh_dbs idx
q "$SRC" "CREATE TABLE ev(id bigint PRIMARY KEY, cat int, name text, note text,
                          code text UNIQUE, tag text UNIQUE, ref int);
          INSERT INTO ev SELECT g, g % 10, 'n' || g, md5(g::text), 'c' || g, 't' || g, 1 + g % 5
          FROM generate_series(1, 60000) g"

# A tablespace of its own for two of the target's indexes.
# (A server started as root runs as postgres, which must own the directory.)
mkdir "$T_OUT/ts"
if [ "$(id -u)" = 0 ]; then chmod 711 "$T_OUT" && chown postgres "$T_OUT/ts"; fi
q "$DST" "CREATE TABLESPACE t_indexes_ts LOCATION '$T_OUT/ts'"

# make_target: the target table (empty) with its indexes and constraints,
# the table its foreign key points to, and a table whose foreign key
# depends on one of its unique constraints.
make_target() {
    q "$DST" "DROP TABLE IF EXISTS child, ev, parent;
              CREATE TABLE parent(id int PRIMARY KEY);
              INSERT INTO parent SELECT generate_series(1, 5);
              CREATE TABLE ev(id bigint NOT NULL, cat int, name text, note text, code text,
                              tag text, ref int);
              ALTER TABLE ev ADD CONSTRAINT ev_pkey PRIMARY KEY (id);
              CREATE INDEX ev_cat_part ON ev(cat) WHERE cat > 5;
              CREATE INDEX ev_lower_name ON ev(lower(name));
              CREATE INDEX ev_note_c ON ev(note COLLATE \"C\") TABLESPACE t_indexes_ts;
              ALTER TABLE ev ADD CONSTRAINT ev_code_key UNIQUE (code);
              ALTER TABLE ev ADD CONSTRAINT ev_tag_key UNIQUE (tag) USING INDEX TABLESPACE t_indexes_ts;
              CREATE UNIQUE INDEX ev_cat_name_uq ON ev(cat, name);
              ALTER TABLE ev ADD CONSTRAINT ev_ref_fkey FOREIGN KEY (ref) REFERENCES parent(id);
              CREATE TABLE child(code text REFERENCES ev(code))"
}

# defs: every index (name, definition, tablespace) and constraint of ev
# and child, one a line, sorted.
defs() {
    q "$DST" "SELECT string_agg(x, E'\n' ORDER BY x) FROM (
                SELECT 'index ' || c.relname || ' ' || pg_get_indexdef(i.indexrelid) || ' ts='
                       || coalesce(t.spcname, '') AS x
                FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                LEFT JOIN pg_tablespace t ON t.oid = c.reltablespace
                WHERE i.indrelid IN ('ev'::regclass, 'child'::regclass)
                UNION ALL
                SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' '
                       || pg_get_constraintdef(oid) || ' valid=' || convalidated
                FROM pg_constraint WHERE conrelid IN ('ev'::regclass, 'child'::regclass)) s"
}
n_indexes() { q "$DST" "SELECT count(*) FROM pg_index WHERE indrelid = 'ev'::regclass"; }

make_target
before=$(defs)
want=$(checksum "$SRC" ev)
check "target has its 7 indexes before" 7 "$(n_indexes)"
check "two of them in their own tablespace" 2 "$(grep -c 'ts=t_indexes_ts' <<<"$before")"

# auto: the job ends with the same definitions, the rows exact.
run_coord --table ev --workers 2 --chunk-size 10000 --job-id a --summary-json "$T_OUT/a.json"
check "auto: exit 0" 0 "$RC"
check "auto: rows exact" "$want" "$(checksum "$DST" ev)"
check "auto: every index and constraint as before" "$before" "$(defs)"
check_match "auto: keeps the unique index the source does not guarantee, says why" \
    "keeping .*ev_cat_name_uq.*source" "$ERR"
check_match "auto: keeps the constraint another table's foreign key needs, says why" \
    "keeping .*ev_code_key.*foreign key" "$ERR"
check "auto: json lists the deferred" "ev_cat_part,ev_lower_name,ev_note_c,ev_pkey,ev_ref_fkey,ev_tag_key" \
    "$(jq -r '.deferred_indexes | sort | join(",")' "$T_OUT/a.json")"
check_match "auto: json has index_build_s" "^[0-9.]+$" "$(json_field "$T_OUT/a.json" index_build_s)"
check_match "auto: summary shows the index build" "index_build_s .*deferred: ev_pkey" "$OUT"
check "auto: the ledger's records are done" 0 \
    "$(q "$DST" "SELECT count(*) FROM mapper.indexes WHERE job_id = 'a' AND step < 3")"

# off: nothing dropped (the copy itself is today's).
make_target
run_coord --table ev --workers 2 --chunk-size 10000 --job-id off --defer-indexes off \
    --summary-json "$T_OUT/off.json"
check "off: exit 0" 0 "$RC"
check "off: rows exact" "$want" "$(checksum "$DST" ev)"
check "off: nothing deferred" 0 "$(jq -r '.deferred_indexes | length' "$T_OUT/off.json")"
check "off: definitions unchanged" "$before" "$(defs)"

# A target that is not empty: auto keeps everything, and says why.
q "$DST" "DELETE FROM ev WHERE id > 10"
run_coord --table ev --workers 2 --chunk-size 10000 --job-id notempty
check "non-empty target: exit 1 (duplicate keys kept out by the index)" 1 "$RC"
check_match "non-empty target: says why nothing is deferred" "not empty" "$ERR"
check "non-empty target: definitions unchanged" "$before" "$(defs)"

# The ledger never takes over an "indexes" table that is not its own.
q "$DST" "CREATE SCHEMA alien; CREATE TABLE alien.indexes(id int, note text)"
run_coord --table ev --workers 2 --state-schema alien --job-id alien
check "a user's indexes table in the ledger schema: exit 3" 3 "$RC"
check_match "a user's indexes table: named" '"alien"\.indexes exists and is not a ledger table' "$ERR"
check "a user's indexes table: no ledger table beside it" "" "$(q "$DST" "SELECT to_regclass('alien.jobs')")"

# A role that does not own the target may load it, not drop its indexes:
# nothing is deferred, and the job runs.
# One transaction each. In one, a loaded make check saw "deadlock
# detected": the TRUNCATE waited for a lock on ev held by another process
# (by all signs an autovacuum of ev after the DELETE above), which waited
# for the transaction itself (the GRANT on ev rewrote ev's pg_class row).
setup=$(psql -X -v ON_ERROR_STOP=1 -qAt -d "$DST" \
    -c "CREATE ROLE t_indexes_loader LOGIN PASSWORD 'loader-pw'" \
    -c "GRANT ALL ON SCHEMA public TO t_indexes_loader" \
    -c "GRANT INSERT, SELECT ON ev TO t_indexes_loader" -c "TRUNCATE ev CASCADE" \
    -c "GRANT CREATE ON DATABASE idx_dst TO t_indexes_loader" 2>&1) && rc=0 || rc=$?
check "not the owner: the role is set up (psql said: ${setup:-nothing})" 0 "$rc"
run_coord --table ev --target "postgresql://t_indexes_loader:loader-pw@127.0.0.1:$MAPPER_PG_PORT/idx_dst" \
    --state-schema loader_ledger --workers 2 --chunk-size 10000 --job-id notmine
check "not the owner: exit 0" 0 "$RC"
check_match "not the owner: says why nothing is deferred" "not this role's own" "$ERR"
check "not the owner: rows exact" "$want" "$(checksum "$DST" ev)"
check "not the owner: definitions unchanged" "$before" "$(defs)"

# kill -9 of the coordinator during the copy: the indexes are missing, a
# run says so and names --resume; --resume brings them back.
make_target
hold
MAPPER_FAULT=pause-mid-copy:3 "$COORD" --table ev --workers 2 --chunk-size 10000 --job-id k1 \
    >"$T_OUT/k1.out" 2>"$T_OUT/k1.err" &
pid=$!
held "$T_OUT/k1.err" 3
kill -9 $pid
wait $pid 2>/dev/null
release
no_workers_left
check "kill during copy: deferred indexes are gone meanwhile" 2 "$(n_indexes)"
run_coord --table ev --workers 2 --chunk-size 10000 --job-id k1
check "kill during copy: a new run is refused" 2 "$RC"
check_match "kill during copy: says indexes are missing and --resume restores them" \
    "index.* missing.*--resume" "$ERR"
run_coord --table ev --workers 2 --chunk-size 10000 --job-id k1 --resume
check "kill during copy: --resume exit 0" 0 "$RC"
check "kill during copy: rows exact" "$want" "$(checksum "$DST" ev)"
check "kill during copy: every index and constraint back" "$before" "$(defs)"

# kill -9 of the coordinator during the rebuild (held after index 2 of 5
# is built), then --resume.
make_target
hold
MAPPER_FAULT=pause-index-build:2 "$COORD" --table ev --workers 2 --chunk-size 10000 --job-id k2 \
    >"$T_OUT/k2.out" 2>"$T_OUT/k2.err" &
pid=$!
wait_for "$T_OUT/k2.err" "fault injection at index-build 2: pausing"
check "kill during rebuild: held after the second build" 0 "$?"
kill -9 $pid
wait $pid 2>/dev/null
release
no_workers_left
check "kill during rebuild: some indexes are still missing" 1 "$(($(n_indexes) < 7))"
run_coord --table ev --workers 2 --chunk-size 10000 --job-id k2 --resume --progress log \
    --progress-interval 0.1
check "kill during rebuild: --resume exit 0" 0 "$RC"
check "kill during rebuild: rows exact" "$want" "$(checksum "$DST" ev)"
check "kill during rebuild: every index and constraint back" "$before" "$(defs)"
check_match "kill during rebuild: progress shows the index phase" "indexes[ =][0-9]+/[0-9]+" "$ERR"

# SIGTERM during the rebuild: exit 75, the builds running are cancelled,
# and --resume finishes them.
make_target
hold
MAPPER_FAULT=pause-index-build:1 "$COORD" --table ev --workers 2 --chunk-size 10000 --job-id t1 \
    >"$T_OUT/t1.out" 2>"$T_OUT/t1.err" &
pid=$!
wait_for "$T_OUT/t1.err" "fault injection at index-build 1: pausing"
check "SIGTERM during rebuild: held after the first build" 0 "$?"
kill -TERM $pid
release
wait $pid
check "SIGTERM during rebuild: exit 75" 75 "$?"
check_match "SIGTERM during rebuild: says --resume rebuilds the rest" "interrupted; --resume rebuilds" "$(cat "$T_OUT/t1.err")"
check "SIGTERM during rebuild: some indexes are still missing" 1 "$(($(n_indexes) < 7))"
run_coord --table ev --workers 2 --chunk-size 10000 --job-id t1 --resume
check "SIGTERM during rebuild: --resume exit 0" 0 "$RC"
check "SIGTERM during rebuild: every index and constraint back" "$before" "$(defs)"

# on: a unique index the source does not guarantee is deferred too; the
# source has duplicates, so the rebuild fails naming the index and a key,
# and keeps its record; after the data is fixed, --resume rebuilds it.
fresh_dbs dup
q "$SRC" "CREATE TABLE d(id int PRIMARY KEY, k int); INSERT INTO d SELECT g, g FROM generate_series(1, 20000) g;
          UPDATE d SET k = 77 WHERE id = 5000"
q "$DST" "CREATE TABLE d(id int PRIMARY KEY, k int); CREATE UNIQUE INDEX d_k_uq ON d(k)"
dup_before=$(q "$DST" "SELECT pg_get_indexdef('d_k_uq'::regclass)")
run_coord --table d --workers 2 --chunk-size 5000 --job-id dup --defer-indexes on
check "on, duplicates: exit 1" 1 "$RC"
check_match "on, duplicates: names the index and the key" "d_k_uq.*\(k\)=\(77\)" "$ERR"
check "on, duplicates: the record is kept" 1 \
    "$(q "$DST" "SELECT count(*) FROM mapper.indexes WHERE job_id = 'dup' AND name = 'd_k_uq' AND step = 0")"
q "$DST" "UPDATE d SET k = -k WHERE id = 5000"
run_coord --table d --workers 2 --chunk-size 5000 --job-id dup --resume --defer-indexes on
check "on, duplicates fixed: --resume exit 0" 0 "$RC"
check "on, duplicates fixed: the index is back" "$dup_before" \
    "$(q "$DST" "SELECT pg_get_indexdef('d_k_uq'::regclass)")"

# --columns: a source key on a column not copied guarantees nothing.
q "$SRC" "CREATE TABLE c(id int PRIMARY KEY, a int UNIQUE, b int); INSERT INTO c SELECT g, g, g FROM generate_series(1, 1000) g"
q "$DST" "CREATE TABLE c(id int PRIMARY KEY, a int UNIQUE, b int)"
run_coord --table c --columns id,b --workers 2 --chunk-size 500 --summary-json "$T_OUT/c.json"
check "--columns: exit 0" 0 "$RC"
check "--columns: the key is deferred, the unique index on a column not copied kept" "c_pkey" \
    "$(jq -r '.deferred_indexes | join(",")' "$T_OUT/c.json")"
check_match "--columns: says why" "keeping c_a_key .*no unique index" "$ERR"

# --on-bad-rows=reject and stream mode both run with deferral.
fresh_dbs rj
q "$SRC" "CREATE TABLE r(id int PRIMARY KEY, v text); INSERT INTO r SELECT g, CASE WHEN g = 77 THEN NULL ELSE 'v' || g END FROM generate_series(1, 20000) g"
q "$DST" "CREATE TABLE rp(id int PRIMARY KEY); INSERT INTO rp SELECT generate_series(1, 19990);
          CREATE TABLE r(id int PRIMARY KEY, v text NOT NULL, CONSTRAINT r_id_fkey FOREIGN KEY (id) REFERENCES rp);
          CREATE INDEX r_v ON r(v)"
rdefs=$(q "$DST" "SELECT string_agg(pg_get_indexdef(indexrelid), ';' ORDER BY pg_get_indexdef(indexrelid)) FROM pg_index WHERE indrelid = 'r'::regclass")
run_coord --table r --workers 2 --chunk-size 5000 --on-bad-rows=reject --reject-file "$T_OUT/r.rej" \
    --summary-json "$T_OUT/r.json"
check "reject: exit 1 (rows set aside)" 1 "$RC"
check "reject: rows (one null, ten without a parent set aside)" 19989 "$(q "$DST" "SELECT count(*) FROM r")"
check_match "reject: keeps the foreign key, says why" "keeping r_id_fkey .*reject" "$ERR"
check "reject: both indexes deferred" 2 "$(jq -r '.deferred_indexes | length' "$T_OUT/r.json")"
check "reject: indexes back" "$rdefs" \
    "$(q "$DST" "SELECT string_agg(pg_get_indexdef(indexrelid), ';' ORDER BY pg_get_indexdef(indexrelid)) FROM pg_index WHERE indrelid = 'r'::regclass")"

q "$DST" "CREATE TABLE s(id int PRIMARY KEY, v text); CREATE INDEX s_v ON s(v)"
run_coord --query "SELECT id, v FROM r WHERE v IS NOT NULL ORDER BY id" --target-table s \
    --workers 2 --chunk-size 5000 --summary-json "$T_OUT/s.json"
check "stream: exit 0" 0 "$RC"
check "stream: rows" 19999 "$(q "$DST" "SELECT count(*) FROM s")"
check "stream: the key is kept (a query guarantees nothing), the index deferred" "s_v" \
    "$(jq -r '.deferred_indexes | join(",")' "$T_OUT/s.json")"
check_match "stream: says why the key is kept" "keeping .*s_pkey.*query" "$ERR"
check "stream: both indexes there" 2 "$(q "$DST" "SELECT count(*) FROM pg_index WHERE indrelid = 's'::regclass")"

# A stream job cannot be resumed: killed mid-copy, it is run again with
# --restart --truncate, which rebuilds the index the first run dropped.
sv=$(q "$DST" "SELECT pg_get_indexdef('s_v'::regclass)")
q "$DST" "TRUNCATE s"
hold
MAPPER_FAULT=pause-mid-copy:1 "$COORD" --query "SELECT id, v FROM r WHERE v IS NOT NULL ORDER BY id" \
    --target-table s --workers 2 --chunk-size 5000 --job-id st >"$T_OUT/st.out" 2>"$T_OUT/st.err" &
pid=$!
held "$T_OUT/st.err" 1
kill -9 $pid
wait $pid 2>/dev/null
release
no_workers_left
check "stream killed: its deferred index is missing" 0 "$(q "$DST" "SELECT count(*) FROM pg_class WHERE relname = 's_v'")"
run_coord --query "SELECT id, v FROM r WHERE v IS NOT NULL ORDER BY id" --target-table s \
    --workers 2 --chunk-size 5000 --job-id st --restart --truncate
check "stream killed: --restart --truncate exit 0" 0 "$RC"
check "stream killed: rows" 19999 "$(q "$DST" "SELECT count(*) FROM s")"
check "stream killed: the index is back" "$sv" "$(q "$DST" "SELECT pg_get_indexdef('s_v'::regclass)")"
finish
