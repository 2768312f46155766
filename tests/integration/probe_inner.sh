#!/usr/bin/env bash
# tests/integration/probe_inner.sh - part of t_probe.sh, run inside a second
# scripts/with-postgres.sh (the target's own cluster): stop the target under
# a job run by one remote worker; once the coordinator pauses for the
# outage, a silent listener holds the target's port for 20 s; then the
# target comes back.
. "$(dirname "$0")/lib.sh"
SRC=$OUTER_SRC DST=$MAPPER_TARGET_URL
WORKER="$MAPPER_BIN/mapper-worker"
q "$DST" "CREATE TABLE p(id bigint PRIMARY KEY, v text)"
port=$(free_port)
hold
"$COORD" --source "$SRC" --target "$DST" --table p --workers 0 --insecure \
    --listen "tcp://127.0.0.1:$port" --chunk-size 2000 \
    --summary-json "$T_OUT/p.json" >"$T_OUT/p.out" 2>"$T_OUT/p.err" &
cpid=$!
MAPPER_FAULT=pause-mid-copy:5 "$WORKER" --connect "tcp://127.0.0.1:$port" --source "$SRC" \
    --id far 2>"$T_OUT/w.err" &
wpid=$!
held "$T_OUT/w.err" 5
check "the far worker holds chunk 5" 0 $?
$MAPPER_PG_CTL stop -m fast >/dev/null
release
wait_for "$T_OUT/p.err" "target database unreachable.*pausing"
check "the coordinator paused for the outage" 0 $?
# Connections to the target's port are accepted and never answered.
silent_listener "$MAPPER_PG_PORT" 20
lpid=$SILENT_PID
wait $lpid
$MAPPER_PG_CTL start -w >/dev/null
wait $cpid
rc=$?
wait $wpid
wrc=$?
check "silent target for 20 s: exit 0" 0 "$rc"
check "silent target for 20 s: the remote worker exits 0" 0 "$wrc"
check "the remote worker always heard the coordinator" "" \
    "$(grep -E 'no word from the coordinator|lost the coordinator' "$T_OUT/w.err")"
check "the remote worker kept its lease" "" "$(grep -E 'lease is lost|gave the chunk up' "$T_OUT/p.err")"
check "silent target for 20 s: exact content" "$(checksum "$SRC" p)" "$(checksum "$DST" p)"
check "silent target for 20 s: no failed chunk" 0 "$(json_field "$T_OUT/p.json" chunks_failed)"
finish
