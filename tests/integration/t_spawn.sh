#!/usr/bin/env bash
# tests/integration/t_spawn.sh - a worker stopped between fork and exec
# (still running the coordinator's code and signal handlers) must not
# stop the coordinator: the child dies, another worker takes its place,
# and the job ends well.
. "$(dirname "$0")/lib.sh"

fresh_dbs spawn
q "$SRC" "CREATE TABLE t(id bigint PRIMARY KEY, v text);
          INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g"
q "$DST" "CREATE TABLE t(id bigint PRIMARY KEY, v text)"

# Every worker holds before its exec until the release file exists.
release=$T_OUT/release
MAPPER_FAULT=pause-spawn:1 MAPPER_FAULT_RELEASE=$release \
    "$COORD" --table t --workers 1 --summary-json "$T_OUT/s.json" \
    >"$T_OUT/out" 2>"$T_OUT/err" &
coord=$!
child=""
for _ in $(seq 200); do # the child is still named mapper-coord: not exec'd
    child=$(pgrep -P "$coord" -x mapper-coord | head -1)
    [ -n "$child" ] && break
    sleep 0.05
done
check "a forked worker waits before its exec" yes "$([ -n "$child" ] && echo yes || echo no)"
kill -TERM "$child" 2>/dev/null
for _ in $(seq 100); do # the child is gone
    kill -0 "$child" 2>/dev/null || break
    sleep 0.05
done
touch "$release"
wait "$coord"
rc=$?
check "the job is not interrupted by its worker's SIGTERM: exit 0" 0 "$rc"
check "... rows exact" "$(checksum "$SRC" t)" "$(checksum "$DST" t)"
check "... no interruption said" 0 "$(grep -c 'interrupted' "$T_OUT/err")"
check_match "... the worker's death is told" "died \(signal 15\)|killed by signal 15" "$(cat "$T_OUT/err")"

check "no worker left" 0 "$(no_workers_left && echo 0 || echo 1)"
finish
