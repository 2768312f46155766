#!/usr/bin/env bash
# tests/integration/t_probe.sh - while the coordinator probes a database
# that accepts connections and never answers (each probe could wait out the
# connect timeout), its loop goes on: a remote worker keeps hearing it and
# keeps its lease, and the job finishes exactly once the database is back.
. "$(dirname "$0")/lib.sh"

fresh_dbs probe
q "$SRC" "CREATE TABLE p(id bigint PRIMARY KEY, v text); INSERT INTO p SELECT g, md5(g::text) FROM generate_series(1, 100000) g"
OUTER_SRC=$SRC T_OUT=$T_OUT "$(dirname "$0")/../../scripts/with-postgres.sh" \
    bash "$(dirname "$0")/probe_inner.sh" 2>/dev/null
finish
