#!/usr/bin/env bash
# tests/integration/t_remote.sh - remote workers over TCP on loopback:
# plain and CURVE (allowed key, unknown key, no key), refusals (--listen
# beyond loopback without CURVE, a worker reading another database), a
# worker's SIGTERM mid-chunk, and 64 workers on small chunks.
. "$(dirname "$0")/lib.sh"
WORKER="$MAPPER_BIN/mapper-worker"

fresh_dbs remote
q "$SRC" "CREATE TABLE r(id bigint PRIMARY KEY, v text); INSERT INTO r SELECT g, md5(g::text) FROM generate_series(1, 100000) g"
q "$DST" "CREATE TABLE r(id bigint NOT NULL, v text)"
exact() {
    check "$1: same count and checksum" "$(checksum "$SRC" r)" "$(checksum "$DST" r)"
    check "$1: no duplicate key" 0 "$(q "$DST" "SELECT count(*) FROM (SELECT id FROM r GROUP BY id HAVING count(*) > 1) d")"
}

run_coord --table r --listen "tcp://0.0.0.0:$(free_port)"
check "--listen without CURVE or --insecure: exit 2" 2 "$RC"
check_match "--listen without CURVE: says why" "plain TCP .*use CURVE .* or say --insecure" "$ERR"
run_coord --table r --workers 0
check "--workers 0 without --listen: exit 2" 2 "$RC"

# Two remote workers (plain TCP on loopback, --insecure), no local ones.
port=$(free_port)
"$COORD" --table r --workers 0 --listen "tcp://127.0.0.1:$port" --insecure --chunk-size 5000 --job-id plain \
    --summary-json "$T_OUT/p.json" >"$T_OUT/p.out" 2>"$T_OUT/p.err" &
pid=$!
"$WORKER" --connect "tcp://127.0.0.1:$port" --id remote-a 2>"$T_OUT/wa.err" &
wa=$!
"$WORKER" --connect "tcp://127.0.0.1:$port" --id remote-b 2>"$T_OUT/wb.err" &
wb=$!
wait $pid
check "remote workers: job exit 0" 0 "$?"
wait $wa
check "remote worker a exits 0 when the job ends" 0 "$?"
wait $wb
check "remote worker b exits 0 when the job ends" 0 "$?"
check_match "remote workers were seen" "remote worker remote-a .*connected" "$(cat "$T_OUT/p.err")"
exact "remote workers"

# A worker started before its coordinator keeps trying until it is there.
q "$DST" "TRUNCATE r"
port=$(free_port)
"$WORKER" --connect "tcp://127.0.0.1:$port" --id early 2>"$T_OUT/early.err" &
we=$!
sleep 2
run_coord --table r --workers 0 --listen "tcp://127.0.0.1:$port" --insecure --chunk-size 20000 --job-id early
check "worker started first: the job exits 0" 0 "$RC"
wait $we
check "worker started first: exits 0" 0 "$?"
check_match "worker started first: it did the work" "remote worker early .*connected" "$ERR"
exact "worker started first"

# A worker reading another database is refused; a right one does the job.
q "$DST" "TRUNCATE r"
port=$(free_port)
"$COORD" --table r --workers 0 --listen "tcp://127.0.0.1:$port" --insecure --chunk-size 5000 --job-id wrongsrc \
    >"$T_OUT/w.out" 2>"$T_OUT/w.err" &
pid=$!
"$WORKER" --connect "tcp://127.0.0.1:$port" --id wrong --source "$DST" 2>"$T_OUT/wrong.err"
check "worker on another source: exit 3" 3 "$?"
check_match "worker on another source: told why" "refused by the coordinator: its source database is .*remote_dst" "$(cat "$T_OUT/wrong.err")"
"$WORKER" --connect "tcp://127.0.0.1:$port" --id right 2>/dev/null
check "right worker: exit 0" 0 "$?"
wait $pid
check "job after a refusal: exit 0" 0 "$?"
check_match "coordinator logged the refusal" "refusing worker wrong" "$(cat "$T_OUT/w.err")"
exact "after a refusal"

# CURVE: keys, an allowed worker, an unknown key, no key at all.
keys="$T_OUT/keys"
mkdir -p "$keys/allow"
(cd "$keys" && "$COORD" keygen coord >/dev/null && "$COORD" keygen good >/dev/null && "$COORD" keygen evil >/dev/null)
check "keygen: secret key mode 0600" 600 "$(stat -c %a "$keys/coord.key")"
(cd "$keys" && "$COORD" keygen coord 2>/dev/null)
check "keygen refuses to overwrite" 3 "$?"
cp "$keys/good.pub" "$keys/allow/"
q "$DST" "TRUNCATE r"
port=$(free_port)
"$COORD" --table r --workers 0 --listen "tcp://127.0.0.1:$port" --chunk-size 5000 --job-id curve \
    --curve-secret-key "$keys/coord.key" --curve-allow "$keys/allow" >"$T_OUT/c.out" 2>"$T_OUT/c.err" &
pid=$!
"$WORKER" --connect "tcp://127.0.0.1:$port" --id evil --coordinator-timeout 3 \
    --curve-server-key "$keys/coord.pub" --curve-secret-key "$keys/evil.key" 2>"$T_OUT/evil.err"
check "unknown key: the worker got nothing (exit 3)" 3 "$?"
"$WORKER" --connect "tcp://127.0.0.1:$port" --id nokey --coordinator-timeout 3 2>"$T_OUT/nokey.err"
check "no key: the worker got nothing (exit 3)" 3 "$?"
check "nothing was copied for them" 0 "$(q "$DST" "SELECT count(*) FROM r")"
check "the coordinator logged the refused key" yes \
    "$(grep -qF "refused CURVE client key $(cat "$keys/evil.pub")" "$T_OUT/c.err" && echo yes)"
"$WORKER" --connect "tcp://127.0.0.1:$port" --id good \
    --curve-server-key "$keys/coord.pub" --curve-secret-key "$keys/good.key" 2>/dev/null
check "allowed key: the worker exits 0" 0 "$?"
wait $pid
check "CURVE job: exit 0" 0 "$?"
exact "CURVE"

# An allowed key may not speak for another worker: a second allowed worker
# taking over the routing id of the first (ZMQ_ROUTER_HANDOVER) is dropped.
(cd "$keys" && "$COORD" keygen good2 >/dev/null)
cp "$keys/good2.pub" "$keys/allow/"
q "$DST" "TRUNCATE r"
port=$(free_port)
"$COORD" --table r --workers 0 --listen "tcp://127.0.0.1:$port" --chunk-size 50000 --job-id curve-id \
    --worker-timeout 3 --initial-delay 0.1 \
    --curve-secret-key "$keys/coord.key" --curve-allow "$keys/allow" >"$T_OUT/i.out" 2>"$T_OUT/i.err" &
pid=$!
hold
MAPPER_FAULT=pause-mid-copy:0 "$WORKER" --connect "tcp://127.0.0.1:$port" --id twin \
    --curve-server-key "$keys/coord.pub" --curve-secret-key "$keys/good.key" 2>"$T_OUT/twin1.err" &
w1=$!
wait_for "$T_OUT/twin1.err" "fault injection at mid-copy: pausing"
# (The id is never handed over: while the first is connected, the second
# connection is not heard and hears nothing.)
timeout 8 "$WORKER" --connect "tcp://127.0.0.1:$port" --id twin --coordinator-timeout 3 -v \
    --curve-server-key "$keys/coord.pub" --curve-secret-key "$keys/good2.key" 2>"$T_OUT/twin2.err"
check "a second key under the same id: given no chunk" 0 "$(grep -c 'attempt [0-9]*: start' "$T_OUT/twin2.err")"
check_match "a second key under the same id: hears nothing" "no coordinator answered" "$(cat "$T_OUT/twin2.err")"
kill -9 $w1
wait $w1 2>/dev/null
"$WORKER" --connect "tcp://127.0.0.1:$port" --id other \
    --curve-server-key "$keys/coord.pub" --curve-secret-key "$keys/good.key" 2>"$T_OUT/other.err"
check "another allowed worker finished the job: exit 0" 0 "$?"
wait $pid
check "job after an impersonation attempt: exit 0" 0 "$?"
exact "after an impersonation attempt"

# CURVE on: forked local workers still work (a key pair for this run).
q "$DST" "TRUNCATE r"
run_coord --table r --workers 2 --listen "tcp://127.0.0.1:$(free_port)" --chunk-size 10000 \
    --curve-secret-key "$keys/coord.key" --curve-allow "$keys/allow" --job-id curve-local
check "CURVE with local workers: exit 0" 0 "$RC"
exact "CURVE with local workers"

# SIGTERM to a remote worker mid-chunk: it rolls back, says so, exits 0;
# the chunk runs again on the next worker.
q "$DST" "TRUNCATE r"
port=$(free_port)
"$COORD" --table r --workers 0 --listen "tcp://127.0.0.1:$port" --insecure --chunk-size 5000 --job-id term \
    --initial-delay 0.1 >"$T_OUT/t.out" 2>"$T_OUT/t.err" &
pid=$!
hold
MAPPER_FAULT=pause-mid-copy:0 "$WORKER" --connect "tcp://127.0.0.1:$port" --id termme 2>"$T_OUT/termme.err" &
wt=$!
wait_for "$T_OUT/termme.err" "fault injection at mid-copy: pausing" && kill -TERM $wt
wait $wt
check "remote worker SIGTERM mid-chunk: exit 0" 0 "$?"
check_match "it rolled the chunk back and said so" "rolled the chunk back: asked to stop" "$(cat "$T_OUT/termme.err")"
"$WORKER" --connect "tcp://127.0.0.1:$port" --id next 2>/dev/null
check "the next worker: exit 0" 0 "$?"
wait $pid
check "job after a worker's SIGTERM: exit 0" 0 "$?"
check_match "the rolled-back chunk was retried" "chunk 0 attempt 1 failed .*57P01.*retry in" "$(cat "$T_OUT/t.err")"
exact "after a worker's SIGTERM"

# 64 workers on small chunks.
q "$DST" "TRUNCATE r"
start=$(date +%s.%N)
run_coord --table r --workers 64 --chunk-size 500 --job-id many --summary-json "$T_OUT/m.json"
check "64 workers: exit 0" 0 "$RC"
check "64 workers: 200 chunks all done" "200 200" "$(jq -r '"\(.chunks_total) \(.chunks_succeeded)"' "$T_OUT/m.json")"
exact "64 workers"
echo "# 64 workers, 200 chunks of 500 rows: $(jq -r '"\(.elapsed_s) s, \(.rows_per_s | floor) rows/s, coordinator CPU \(.coord_cpu_s) s of \(.coord_cpu_s + .workers_cpu_s) s"' "$T_OUT/m.json")"
check "no worker left" 0 "$(no_workers_left && echo 0 || echo 1)"
finish
