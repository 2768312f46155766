#!/usr/bin/env bash
# tests/integration/outage_inner.sh - part of t_retry.sh, run inside a second
# scripts/with-postgres.sh (the target's own cluster): stop the target for
# 20 s mid-job; the job must finish exactly, with no failed chunk.
. "$(dirname "$0")/lib.sh"
SRC=$OUTER_SRC DST=$MAPPER_TARGET_URL
q "$DST" "CREATE TABLE o(id bigint PRIMARY KEY, v text)"
# Chunk 10 is held mid-copy until the target is down, so the job is surely
# running when it goes down.
hold
MAPPER_FAULT=pause-mid-copy:10 "$COORD" --source "$SRC" --target "$DST" --table o --workers 2 --chunk-size 2000 \
    --summary-json "$T_OUT/o.json" >"$T_OUT/o.out" 2>"$T_OUT/o.err" &
pid=$!
held "$T_OUT/o.err" 10
$MAPPER_PG_CTL stop -m fast >/dev/null
release
sleep 20
$MAPPER_PG_CTL start -w >/dev/null
wait $pid
rc=$?
err=$(cat "$T_OUT/o.err")
check "target down 20 s: exit 0" 0 "$rc"
check_match "the outage was seen and waited out" "target database unreachable.*pausing.*target database answers again" "$(echo "$err" | tr '\n' ' ')"
check "target down 20 s: exact content" "$(checksum "$SRC" o)" "$(checksum "$DST" o)"
check "target down 20 s: no failed chunk" 0 "$(json_field "$T_OUT/o.json" chunks_failed)"
finish
