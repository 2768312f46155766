#!/usr/bin/env bash
# tests/integration/t_modes.sh - write modes (--mode): an upsert of a source
# with changed and new rows leaves the target equal to the source on its
# keys and every other row untouched, and a rerun changes nothing; a key
# without a unique index is refused before any chunk (exit 3); an upsert
# keeps the key's index under --defer-indexes; stream mode upserts too.
. "$(dirname "$0")/lib.sh"

fresh_dbs modes
q "$SRC" "CREATE TABLE ev(id int PRIMARY KEY, v text, n int);
          INSERT INTO ev SELECT g, 'v' || g, g % 7 FROM generate_series(1, 20000) g"
# make_target: ids 1..15000 of which every tenth has other values, and
# 100 rows the source does not have.
make_target() {
    q "$DST" "DROP TABLE IF EXISTS ev;
              CREATE TABLE ev(id int PRIMARY KEY, v text, n int);
              INSERT INTO ev SELECT g, CASE WHEN g % 10 = 0 THEN 'old' ELSE 'v' || g END,
                                    CASE WHEN g % 20 = 0 THEN NULL ELSE g % 7 END
              FROM generate_series(1, 15000) g;
              INSERT INTO ev SELECT g, 'mine', 0 FROM generate_series(30001, 30100) g"
}
make_target
others_before=$(checksum "$DST" "(SELECT * FROM ev WHERE id > 20000)")

run_coord --table ev --mode upsert --key id --workers 2 --chunk-size 3000 \
    --job-id up --summary-json "$T_OUT/up.json"
check "upsert: exit 0 ($ERR)" 0 "$RC"
check "upsert: the target equals the source on its keys" \
    "$(checksum "$SRC" ev)" "$(checksum "$DST" "(SELECT * FROM ev WHERE id <= 20000)")"
check "upsert: rows the source lacks are untouched" \
    "$others_before" "$(checksum "$DST" "(SELECT * FROM ev WHERE id > 20000)")"
check "upsert: summary JSON counts the rows inserted" 5000 "$(json_field "$T_OUT/up.json" rows_inserted)"
check "upsert: summary JSON counts the rows updated" 1500 "$(json_field "$T_OUT/up.json" rows_updated)"
check "upsert: summary JSON names the mode" upsert "$(json_field "$T_OUT/up.json" mode)"
check_match "upsert: the summary table counts them" \
    "rows_inserted +5000.*rows_updated +1500" "$(echo $OUT)"

check "upsert: the first run of the job" 1 "$(json_field "$T_OUT/up.json" run)"

# The same command again: a finished upsert starts its next run, which
# finds nothing to change.
run_coord --table ev --mode upsert --key id --workers 2 --chunk-size 3000 \
    --job-id up --summary-json "$T_OUT/up2.json"
check "upsert rerun: exit 0 ($ERR)" 0 "$RC"
check "upsert rerun: nothing inserted" 0 "$(json_field "$T_OUT/up2.json" rows_inserted)"
check "upsert rerun: nothing updated" 0 "$(json_field "$T_OUT/up2.json" rows_updated)"
check "upsert rerun: the summary JSON says run 2" 2 "$(json_field "$T_OUT/up2.json" run)"
check_match "upsert rerun: the summary table says run 2" "job_id +up \(run 2\)" "$OUT"
check "upsert rerun: the ledger numbers it" "2|done" "$(q "$DST" "SELECT run || '|' || status FROM mapper.jobs WHERE job_id = 'up'")"
check "upsert rerun: every chunk committed" 0 \
    "$(q "$DST" "SELECT count(*) FROM mapper.chunks WHERE job_id = 'up' AND state <> 'done'")"
check "upsert rerun: the target is the same" \
    "$(checksum "$SRC" ev)" "$(checksum "$DST" "(SELECT * FROM ev WHERE id <= 20000)")"

# A source row changed since: only it is updated (--resume=auto, as a
# supervisor runs it, also starts the next run of a finished upsert).
q "$SRC" "UPDATE ev SET v = 'new' WHERE id IN (7, 19999)"
run_coord --table ev --mode upsert --key id --workers 2 --chunk-size 3000 \
    --job-id up --resume=auto --summary-json "$T_OUT/up3.json"
check "upsert --resume=auto of a finished job: run 3" 3 "$(json_field "$T_OUT/up3.json" run)"
check "upsert of two changed rows: 2 updated" 2 "$(json_field "$T_OUT/up3.json" rows_updated)"
check "upsert of two changed rows: they changed" "new|new" \
    "$(q "$DST" "SELECT string_agg(v, '|' ORDER BY id) FROM ev WHERE id IN (7, 19999)")"

# --restart also starts the next run.
run_coord --table ev --mode upsert --key id --job-id up --restart --summary-json "$T_OUT/up4.json"
check "upsert --restart: exit 0 ($ERR)" 0 "$RC"
check "upsert --restart: run 4" 4 "$(json_field "$T_OUT/up4.json" run)"

# Append: a finished job is still refused, with what to do instead.
q "$DST" "CREATE TABLE app(id int, v text, n int)"
run_coord --table ev --target-table app --job-id app --workers 2 --chunk-size 5000
check "append: exit 0 ($ERR)" 0 "$RC"
run_coord --table ev --target-table app --job-id app --workers 2 --chunk-size 5000
check "append of a finished job again: exit 2" 2 "$RC"
check_match "append again: the message names --mode upsert" "--mode upsert" "$ERR"
check_match "append again: the message names --mode replace" "--mode replace" "$ERR"
check_match "append again: the message names --restart --truncate" "--restart --truncate" "$ERR"
check "append again: no row added" 20000 "$(q "$DST" "SELECT count(*) FROM app")"
run_coord --table ev --target-table app --job-id app --workers 2 --chunk-size 5000 --resume=auto --summary-json "$T_OUT/app.json"
check "append --resume=auto of a finished job: nothing to do" "0 true" \
    "$RC $(json_field "$T_OUT/app.json" already_done)"
run_coord --table ev --target-table app --job-id app --workers 2 --chunk-size 5000 --restart --truncate --summary-json "$T_OUT/app2.json"
check "append --restart --truncate: exit 0, run 2" "0 2" "$RC $(json_field "$T_OUT/app2.json" run)"
check "append --restart --truncate: the rows once" 20000 "$(q "$DST" "SELECT count(*) FROM app")"

# No unique index on the key: refused before any chunk, naming key and table.
q "$DST" "CREATE TABLE loose(id int, v text, n int); CREATE INDEX ON loose(id);
          CREATE TABLE two(id int, v text, n int, UNIQUE (id, n))"
run_coord --table ev --target-table loose --mode upsert --key id --job-id loose
check "no unique index on the key: exit 3" 3 "$RC"
check_match "no unique index on the key: the message names key and table" \
    "--key id: public.loose has no unique index" "$ERR"
check "no unique index on the key: no row written" 0 "$(q "$DST" "SELECT count(*) FROM loose")"
run_coord --table ev --target-table two --mode upsert --key id --job-id two
check "a unique index on more columns than the key: exit 3" 3 "$RC"
run_coord --table ev --target-table two --mode upsert --key n,id --job-id two \
    --summary-json "$T_OUT/two.json"
check "a two-column key (given in another order): exit 0 ($ERR)" 0 "$RC"
check "a two-column key: every row inserted" 20000 "$(json_field "$T_OUT/two.json" rows_inserted)"

# Usage errors.
run_coord --table ev --key id --job-id u1
check "--key without --mode upsert: exit 2" 2 "$RC"
run_coord --table ev --mode upsert --job-id u2
check "--mode upsert without --key: exit 2" 2 "$RC"
run_coord --table ev --mode upsert --key nope --job-id u3
check "--key naming a column not copied: exit 2" 2 "$RC"
run_coord --table ev --mode merge --job-id u4
check "--mode merge: exit 2" 2 "$RC"
# Flags that cannot go together are refused before any connection: with
# both servers unreachable the line names the flags, not the connection.
nowhere=postgresql://127.0.0.1:1/nowhere
for bad in "--key id" "--mode upsert" "--mode upsert --key id --no-ledger" \
    "--mode replace --truncate" "--mode replace --no-ledger"; do
    # shellcheck disable=SC2086 # the flags split on purpose
    run_coord --source "$nowhere" --target "$nowhere" --table ev $bad
    check "$bad, servers unreachable: exit 2" 2 "$RC"
    check "$bad, servers unreachable: the flags are named, not the connection" \
        "yes" "$(grep -q -- '--' <<<"$ERR" && ! grep -q unreachable <<<"$ERR" && echo yes)"
done

# Deferred indexes: an upsert into an empty target keeps the key's index,
# which ON CONFLICT needs, whatever --defer-indexes says.
for defer in auto on; do
    q "$DST" "TRUNCATE ev"
    run_coord --table ev --mode upsert --key id --workers 2 --chunk-size 3000 \
        --job-id "defer-$defer" --defer-indexes "$defer" --summary-json "$T_OUT/d.json"
    check "upsert, --defer-indexes $defer: exit 0 ($ERR)" 0 "$RC"
    check "upsert, --defer-indexes $defer: every row inserted" 20000 "$(json_field "$T_OUT/d.json" rows_inserted)"
    check "upsert, --defer-indexes $defer: the key's index stayed" "ev_pkey" \
        "$(q "$DST" "SELECT string_agg(indexrelid::regclass::text, ',') FROM pg_index WHERE indrelid = 'ev'::regclass")"
done

# Stream mode (a query without --split-by): the writers merge too.
make_target
run_coord --query "SELECT id, v, n FROM ev" --target-table ev --mode upsert --key id \
    --workers 2 --chunk-size 3000 --job-id stream --summary-json "$T_OUT/s.json"
check "stream upsert: exit 0 ($ERR)" 0 "$RC"
check "stream upsert: the target equals the source on its keys" \
    "$(checksum "$SRC" ev)" "$(checksum "$DST" "(SELECT * FROM ev WHERE id <= 20000)")"
check "stream upsert: rows inserted" 5000 "$(json_field "$T_OUT/s.json" rows_inserted)"
check "stream upsert: others untouched" \
    "$others_before" "$(checksum "$DST" "(SELECT * FROM ev WHERE id > 20000)")"

# Bad rows set aside (--on-bad-rows reject): a row the target's CHECK
# refuses is refused by the staging COPY and set aside; the rest merge.
q "$DST" "CREATE TABLE chk(id int PRIMARY KEY, v text, n int CHECK (n < 6));
          INSERT INTO chk VALUES (1, 'old', 0)"
run_coord --table ev --target-table chk --mode upsert --key id --workers 2 --chunk-size 3000 \
    --job-id chk --on-bad-rows reject --reject-file "$T_OUT/rej" --summary-json "$T_OUT/chk.json"
check "upsert with bad rows: exit 1 (rows rejected) ($ERR)" 1 "$RC"
check "upsert with bad rows: the n = 6 rows set aside" \
    "$(q "$SRC" "SELECT count(*) FROM ev WHERE n >= 6")" "$(json_field "$T_OUT/chk.json" rows_rejected)"
check "upsert with bad rows: the others merged" \
    "$(checksum "$SRC" "(SELECT * FROM ev WHERE n < 6)")" "$(checksum "$DST" chk)"
check "upsert with bad rows: one updated, the rest inserted" \
    "1 $(q "$SRC" "SELECT count(*) - 1 FROM ev WHERE n < 6")" \
    "$(json_field "$T_OUT/chk.json" rows_updated) $(json_field "$T_OUT/chk.json" rows_inserted)"

finish
