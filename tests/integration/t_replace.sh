#!/usr/bin/env bash
# tests/integration/t_replace.sh - --mode replace: the rows load into a new
# table beside the target, which takes its place at the end with the
# target's indexes, constraints, foreign keys, comments, owner, grants,
# policies, triggers, sequences, publications and other tables' foreign
# keys into it, and the views over it made again over it (options,
# owners, grants, comments), all still working; readers see the old rows or the new, never a mix and never an empty table; kill -9 of
# the coordinator leaves the old table serving and --resume swaps; a
# finished replace run again starts its next run; what cannot be carried
# over is refused (exit 3) naming it.
. "$(dirname "$0")/lib.sh"

fresh_dbs repl
q "$SRC" "CREATE TABLE ev(id bigint PRIMARY KEY, cat int, name text, ref int);
          INSERT INTO ev SELECT g, g % 10, 'n' || g, 1 + g % 5 FROM generate_series(1, 200000) g"
q "$DST" "CREATE TABLE parent(id int PRIMARY KEY); INSERT INTO parent SELECT generate_series(1, 5);
          CREATE TABLE ev(id bigint NOT NULL, cat int DEFAULT 7 CHECK (cat >= 0), name text, ref int);
          ALTER TABLE ev ADD CONSTRAINT ev_pkey PRIMARY KEY (id);
          ALTER TABLE ev ADD CONSTRAINT ev_name_key UNIQUE (name);
          CREATE INDEX ev_cat_part ON ev(cat) WHERE cat > 5;
          CREATE INDEX ev_lower_name ON ev(lower(name));
          ALTER TABLE ev ADD CONSTRAINT ev_ref_fkey FOREIGN KEY (ref) REFERENCES parent(id);
          COMMENT ON TABLE ev IS 'events';
          INSERT INTO ev SELECT g, 1, 'old' || g, 1 FROM generate_series(1, 1000) g;
          ALTER TABLE ev ADD CONSTRAINT ev_ref_self FOREIGN KEY (ref) REFERENCES ev(id)"

# Views over the target, and over those, with options, owners, grants and
# comments, in another schema too: the swap makes them again over the new
# table.
q "$DST" "DO \$\$ BEGIN CREATE ROLE mapper_repl_owner; EXCEPTION WHEN duplicate_object THEN NULL; END \$\$;
          DO \$\$ BEGIN CREATE ROLE mapper_repl_reader; EXCEPTION WHEN duplicate_object THEN NULL; END \$\$;
          CREATE SCHEMA \"rep ort\";
          GRANT USAGE ON SCHEMA \"rep ort\" TO mapper_repl_owner, mapper_repl_reader;
          CREATE VIEW ev_named AS SELECT id, cat, name FROM ev WHERE cat < 9 WITH CASCADED CHECK OPTION;
          CREATE VIEW \"rep ort\".\"ev cat\" WITH (security_barrier) AS SELECT cat, count(*) AS n FROM ev GROUP BY cat;
          GRANT SELECT ON ev_named, \"rep ort\".\"ev cat\" TO mapper_repl_owner;
          GRANT SELECT (name) ON ev_named TO mapper_repl_reader;
          COMMENT ON VIEW \"rep ort\".\"ev cat\" IS 'rows per cat';
          COMMENT ON COLUMN \"rep ort\".\"ev cat\".n IS 'how many';
          CREATE VIEW \"rep ort\".ev_top AS SELECT e.id, e.name, c.n FROM ev_named e
                 JOIN \"rep ort\".\"ev cat\" c ON c.cat = e.id % 10;
          ALTER VIEW \"rep ort\".ev_top OWNER TO mapper_repl_owner;
          GRANT SELECT ON \"rep ort\".ev_top TO mapper_repl_reader"
# vdefs: the views of the target database: definition, options, owner,
# grants, comments, one a line, sorted.
vdefs() {
    q "$DST" "SELECT string_agg(x, E'\n' ORDER BY x) FROM (
                SELECT format('%s %s %s %s %s %s', c.oid::regclass, pg_get_viewdef(c.oid), c.reloptions,
                       pg_get_userbyid(c.relowner), c.relacl, obj_description(c.oid, 'pg_class')) AS x
                FROM pg_class c WHERE c.relkind = 'v' AND c.relnamespace::regnamespace::text NOT IN ('pg_catalog', 'information_schema')
                UNION ALL SELECT format('column %s.%s %s %s', a.attrelid::regclass, a.attname, a.attacl,
                       col_description(a.attrelid, a.attnum))
                FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid AND c.relkind = 'v'
                WHERE (a.attacl IS NOT NULL OR col_description(a.attrelid, a.attnum) IS NOT NULL)) s"
}
# top_as_reader: what the outermost view answers to a role granted it.
top_as_reader() {
    psql -X -qAt -d "$DST" -c "SET ROLE mapper_repl_reader" \
        -c "SELECT count(*) || ':' || sum(n) FROM \"rep ort\".ev_top" 2>&1
}
vbefore=$(vdefs)
vold=$(checksum "$DST" ev_named)
vnew=$(checksum "$SRC" "(SELECT id, cat, name FROM ev WHERE cat < 9)")
top_old=$(top_as_reader)

# Its triggers (one disabled, one with a condition), a sequence owned by
# its key column that gives the key's default, a publication with a
# column list and a row filter, another table's foreign key into it:
# carried over too.
q "$DST" "CREATE TABLE \"rep ort\".ev_log(id bigint);
          CREATE FUNCTION \"rep ort\".ev_logged() RETURNS trigger LANGUAGE plpgsql AS
              \$\$ BEGIN INSERT INTO \"rep ort\".ev_log VALUES (NEW.id); RETURN NEW; END \$\$;
          CREATE TRIGGER ev_count AFTER INSERT ON ev FOR EACH ROW WHEN (NEW.cat >= 0)
              EXECUTE FUNCTION \"rep ort\".ev_logged();
          COMMENT ON TRIGGER ev_count ON ev IS 'logs inserts';
          CREATE TRIGGER \"ev off\" BEFORE UPDATE ON ev FOR EACH ROW EXECUTE FUNCTION \"rep ort\".ev_logged();
          ALTER TABLE ev DISABLE TRIGGER \"ev off\";
          CREATE SEQUENCE ev_id_seq OWNED BY ev.id; ALTER TABLE ev ALTER id SET DEFAULT nextval('ev_id_seq');
          SELECT setval('ev_id_seq', 500000);
          CREATE PUBLICATION ev_pub FOR TABLE ev (id, cat, name) WHERE (cat > 2) WITH (publish = 'insert');
          CREATE TABLE \"rep ort\".child(ev_id bigint CONSTRAINT \"child ev\" REFERENCES ev(id) ON DELETE CASCADE);
          COMMENT ON CONSTRAINT \"child ev\" ON \"rep ort\".child IS 'each child has its ev';
          INSERT INTO \"rep ort\".child SELECT g FROM generate_series(1, 1000, 7) g" \
    >/dev/null
# The target's owner, grants (column grants too), comments, row-level
# security and policies: the new table gets them.
q "$DST" "ALTER TABLE ev OWNER TO mapper_repl_owner;
          GRANT SELECT ON ev TO mapper_repl_reader; GRANT UPDATE (name) ON ev TO mapper_repl_reader;
          GRANT SELECT ON ev TO PUBLIC;
          COMMENT ON COLUMN ev.name IS 'its name';
          ALTER TABLE ev ENABLE ROW LEVEL SECURITY;
          CREATE POLICY ev_read ON ev FOR SELECT TO mapper_repl_reader USING (cat < 5);
          CREATE POLICY \"ev not 3\" ON ev AS RESTRICTIVE TO PUBLIC USING (cat <> 3)
                 WITH CHECK (name IS NOT NULL)"
# ev_as_reader: the target's rows a role with a policy sees.
ev_as_reader() {
    psql -X -qAt -d "$DST" -c "SET ROLE mapper_repl_reader" -c "SELECT count(*) FROM ev" 2>&1
}
# defs: the target's columns, indexes and constraints, one a line, sorted.
defs() {
    q "$DST" "SELECT string_agg(x, E'\n' ORDER BY x) FROM (
                SELECT 'index ' || pg_get_indexdef(indexrelid) AS x FROM pg_index WHERE indrelid = 'ev'::regclass
                UNION ALL SELECT 'constraint ' || conname || ' ' || pg_get_constraintdef(oid)
                FROM pg_constraint WHERE conrelid = 'ev'::regclass
                UNION ALL SELECT 'column ' || attname || ' ' || format_type(atttypid, atttypmod) || ' '
                       || attnotnull || ' ' || coalesce(pg_get_expr(adbin, adrelid), '')
                FROM pg_attribute LEFT JOIN pg_attrdef ON adrelid = attrelid AND adnum = attnum
                WHERE attrelid = 'ev'::regclass AND attnum > 0 AND NOT attisdropped
                UNION ALL SELECT 'comment ' || obj_description('ev'::regclass, 'pg_class')
                UNION ALL SELECT format('owner %s rls %s %s', pg_get_userbyid(relowner), relrowsecurity,
                       relforcerowsecurity) FROM pg_class WHERE oid = 'ev'::regclass
                UNION ALL SELECT format('grant %s', a) FROM pg_class, aclexplode(relacl) a WHERE oid = 'ev'::regclass
                UNION ALL SELECT format('column %s grant %s comment %s', attname, a,
                       col_description(attrelid, attnum))
                FROM pg_attribute LEFT JOIN aclexplode(attacl) a ON true
                WHERE attrelid = 'ev'::regclass AND (attacl IS NOT NULL OR col_description(attrelid, attnum) IS NOT NULL)
                UNION ALL SELECT format('policy %s', p) FROM pg_policies p WHERE tablename = 'ev'
                UNION ALL SELECT format('trigger %s %s %s', pg_get_triggerdef(oid), tgenabled,
                       obj_description(oid, 'pg_trigger')) FROM pg_trigger WHERE tgrelid = 'ev'::regclass AND NOT tgisinternal
                UNION ALL SELECT format('publication %s', p) FROM pg_publication_tables p WHERE tablename = 'ev'
                UNION ALL SELECT 'sequence ' || pg_get_serial_sequence('ev', 'id')
                UNION ALL SELECT format('foreign key into it %s %s %s %s %s', conrelid::regclass, conname,
                       pg_get_constraintdef(oid), convalidated, obj_description(oid, 'pg_constraint'))
                FROM pg_constraint WHERE confrelid = 'ev'::regclass AND conrelid <> confrelid) s"
}
# tables: the tables of the target's schema.
tables() { q "$DST" "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"; }
before=$(defs)
old=$(checksum "$DST" ev)
new=$(checksum "$SRC" ev)

# A reader that reads the target's count and checksum in a loop, one line
# each, until told to stop; its last read starts after it was told.
reader() {
    local last=""
    while [ -z "$last" ]; do
        [ -e "$T_OUT/stop" ] && last=1
        checksum "$DST" ev >>"$T_OUT/seen" 2>>"$T_OUT/reader.err" || echo "error" >>"$T_OUT/seen"
    done
}
rm -f "$T_OUT/stop" "$T_OUT/seen"
reader &
reader_pid=$!
wait_for "$T_OUT/seen" "^$old\$"

# Held mid-copy: the target is untouched while the new table fills; then
# kill -9 of the coordinator leaves it so.
hold
MAPPER_FAULT=pause-mid-copy:10 "$COORD" --table ev --mode replace --workers 2 --chunk-size 10000 \
    --job-id r1 >"$T_OUT/k.out" 2>"$T_OUT/k.err" &
pid=$!
held "$T_OUT/k.err" 10
check "replace while loading: the target still has its old rows" "$old" "$(checksum "$DST" ev)"
check "replace while loading: the new table is beside it" "ev,ev_mapper_new,parent" "$(tables)"
check "replace while loading: the view answers the old rows" "$vold" "$(checksum "$DST" ev_named)"
kill -9 $pid
wait $pid 2>/dev/null
release
check "replace killed: no worker left" 0 "$(no_workers_left && echo 0 || echo 1)"
check "replace killed: the target still has its old rows" "$old" "$(checksum "$DST" ev)"
check "replace killed: its indexes and constraints are as they were" "$before" "$(defs)"
check "replace killed: the view still answers the old rows" "$vold" "$(checksum "$DST" ev_named)"
check "replace killed: the view over views answers as before" "$top_old" "$(top_as_reader)"
check "replace killed: a role with a policy sees the old rows" 1000 "$(ev_as_reader)"

run_coord --table ev --mode replace --workers 2 --chunk-size 10000 --job-id r1 --resume \
    --summary-json "$T_OUT/r1.json"
check "replace --resume: exit 0 ($ERR)" 0 "$RC"; echo "$ERR" | tail -5
touch "$T_OUT/stop"
wait $reader_pid
check "replace --resume: the target has exactly the source's rows" "$new" "$(checksum "$DST" ev)"
check "replace --resume: indexes, constraints, defaults, comments, owner, grants, policies carried over" \
    "$before" "$(defs)"
check "replace --resume: the policies hold (cat < 5, not 3)" 80000 "$(ev_as_reader)"
check "replace --resume: the new table took the target's place" "ev,parent" "$(tables)"
check "replace --resume: the view answers the new rows" "$vnew" "$(checksum "$DST" ev_named)"
check "replace --resume: the views' definitions, options, owners, grants and comments carried over" \
    "$vbefore" "$(vdefs)"
check "replace --resume: the view over views answers the new rows to a role granted it" \
    "180000:3600000000" "$(top_as_reader)"
check "replace --resume: the view's check option holds" 1 \
    "$(psql -X -qAt -d "$DST" -c "INSERT INTO ev_named VALUES (-1, 9, 'x')" 2>&1 | grep -c 'violates check option')"
check "replace --resume: summary JSON says swapped" "replace true" \
    "$(json_field "$T_OUT/r1.json" mode) $(json_field "$T_OUT/r1.json" swapped)"
check_match "replace --resume: the summary says so" "mode +replace \(swapped in\)" "$OUT"
bad=$(grep -v -x -e "$old" -e "$new" "$T_OUT/seen" | sort | uniq -c)
check "a reader saw only the old rows or the new ($(wc -l <"$T_OUT/seen") reads)" "" "$bad"
check "the reader saw the old rows" 1 "$(grep -c -m1 -x -e "$old" "$T_OUT/seen")"
check "the reader saw the new rows" 1 "$(grep -c -m1 -x -e "$new" "$T_OUT/seen")"
check "the foreign key checks the new table" 23503 \
    "$(psql -X -qAt -d "$DST" -c "INSERT INTO ev VALUES (0, 1, 'x', 99)" 2>&1 | grep -c 'violates foreign key' | sed 's/^1$/23503/')"
check "its foreign key into itself checks the new table" 1 \
    "$(psql -X -qAt -d "$DST" -c "INSERT INTO parent VALUES (-9); INSERT INTO ev VALUES (-8, 1, 'y', -9)" 2>&1 | grep -c 'violates foreign key constraint "ev_ref_self"')"
check "another table's foreign key checks the new table" 1 \
    "$(psql -X -qAt -d "$DST" -c "INSERT INTO \"rep ort\".child VALUES (999999)" 2>&1 | grep -c 'violates foreign key constraint "child ev"')"
check "the triggers did not fire while the new table was loaded" 0 "$(q "$DST" "SELECT count(*) FROM \"rep ort\".ev_log")"
check "the key's default takes the next value of the sequence it had" 500001 \
    "$(q "$DST" "INSERT INTO ev(cat, name, ref) VALUES (1, 'fresh', 1) RETURNING id")"
check "the trigger fires on the new table" 500001 "$(q "$DST" "SELECT string_agg(id::text, ',') FROM \"rep ort\".ev_log")"
check "the disabled trigger stays disabled" 500001 \
    "$(q "$DST" "UPDATE ev SET name = 'fresher' WHERE id = 500001; SELECT string_agg(id::text, ',') FROM \"rep ort\".ev_log")"

# The same command again: a finished replace starts its next run.
q "$SRC" "DELETE FROM ev WHERE id > 150000; UPDATE ev SET name = 'changed' WHERE id = 1"
run_coord --table ev --mode replace --workers 2 --chunk-size 10000 --job-id r1 --summary-json "$T_OUT/r2.json"
check "replace again: exit 0 ($ERR)" 0 "$RC"
check "replace again: run 2" 2 "$(json_field "$T_OUT/r2.json" run)"
check "replace again: the target is the source as it is now" "$(checksum "$SRC" ev)" "$(checksum "$DST" ev)"
check "replace again: definitions unchanged" "$before" "$(defs)"
check "replace again: views unchanged" "$vbefore" "$(vdefs)"

# Stream mode (a query without --split-by): the writers fill the new table.
run_coord --query "SELECT id, cat, name, ref FROM ev WHERE id <= 1000" --target-table ev \
    --mode replace --workers 2 --chunk-size 300 --job-id rq --summary-json "$T_OUT/rq.json"
check "stream replace: exit 0 ($ERR)" 0 "$RC"
check "stream replace: the target is the query's rows" \
    "$(checksum "$SRC" "(SELECT * FROM ev WHERE id <= 1000)")" "$(checksum "$DST" ev)"
check "stream replace: swapped, definitions unchanged" "true" "$(json_field "$T_OUT/rq.json" swapped)"
check "stream replace: definitions unchanged" "$before" "$(defs)"
check "stream replace: views unchanged" "$vbefore" "$(vdefs)"

# What the swap cannot carry over is refused before anything is loaded.
q "$DST" "CREATE MATERIALIZED VIEW ev_mv AS SELECT id FROM ev_named"
run_coord --table ev --mode replace --job-id r3
check "replace of a table with a materialized view over its view: exit 3" 3 "$RC"
check_match "replace of a table with a materialized view over its view: names it" \
    "cannot be replaced safely: materialized view ev_mv depends on it" "$ERR"
check "replace refused: nothing beside the target" "ev,parent" "$(tables)"
q "$DST" "DROP MATERIALIZED VIEW ev_mv;
          CREATE FUNCTION top_n() RETURNS bigint LANGUAGE sql BEGIN ATOMIC SELECT count(*) FROM \"rep ort\".ev_top; END"
run_coord --table ev --mode replace --job-id r3
check_match "replace of a table whose view a function's body reads: exit 3, names it" \
    '^3 .*function top_n\(\) depends on view "rep ort".ev_top' "$RC $ERR"
q "$DST" "DROP FUNCTION top_n(); CREATE RULE ev_log AS ON DELETE TO ev DO INSTEAD NOTHING"
run_coord --table ev --mode replace --job-id r3
check_match "replace of a table with a rule on it: exit 3, names it" "^3 .*rule ev_log is on it" "$RC $ERR"
q "$DST" "DROP RULE ev_log ON ev; GRANT SELECT ON ev TO mapper_repl_reader WITH GRANT OPTION;
          SET ROLE mapper_repl_reader; GRANT SELECT ON ev TO PUBLIC"
run_coord --table ev --mode replace --job-id r3
check_match "replace of a table with a grant its owner did not make: exit 3, names the grantor" \
    "^3 .*it has a grant by mapper_repl_reader, not its owner" "$RC $ERR"
q "$DST" "REVOKE GRANT OPTION FOR SELECT ON ev FROM mapper_repl_reader CASCADE;
          CREATE TABLE part(ev_id bigint REFERENCES ev(id)) PARTITION BY RANGE (ev_id)"
run_coord --table ev --mode replace --job-id r3
check_match "replace of a table a partitioned table's foreign key points to: exit 3, names it" \
    "^3 .*foreign key part_ev_id_fkey of part points to it from a partitioned table" "$RC $ERR"
q "$DST" "DROP TABLE part"
# A replace whose rows lack a key another table's rows point to: the swap
# is done, the foreign key is left NOT VALID (still checked for new rows),
# exit 1 naming it.
q "$DST" "INSERT INTO \"rep ort\".child VALUES (600)"
run_coord --query "SELECT id, cat, name, ref FROM ev WHERE id <= 500" --target-table ev \
    --split-by id --mode replace --job-id rfk --summary-json "$T_OUT/rfk.json"
check_match "replace that breaks a foreign key into the target: exit 1, names it" \
    '^1 .*foreign key constraint "child ev"' "$RC $ERR"
check "replace that breaks a foreign key into the target: swapped, the new rows in" "true 500" \
    "$(json_field "$T_OUT/rfk.json" swapped) $(q "$DST" "SELECT count(*) FROM ev")"
check "replace that breaks a foreign key into the target: it is NOT VALID" "f" \
    "$(q "$DST" "SELECT convalidated FROM pg_constraint WHERE conname = 'child ev'")"
check "replace that breaks a foreign key into the target: still checked for new rows" 1 \
    "$(psql -X -qAt -d "$DST" -c "INSERT INTO \"rep ort\".child VALUES (999999)" 2>&1 | grep -c 'violates foreign key')"
# Once the rows are fixed, --resume validates it (the ledger kept it).
q "$DST" "DELETE FROM \"rep ort\".child WHERE ev_id > 500"
run_coord --query "SELECT id, cat, name, ref FROM ev WHERE id <= 500" --target-table ev \
    --split-by id --mode replace --job-id rfk --resume
check "replace that broke a foreign key, the rows fixed, --resume: exit 0 ($ERR)" 0 "$RC"
check "replace that broke a foreign key, the rows fixed, --resume: it is valid again" "t" \
    "$(q "$DST" "SELECT convalidated FROM pg_constraint WHERE conname = 'child ev'")"
# kill -9 between the swap's commit and the validation: the foreign key is
# NOT VALID, and --resume validates it.
q "$DST" "DELETE FROM \"rep ort\".child WHERE ev_id > 400"
hold
MAPPER_FAULT=pause-after-swap:1 "$COORD" --query "SELECT id, cat, name, ref FROM ev WHERE id <= 400" \
    --target-table ev --split-by id --mode replace --job-id rkv >"$T_OUT/kv.out" 2>"$T_OUT/kv.err" &
pid=$!
wait_for "$T_OUT/kv.err" "fault injection at after-swap 1: pausing"
check "replace held after its swap: the foreign key into it is NOT VALID" "f 400" \
    "$(q "$DST" "SELECT convalidated FROM pg_constraint WHERE conname = 'child ev'") $(q "$DST" "SELECT count(*) FROM ev")"
kill -9 $pid
wait $pid 2>/dev/null
release
run_coord --query "SELECT id, cat, name, ref FROM ev WHERE id <= 400" --target-table ev \
    --split-by id --mode replace --job-id rkv --resume
check "replace killed after its swap, --resume: exit 0 ($ERR)" 0 "$RC"
check "replace killed after its swap, --resume: the foreign key is valid again" "t" \
    "$(q "$DST" "SELECT convalidated FROM pg_constraint WHERE conname = 'child ev'")"

# An identity column: the new table's identity goes on from the old one's
# last value, under its sequence's name.
q "$SRC" "CREATE TABLE idt(id bigint, x int); INSERT INTO idt SELECT g, g FROM generate_series(1001, 1050) g"
q "$DST" "CREATE TABLE idt(id bigint GENERATED ALWAYS AS IDENTITY (INCREMENT 2) PRIMARY KEY, x int);
          INSERT INTO idt(x) VALUES (1), (2), (3)"
run_coord --table idt --mode replace --job-id ri
check "replace of a table with an identity column: exit 0 ($ERR)" 0 "$RC"
check "replace of a table with an identity column: the source's rows" "$(checksum "$SRC" idt)" "$(checksum "$DST" idt)"
check "replace of a table with an identity column: it goes on from the old last value, same sequence name" \
    "7 public.idt_id_seq" \
    "$(q "$DST" "INSERT INTO idt(x) VALUES (0) RETURNING id") $(q "$DST" "SELECT pg_get_serial_sequence('idt', 'id')")"
check "replace of a table with an identity column: no sequence left behind" "idt_id_seq" \
    "$(q "$DST" "SELECT string_agg(relname, ',') FROM pg_class WHERE relkind = 'S' AND relname LIKE 'idt%'")"
run_coord --table ev --mode replace --truncate --job-id r4
check "replace with --truncate: exit 2" 2 "$RC"
run_coord --table ev --mode replace --key id --job-id r4
check "replace with --key: exit 2" 2 "$RC"

finish
