#!/usr/bin/env bash
# tests/integration/t_ledger_reconnect.sh - the coordinator's own ledger
# session breaks while the target accepts connections and never answers
# (a reconnect could wait out the connect timeout each time): its loop goes
# on, remote workers keep hearing it and keep their leases, and the job
# finishes exactly once the database is back.
. "$(dirname "$0")/lib.sh"

fresh_dbs relink
q "$SRC" "CREATE TABLE r(id bigint PRIMARY KEY, v text); INSERT INTO r SELECT g, md5(g::text) FROM generate_series(1, 100000) g"
OUTER_SRC=$SRC T_OUT=$T_OUT "$(dirname "$0")/../../scripts/with-postgres.sh" \
    bash "$(dirname "$0")/ledger_reconnect_inner.sh" 2>/dev/null
finish
