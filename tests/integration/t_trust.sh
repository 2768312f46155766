#!/usr/bin/env bash
# tests/integration/t_trust.sh - attacks by peers on the network: a worker
# that lies "done" without copying (alone, and beside an honest worker), a
# peer taking over a connected worker's routing id, a refusal that would
# tell the job's source identity, plain TCP without --insecure (loopback,
# and an address list hiding 0.0.0.0), a worker pointed at a non-loopback
# plain address, a coordinator naming a target with SQL in it, --no-ledger
# with --listen, a stream reader that sends beyond its credit, and a worker
# id of 64 bytes.
. "$(dirname "$0")/lib.sh"
WORKER="$MAPPER_BIN/mapper-worker"
PEER="${MAPPER_BUILD:?MAPPER_BUILD not set}/tests/peer"

fresh_dbs trust
q "$SRC" "CREATE TABLE ev(id bigint PRIMARY KEY, v text); INSERT INTO ev SELECT g, md5(g::text) FROM generate_series(1, 30000) g"
q "$DST" "CREATE TABLE ev(id bigint NOT NULL, v text)"
SID="$(q "$SRC" "SELECT system_identifier FROM pg_control_system()")/trust_src"
# wait_job PID: a background job's exit status; killed after 120 s.
wait_job() {
    timeout 120 tail --pid="$1" -f /dev/null || kill "$1" 2>/dev/null
    wait "$1"
}
exact() {
    check "$1: same count and checksum" "$(checksum "$SRC" ev)" "$(checksum "$DST" ev)"
}

# 1. A lying worker: it says ready with the job's source identity and
# answers every assign with done rows=0. The ledger contradicts it: the
# attempt fails, the liar is sent away, and a real worker copies every row.
port=$(free_port)
"$COORD" --table ev --workers 0 --listen "tcp://127.0.0.1:$port" --insecure --chunk-size 5000 \
    --job-id liar --initial-delay 0.1 --summary-json "$T_OUT/lie.json" >"$T_OUT/lie.out" 2>"$T_OUT/lie.err" &
pid=$!
timeout 60 "$PEER" lie "tcp://127.0.0.1:$port" "$SID" >"$T_OUT/liar.out" 2>"$T_OUT/liar.err"
check "liar: sent away by the coordinator (exit 3)" 3 "$?"
check_match "liar: told why" "stop: .*contradicts the ledger" "$(cat "$T_OUT/liar.out")"
timeout 60 "$WORKER" --connect "tcp://127.0.0.1:$port" --insecure --id honest 2>"$T_OUT/honest.err"
check "honest worker after the liar: exit 0" 0 "$?"
wait_job $pid
check "job with a liar: exit 0" 0 "$?"
check_match "the coordinator names the liar" "done for chunk [0-9]+ attempt 1 from liar-[0-9]+ contradicts the ledger" "$(cat "$T_OUT/lie.err")"
exact "job with a liar"
check "job with a liar: every row counted" 30000 "$(json_field "$T_OUT/lie.json" total_rows_successful)"

# 1. A liar beside an honest worker that holds a committed chunk (paused
# before its DONE): the coordinator checks the DONEs it hears about the
# same time in one ledger query, and the liar's (every one of them) are
# still not counted: it is sent away with what it went on to, the honest
# worker copies the rest, and the job is exact.
q "$DST" "TRUNCATE ev"
port=$(free_port)
"$COORD" --table ev --workers 0 --listen "tcp://127.0.0.1:$port" --insecure --chunk-size 1000 \
    --job-id liar-beside --initial-delay 0.1 --summary-json "$T_OUT/beside.json" \
    >"$T_OUT/beside.out" 2>"$T_OUT/beside.err" &
pid=$!
hold
MAPPER_FAULT=pause-after-commit:0 timeout 120 "$WORKER" --connect "tcp://127.0.0.1:$port" \
    --insecure --id honest-beside 2>"$T_OUT/beside-honest.err" &
honest=$!
wait_for "$T_OUT/beside-honest.err" "chunk 0: fault injection at after-commit: pausing"
timeout 60 "$PEER" lie "tcp://127.0.0.1:$port" "$SID" >"$T_OUT/beside-liar.out" 2>&1
check "liar beside an honest worker: sent away (exit 3)" 3 "$?"
check_match "liar beside an honest worker: told why" "stop: .*contradicts the ledger" \
    "$(cat "$T_OUT/beside-liar.out")"
release
wait_job $honest
check "the honest worker beside the liar: exit 0" 0 "$?"
wait_job $pid
check "job with a liar beside an honest worker: exit 0" 0 "$?"
check_match "the coordinator names the liar beside the honest worker" \
    "done for chunk [0-9]+ attempt 1 from liar-[0-9]+ contradicts the ledger" "$(cat "$T_OUT/beside.err")"
exact "job with a liar beside an honest worker"
check "job with a liar beside an honest worker: every row counted" 30000 \
    "$(json_field "$T_OUT/beside.json" total_rows_successful)"
check "job with a liar beside an honest worker: every chunk done" 30 \
    "$(json_field "$T_OUT/beside.json" chunks_succeeded)"

# 1. A refusal does not tell the peer the job's source identity.
q "$DST" "TRUNCATE ev"
port=$(free_port)
"$COORD" --table ev --workers 0 --listen "tcp://127.0.0.1:$port" --insecure --chunk-size 5000 \
    --job-id refusal >"$T_OUT/ref.out" 2>"$T_OUT/ref.err" &
pid=$!
timeout 60 "$PEER" lie "tcp://127.0.0.1:$port" "0/guess" >"$T_OUT/guess.out" 2>&1
check "wrong source id: refused (exit 3)" 3 "$?"
check_match "wrong source id: told it is the wrong source" "stop: .*source" "$(cat "$T_OUT/guess.out")"
check "wrong source id: the job's identity is not told" no \
    "$(grep -qF "$(q "$SRC" "SELECT system_identifier FROM pg_control_system()")" "$T_OUT/guess.out" && echo yes || echo no)"
timeout 60 "$WORKER" --connect "tcp://127.0.0.1:$port" --insecure --id after-guess 2>/dev/null
wait_job $pid
check "job after a refused guess: exit 0" 0 "$?"
exact "after a refused guess"

# 1. Id takeover: while a worker holds a chunk, a peer connects with its
# routing id. It must hear nothing meant for that worker (heartbeats, the
# final stop), and the job ends exact.
q "$DST" "TRUNCATE ev"
port=$(free_port)
"$COORD" --table ev --workers 0 --listen "tcp://127.0.0.1:$port" --insecure --chunk-size 30000 \
    --job-id takeover >"$T_OUT/tk.out" 2>"$T_OUT/tk.err" &
pid=$!
hold
MAPPER_FAULT=pause-mid-copy:0 "$WORKER" --connect "tcp://127.0.0.1:$port" --insecure --id victim \
    2>"$T_OUT/victim.err" &
victim=$!
wait_for "$T_OUT/victim.err" "fault injection at mid-copy: pausing"
"$PEER" claim "tcp://127.0.0.1:$port" victim >"$T_OUT/claim.out" 2>&1 &
claim=$!
# The victim goes on once the impostor's connection is up beside its own.
for _ in $(seq 2400); do
    [ "$(ss -Htn state established "( dport = :$port )" | wc -l)" -ge 2 ] && break
    sleep 0.05
done
release
wait_job $pid
check "takeover attempt: the job exits 0" 0 "$?"
wait_job $victim
check "takeover attempt: the victim exits 0" 0 "$?"
kill $claim 2>/dev/null
wait $claim 2>/dev/null
check "takeover attempt: the impostor heard nothing" "" "$(cat "$T_OUT/claim.out")"
exact "takeover attempt"

# 1. Local workers' routing ids are not guessable (not w<n>-<pid>).
run_coord --table ev --workers 2 --chunk-size 10000 --job-id ids -v --restart --truncate
check "local ids: job exit 0" 0 "$RC"
check "local ids: none is w<n>-<coordinator pid>" 0 "$(grep -cE 'started worker w[0-9]+-[0-9]+ ' <<<"$ERR")"
check_match "local ids: random" "started worker w[0-9a-f]{16} " "$ERR"

# 1. Plain TCP needs --insecure, loopback included; the address list
# "127.0.0.1:1;0.0.0.0:PORT" (which binds the wildcard) too.
run_coord --table ev --listen "tcp://127.0.0.1:$(free_port)"
check "plain TCP on loopback without --insecure: exit 2" 2 "$RC"
check_match "plain TCP: says why" "plain TCP .*--insecure" "$ERR"
run_coord --table ev --listen "tcp://127.0.0.1:1;0.0.0.0:$(free_port)"
check "an address list hiding 0.0.0.0 without --insecure: exit 2" 2 "$RC"
check_match "an address list hiding 0.0.0.0: says why" "plain TCP .*--insecure" "$ERR"

# 1. --no-ledger cannot verify a remote worker's done: refused with --listen.
run_coord --table ev --no-ledger --listen "tcp://127.0.0.1:$(free_port)" --insecure
check "--no-ledger with --listen: exit 2" 2 "$RC"
check "--no-ledger with --listen: one line" 1 "$(grep -c . <<<"$ERR")"
check_match "--no-ledger with --listen: says why" "no-ledger.*listen" "$ERR"

# 2. A worker runs only SQL it built: a coordinator (or whoever answers at
# its address) that names a target "t\"; DROP TABLE victim; --" gets a
# quoted name that does not exist, and the victim table is untouched.
q "$DST" "CREATE TABLE victim(a int); INSERT INTO victim VALUES (1)"
port=$(free_port)
"$PEER" coord "tcp://127.0.0.1:$port" 'evt"; DROP TABLE victim; --' >"$T_OUT/evil.out" 2>"$T_OUT/evil.err" &
evil=$!
timeout 60 "$WORKER" --connect "tcp://127.0.0.1:$port" --coordinator-timeout 10 2>"$T_OUT/evilw.err"
wait_job $evil
check "hostile coordinator's target name: the COPY fails on a missing table" "failed 42P01" \
    "$(cut -d' ' -f1-2 "$T_OUT/evil.out")"
check_match "hostile coordinator's target name: quoted whole" 'relation "public.evt"; DROP TABLE victim; --" does not exist' \
    "$(cat "$T_OUT/evil.out")"
check "hostile coordinator's target name: the victim table is untouched" 1 "$(q "$DST" "SELECT count(*) FROM victim")"

# 2. A worker refuses plain TCP to a non-loopback address without --insecure.
timeout 60 "$WORKER" --connect "tcp://192.0.2.1:$(free_port)" --coordinator-timeout 2 2>"$T_OUT/far.err"
check "worker to a far plain address: exit 2" 2 "$?"
check_match "worker to a far plain address: says why" "plain TCP .*--insecure" "$(cat "$T_OUT/far.err")"

# 6. Stream mode: a reader that sends beyond its credit fails its attempt;
# the next reader reads honestly and the job is exact.
QUERY="SELECT id, v FROM ev ORDER BY id"
MAPPER_FAULT=ignore-credit:* run_coord --query "$QUERY" --target-table evs --workers 2 \
    --chunk-size 2000 --max-inflight-chunks 1 --initial-delay 0.1 --job-id greedy
check "greedy reader: job exit 0" 0 "$RC"
check_match "greedy reader: its attempt failed" "beyond its credit" "$ERR"
check "greedy reader: target equals the query" "$(checksum_query "$SRC" "$QUERY")" "$(checksum "$DST" evs)"

# 6. A worker id of 64 bytes (what a worker may send) is accepted.
q "$DST" "TRUNCATE ev"
long=$(printf 'k%.0s' $(seq 64))
port=$(free_port)
"$COORD" --table ev --workers 0 --listen "tcp://127.0.0.1:$port" --insecure --chunk-size 10000 \
    --job-id longid >"$T_OUT/long.out" 2>"$T_OUT/long.err" &
pid=$!
timeout 60 "$WORKER" --connect "tcp://127.0.0.1:$port" --insecure --id "$long" --coordinator-timeout 10 2>/dev/null
check "64-byte worker id: the worker exits 0" 0 "$?"
wait_job $pid
check "64-byte worker id: the job exits 0" 0 "$?"
exact "64-byte worker id"

# Attacks from the same host (passwords, planted links, file modes,
# control characters, resume of a ctid plan, rejects that outlive a
# crash, ledger tables not our own): their own databases, their own process.
bash "$(dirname "$0")/trust_local.sh" || T_FAILS=$((T_FAILS + 1))
finish
