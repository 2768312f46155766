#!/usr/bin/env bash
# scripts/demo.sh BIN - the demo job, run by `make demo` inside
# scripts/with-postgres.sh: a 1,000,000-row table copied with 8 workers.
set -euo pipefail
bin=${1:-bin}
rows=${MAPPER_DEMO_ROWS:-1000000}
ddl="CREATE TABLE events(id bigint PRIMARY KEY, account_id int NOT NULL,
     created_at timestamptz NOT NULL, amount numeric(12,2), status text,
     payload jsonb, note text)"
echo "demo: creating $rows rows in mapper_src.events" >&2
psql -X -q -v ON_ERROR_STOP=1 -d "$MAPPER_SOURCE_URL" -c "$ddl" -c "
    INSERT INTO events
    SELECT g, g % 1000, timestamptz '2024-01-01' + g * interval '1 second',
           (g % 100000) / 100.0, (ARRAY['new','paid','shipped','void'])[1 + g % 4],
           jsonb_build_object('n', g, 'tag', 't' || g % 10), md5(g::text)
    FROM generate_series(1, $rows) g" -c "VACUUM ANALYZE events"
psql -X -q -v ON_ERROR_STOP=1 -d "$MAPPER_TARGET_URL" -c "$ddl"
echo "demo: mapper-coord --table events --workers 8" >&2
"$bin/mapper-coord" --table events --workers 8
src=$(psql -X -qAt -d "$MAPPER_SOURCE_URL" -c "SELECT count(*), sum(hashtext(e::text)) FROM events e")
dst=$(psql -X -qAt -d "$MAPPER_TARGET_URL" -c "SELECT count(*), sum(hashtext(e::text)) FROM events e")
if [ "$src" != "$dst" ]; then
    echo "demo: MISMATCH source=$src target=$dst" >&2
    exit 1
fi
echo "demo: target matches source (count|checksum = $dst)" >&2
