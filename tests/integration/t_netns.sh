#!/usr/bin/env bash
# tests/integration/t_netns.sh - several hosts on one machine: a worker in
# its own network namespace, joined to this one by a veth pair, copies over
# TCP; then its link goes down mid-chunk: its lease expires, the chunk runs
# again on another worker, and when the link comes back the stale worker
# does no harm. Needs root (ip netns); says so and skips otherwise.
. "$(dirname "$0")/lib.sh"
WORKER="$MAPPER_BIN/mapper-worker"
ns="mapper-t$$" vh="mpa$$" vw="mpb$$" net="10.231.$((RANDOM % 200 + 20))"
if ! ip netns add "$ns" 2>"$T_OUT/netns.err"; then
    echo "skip - network namespaces cannot be made here: $(head -1 "$T_OUT/netns.err")"
    exit 0
fi
cleanup_ns() {
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null
    ip netns del "$ns" 2>/dev/null
    ip link del "$vh" 2>/dev/null
    q "postgresql://postgres@127.0.0.1:$MAPPER_PG_PORT/postgres" "ALTER SYSTEM RESET listen_addresses" >/dev/null 2>&1
    $MAPPER_PG_CTL restart -w >/dev/null 2>&1
    rm -rf "$T_OUT"
}
trap cleanup_ns EXIT
ip link add "$vh" type veth peer name "$vw" &&
    ip link set "$vw" netns "$ns" &&
    ip addr add "$net.1/24" dev "$vh" && ip link set "$vh" up &&
    ip netns exec "$ns" ip addr add "$net.2/24" dev "$vw" &&
    ip netns exec "$ns" ip link set "$vw" up &&
    ip netns exec "$ns" ip link set lo up
check "veth pair between two namespaces" 0 "$?"

# PostgreSQL also answers on the veth address, for the worker's host.
echo "host all all $net.0/24 trust" >>"$MAPPER_PG_DATADIR/pg_hba.conf"
q "postgresql://postgres@127.0.0.1:$MAPPER_PG_PORT/postgres" "ALTER SYSTEM SET listen_addresses = '127.0.0.1,$net.1'"
$MAPPER_PG_CTL restart -w >/dev/null
fresh_dbs netns
remote_url() { echo "postgresql://postgres@$net.1:$MAPPER_PG_PORT/$1"; }
check "the worker's host reaches PostgreSQL" 1 "$(ip netns exec "$ns" psql -X -qAt -d "$(remote_url netns_src)" -c 'SELECT 1')"
q "$SRC" "CREATE TABLE n(id bigint PRIMARY KEY, v text); INSERT INTO n SELECT g, md5(g::text) FROM generate_series(1, 60000) g"
q "$DST" "CREATE TABLE n(id bigint NOT NULL, v text)"
exact() {
    check "$1: same count and checksum" "$(checksum "$SRC" n)" "$(checksum "$DST" n)"
    check "$1: no duplicate key" 0 "$(q "$DST" "SELECT count(*) FROM (SELECT id FROM n GROUP BY id HAVING count(*) > 1) d")"
}
remote_worker() { # ID [ENV...]: a worker on the other host
    local id=$1
    shift
    ip netns exec "$ns" env "$@" "$WORKER" --connect "tcp://$net.1:$port" --insecure --id "$id" \
        --source "$(remote_url netns_src)" --target "$(remote_url netns_dst)" --coordinator-timeout 15
}

# A copy over TCP by the worker on the other host only.
port=$(free_port)
"$COORD" --table n --workers 0 --listen "tcp://$net.1:$port" --insecure --chunk-size 10000 \
    --job-id over-tcp >"$T_OUT/a.out" 2>"$T_OUT/a.err" &
pid=$!
remote_worker far 2>"$T_OUT/far.err"
rc=$?
check "worker on the other host: exit 0" 0 "$rc"
[ $rc = 0 ] || sed 's/^/# far: /' "$T_OUT/far.err"
wait $pid
check "copy over TCP: exit 0" 0 "$?"
exact "copy over TCP"

# The link goes down while the far worker is mid-chunk (held there until
# the link is back).
q "$DST" "TRUNCATE n"
hold
port=$(free_port)
"$COORD" --table n --workers 0 --listen "tcp://$net.1:$port" --insecure --chunk-size 10000 \
    --worker-timeout 3 --initial-delay 0.2 --job-id link-down >"$T_OUT/b.out" 2>"$T_OUT/b.err" &
pid=$!
remote_worker stale MAPPER_FAULT='pause-mid-copy:*' 2>"$T_OUT/stale.err" &
wstale=$!
wait_for "$T_OUT/stale.err" "fault injection at mid-copy: pausing"
ip link set "$vh" down
wait_for "$T_OUT/b.err" "worker stale silent .* lease is lost" 200
check_match "the stale worker lost its lease" "worker stale silent for [0-9]+ s: its lease is lost" "$(cat "$T_OUT/b.err")"
MAPPER_WORKER_BIN= "$WORKER" --connect "tcp://$net.1:$port" --insecure --id near 2>"$T_OUT/near.err" &
wnear=$!
sleep 3
ip link set "$vh" up
release
wait $pid
check "link down mid-chunk: job exit 0" 0 "$?"
wait $wnear
rc=$?
check "the near worker: exit 0" 0 "$rc"
[ $rc = 0 ] || { sed "s/^/# near: /" "$T_OUT/near.err"; grep -v progress "$T_OUT/b.err" | tail -60 | sed "s/^/# coord: /"; sed "s/^/# stale: /" "$T_OUT/stale.err" | grep -v progress | tail -30; }
wait $wstale
rc=$?
check "the stale worker reconnected or gave up without harm (0 or 75)" yes "$([ $rc = 0 ] || [ $rc = 75 ] && echo yes || echo "no: $rc")"
check_match "the chunk ran again" "lost its lease.*retry in" "$(tr '\n' ' ' <"$T_OUT/b.err")"
exact "link down mid-chunk"
finish
