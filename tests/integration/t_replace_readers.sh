#!/usr/bin/env bash
# tests/integration/t_replace_readers.sh - while a --mode replace of
# 1,000,000 rows runs, one reader session counts and checksums the target
# every 10 ms: it only ever sees the old content or the new (the old
# before, the new after, never an error), and no read waits on a lock for
# longer than the swap took. A second session holding the target (a long
# read) makes the swap wait, so that a read is sure to queue behind it.
. "$(dirname "$0")/lib.sh"

fresh_dbs rdr
q "$SRC" "CREATE TABLE ev(id bigint PRIMARY KEY, cat int, name text);
          INSERT INTO ev SELECT g, g % 10, 'n' || g FROM generate_series(1, 1000000) g"
q "$DST" "CREATE TABLE ev(id bigint PRIMARY KEY, cat int, name text);
          CREATE INDEX ev_cat ON ev(cat);
          INSERT INTO ev SELECT g, 1, 'old' || g FROM generate_series(1, 100000) g"

# What a read sees: count and checksum (cheap enough to repeat: one scan).
SEEN="count(*) || ':' || sum(hashtext(name)::bigint + id * cat)"
old=$(q "$DST" "SELECT $SEEN FROM ev")
new=$(q "$SRC" "SELECT $SEEN FROM ev")
check "old and new content differ in count and checksum" "100000 1000000 t" \
    "${old%%:*} ${new%%:*} $([ "${old#*:}" != "${new#*:}" ] && echo t || echo f)"

# The reader: one session (psql's \watch, 10 ms between reads). Each line:
# when the statement started, when its first row was read (the relation
# was locked and the plan made by then), when it ended (epoch seconds),
# and what it saw. The first line is its backend pid.
cat >"$T_OUT/reader.sql" <<EOF
SELECT pg_backend_pid() \g
SELECT extract(epoch FROM statement_timestamp()), extract(epoch FROM min(clock_timestamp())),
       $SEEN, extract(epoch FROM clock_timestamp()) FROM ev \watch 0.01
EOF
psql -X -qAt -F ' ' -d "$DST" -f "$T_OUT/reader.sql" >"$T_OUT/reads" 2>"$T_OUT/reader.err" &
reader=$!
# reads: the reads so far.
reads() { tail -n +2 "$T_OUT/reads" | grep -c .; }
wait_for "$T_OUT/reads" " $old "
reader_pid=$(head -1 "$T_OUT/reads")

# Held mid-copy: the reader keeps reading the old rows while the new table
# fills (five more reads, whatever their pace).
hold
MAPPER_FAULT=pause-mid-copy:5 "$COORD" --table ev --mode replace --workers 2 --chunk-size 100000 \
    --job-id rr --summary-json "$T_OUT/rr.json" --progress none >"$T_OUT/c.out" 2>"$T_OUT/c.err" &
coord=$!
held "$T_OUT/c.err" 5
n=$(reads)
for _ in $(seq 2400); do [ "$(reads)" -ge $((n + 5)) ] && break; sleep 0.05; done
check "reads go on while the new table loads" t "$([ "$(reads)" -ge $((n + 5)) ] && echo t || echo f)"

# A long read holds the target (open transaction) until the swap waits
# for it and the reader queues behind the swap; then it lets go.
mkfifo "$T_OUT/blocker.in"
psql -X -qAt -d "$DST" <"$T_OUT/blocker.in" >"$T_OUT/blocker.out" 2>&1 &
blocker=$!
exec 7>"$T_OUT/blocker.in"
echo "BEGIN; SELECT 'holding', count(*) FROM ev;" >&7
wait_for "$T_OUT/blocker.out" "^holding"
release
# waiting PID: whether backend PID waits for a lock on the target.
waiting() {
    [ "$(q "$DST" "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'relation'
                   AND relation = 'ev'::regclass AND pid = $1")" != 0 ]
}
swap_pid=""
for _ in $(seq 2400); do
    swap_pid=$(q "$DST" "SELECT pid FROM pg_locks WHERE NOT granted AND locktype = 'relation'
                         AND relation = 'ev'::regclass AND pid <> $reader_pid LIMIT 1")
    [ -n "$swap_pid" ] && break
    kill -0 $coord 2>/dev/null || break
    sleep 0.05
done
check "the swap waits for the long read" t "$([ -n "$swap_pid" ] && echo t || echo f)"
for _ in $(seq 2400); do waiting "$reader_pid" && break; sleep 0.05; done
check "the reader queues behind the swap" t "$(waiting "$reader_pid" && echo t || echo f)"
echo "COMMIT;" >&7
exec 7>&-
wait $blocker

wait $coord
rc=$?
check "replace: exit 0 ($(tail -3 "$T_OUT/c.err"))" 0 "$rc"
check "replace: the target has the new rows" "$new" "$(q "$DST" "SELECT $SEEN FROM ev")"
swap_s=$(json_field "$T_OUT/rr.json" swap_s)
check_match "replace: the summary says how long the swap took" '^[0-9]+\.[0-9]+$' "$swap_s"
check_match "replace: the log says so too" "replace: swapped in [0-9.]+ s" "$(cat "$T_OUT/c.err")"

# Two reads of the new rows after the job, then the reader stops.
for _ in $(seq 2400); do
    [ "$(grep -c " $new " "$T_OUT/reads")" -ge 2 ] && break
    kill -0 $reader 2>/dev/null || break
    sleep 0.05
done
kill -INT $reader
wait $reader
# The reader's only error is the cancel that stopped it.
check "the reader met no error" "" \
    "$(grep -v -e 'canceling statement due to user request' -e '^Cancel request sent' "$T_OUT/reader.err")"

tail -n +2 "$T_OUT/reads" | awk 'NF == 4' >"$T_OUT/reads4"
check "every read ended with a result line" "$(reads)" "$(grep -c . "$T_OUT/reads4")"
seen=$(awk '{ print $3 }' "$T_OUT/reads4")
check "every read saw the old rows or the new ($(reads) reads)" "" \
    "$(grep -v -x -e "$old" -e "$new" <<<"$seen" | sort | uniq -c)"
check "the reads saw the old rows, then the new, once switched" "$old
$new" "$(uniq <<<"$seen")"
check "reads before the swap and after" t \
    "$([ "$(grep -c -x "$old" <<<"$seen")" -ge 5 ] && [ "$(grep -c -x "$new" <<<"$seen")" -ge 2 ] && echo t || echo f)"

# The lock-wait bound. A read's wait is the time from its start until it
# read its first row (the lock is taken and the plan made in between):
# a read that queued behind the swap waited from some moment after the
# swap asked for its lock until the swap committed, all inside the span
# the coordinator measured around the swap's transaction (swap_s, from
# before its BEGIN to after its COMMIT returned). The slack covers what
# lies outside that span: the woken reader being scheduled and planning
# its read on a busy 2-core machine; a swap that holds the target's lock
# outside its transaction (e.g. while building the new indexes) makes a
# read wait for seconds, far beyond it.
slack=0.25
worst=$(awk '{ w = $2 - $1; if (w > m) m = w } END { printf "%.3f", m }' "$T_OUT/reads4")
check "the read that waited longest (the one queued behind the swap) saw the new rows" "$new" \
    "$(sort -k2,2 -g <(awk '{ printf "%s %.6f\n", $3, $2 - $1 }' "$T_OUT/reads4") | tail -1 | cut -d' ' -f1)"
check "no read waited on a lock longer than the swap (${worst} s <= ${swap_s} s + ${slack} s)" t \
    "$(awk -v w="$worst" -v s="$swap_s" -v k="$slack" 'BEGIN { print (s ~ /^[0-9]+\.[0-9]+$/ && w <= s + k) ? "t" : "f" }')"
finish
