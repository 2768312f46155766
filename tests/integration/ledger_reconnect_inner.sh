#!/usr/bin/env bash
# tests/integration/ledger_reconnect_inner.sh - part of
# t_ledger_reconnect.sh, run inside a second scripts/with-postgres.sh (the
# target's own cluster). Two remote workers: "near" holds mid-copy, "far"
# commits a chunk and holds before saying so. The target stops (the
# coordinator's ledger session with it); near's failures pause the job for
# the outage; a silent listener holds the target's port for 20 s; then far
# says "done", which the coordinator checks in the ledger (reconnecting it);
# then the target comes back.
. "$(dirname "$0")/lib.sh"
SRC=$OUTER_SRC DST=$MAPPER_TARGET_URL
WORKER="$MAPPER_BIN/mapper-worker"
q "$DST" "CREATE TABLE r(id bigint PRIMARY KEY, v text)"
port=$(free_port)
near_release=$T_OUT/near.release far_release=$T_OUT/far.release
rm -f "$near_release" "$far_release"
"$COORD" --source "$SRC" --target "$DST" --table r --workers 0 --insecure \
    --listen "tcp://127.0.0.1:$port" --chunk-size 2000 \
    --summary-json "$T_OUT/r.json" >"$T_OUT/r.out" 2>"$T_OUT/r.err" &
cpid=$!
MAPPER_FAULT='pause-mid-copy:*' MAPPER_FAULT_RELEASE=$near_release "$WORKER" \
    --connect "tcp://127.0.0.1:$port" --source "$SRC" --id near 2>"$T_OUT/near.err" &
npid=$!
held "$T_OUT/near.err" '[0-9]+'
check "the near worker holds a chunk mid-copy" 0 $?
MAPPER_FAULT='pause-after-commit:*' MAPPER_FAULT_RELEASE=$far_release "$WORKER" \
    --connect "tcp://127.0.0.1:$port" --source "$SRC" --id far 2>"$T_OUT/far.err" &
fpid=$!
held "$T_OUT/far.err" '[0-9]+'
check "the far worker committed a chunk and holds before saying so" 0 $?
$MAPPER_PG_CTL stop -m fast >/dev/null
touch "$near_release"
wait_for "$T_OUT/r.err" "target database unreachable.*pausing"
check "the coordinator paused for the outage" 0 $?
# Connections to the target's port are accepted and never answered.
silent_listener "$MAPPER_PG_PORT" 20
lpid=$SILENT_PID
up=1
for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$MAPPER_PG_PORT") 2>/dev/null && up=0 && break
    sleep 0.05
done
check "the silent listener holds the target's port" 0 "$up"
touch "$far_release"
wait_for "$T_OUT/r.err" "could not be checked in the ledger"
check "the coordinator met the broken ledger session" 0 $?
wait $lpid
$MAPPER_PG_CTL start -w >/dev/null
wait $cpid
rc=$?
wait $npid
nrc=$?
wait $fpid
frc=$?
check "ledger unreachable for 20 s: exit 0" 0 "$rc"
check "ledger unreachable for 20 s: the workers exit 0" "0 0" "$nrc $frc"
check "the remote workers always heard the coordinator" "" \
    "$(grep -E 'no word from the coordinator|lost the coordinator' "$T_OUT/near.err" "$T_OUT/far.err")"
check "the remote workers kept their leases" "" "$(grep -E 'lease is lost|gave the chunk up' "$T_OUT/r.err")"
check "ledger unreachable for 20 s: exact content" "$(checksum "$SRC" r)" "$(checksum "$DST" r)"
check "ledger unreachable for 20 s: no failed chunk" 0 "$(json_field "$T_OUT/r.json" chunks_failed)"
finish
