#!/usr/bin/env bash
# scripts/with-postgres.sh CMD [ARGS...] - run CMD against a private, throwaway PostgreSQL
# cluster (databases mapper_src and mapper_dst); always stops it and removes it afterwards.
set -euo pipefail

[ $# -gt 0 ] || { echo "usage: with-postgres.sh CMD [ARGS...]" >&2; exit 2; }
die() { echo "with-postgres: $*" >&2; exit 1; }

# Inherited libpq settings (PGHOST, PGPASSWORD, PGSSLMODE, ...) must not leak into our setup.
for v in $(compgen -v PG); do [[ $v =~ ^PG[A-Z]+$ ]] && unset "$v"; done

bindir=${PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
[ -x "$bindir/initdb" ] || die "no PostgreSQL server binaries (set PG_BINDIR)"

is_root=false; [ "$(id -u)" -eq 0 ] && is_root=true
base=${TMPDIR:-/tmp}
if $is_root; then
    getent passwd postgres >/dev/null || die "running as root but there is no 'postgres' user"
    runuser -u postgres -- test -x "$base" 2>/dev/null || base=/tmp
fi
tmp=$(mktemp -d "$base/with-pg.XXXXXX")
data=$tmp/data sock=$tmp/sock log=$tmp/server.log ctl=$tmp/pg_ctl.sh
child="" port=""
alive() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $st != Z* ]]; }  # zombies count as gone

# as_pg CMD...: run CMD as the cluster owner (postgres when we are root, else ourselves).
as_pg() {
    if $is_root; then (cd "$tmp" && runuser -u postgres -- "$@"); else "$@"; fi
}

cleanup() {
    local rc=$?
    set +e
    trap '' INT TERM
    if [ -n "$child" ] && alive "$child"; then
        kill -TERM "$child" 2>/dev/null
        for _ in $(seq 50); do alive "$child" || break; sleep 0.2; done
        kill -KILL "$child" 2>/dev/null
    fi
    if [ -f "$data/postmaster.pid" ]; then
        local pid; pid=$(head -n 1 "$data/postmaster.pid")
        as_pg "$bindir/pg_ctl" -D "$data" stop -s -m fast -w -t 15 >/dev/null 2>&1 ||
            as_pg "$bindir/pg_ctl" -D "$data" stop -s -m immediate -w -t 10 >/dev/null 2>&1
        if [ -n "$pid" ] && alive "$pid"; then
            kill -KILL "$pid" 2>/dev/null
            for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
        fi
    fi
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A port outside the kernel's ephemeral range that nothing listens on right now.
pick_port() {
    local p
    for _ in $(seq 100); do
        p=$((20000 + RANDOM % 12000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
        if command -v ss >/dev/null && [ -n "$(ss -Hltn "sport = :$p")" ]; then continue; fi
        echo "$p"; return 0
    done
    die "no free TCP port found"
}

$is_root && chown postgres: "$tmp"
as_pg mkdir -m 700 "$sock"
as_pg "$bindir/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync \
    >"$tmp/initdb.log" 2>&1 || { cat "$tmp/initdb.log" >&2; die "initdb failed"; }

cat >"$data/pg_hba.conf" <<'EOF'
local all all                 trust
host  all postgres 127.0.0.1/32 trust
host  all all      127.0.0.1/32 scram-sha-256
EOF
echo "include 'with-postgres.conf'" >>"$data/postgresql.conf"

# Start on a random free port; retry with another one if a concurrent run grabbed it first.
for attempt in 1 2 3 4 5; do
    port=$(pick_port)
    cat >"$data/with-postgres.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$sock'
max_connections = 200
password_encryption = 'scram-sha-256'
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    $is_root && chown postgres: "$data/with-postgres.conf" "$data/pg_hba.conf"
    as_pg "$bindir/pg_ctl" -D "$data" -l "$log" start -s -w -t 30 >/dev/null 2>&1 && break
    if [ "$attempt" -lt 5 ] && [ ! -f "$data/postmaster.pid" ] &&
        grep -q 'could not bind\|could not create any TCP/IP sockets' "$log" 2>/dev/null; then
        as_pg sh -c ': >"$1"' _ "$log"
        continue
    fi
    tail -n 30 "$log" >&2 2>/dev/null
    die "PostgreSQL did not start (log above)"
done

ready=false
for _ in $(seq 60); do
    if "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres; then ready=true; break; fi
    sleep 0.5
done
$ready || { tail -n 30 "$log" >&2; die "PostgreSQL not accepting connections on 127.0.0.1:$port"; }

"$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$sock" -p "$port" -U postgres -d postgres \
    -c 'CREATE DATABASE mapper_src' -c 'CREATE DATABASE mapper_dst' >/dev/null ||
    die "could not create databases"

# pg_ctl for tests that stop/start the server mid-run: $MAPPER_PG_CTL stop -m fast
{
    echo '#!/usr/bin/env bash'
    if $is_root; then
        printf 'cd %q && exec runuser -u postgres -- %q -D %q -l %q "$@"\n' \
            "$tmp" "$bindir/pg_ctl" "$data" "$log"
    else
        printf 'exec %q -D %q -l %q "$@"\n' "$bindir/pg_ctl" "$data" "$log"
    fi
} >"$ctl"
chmod 755 "$ctl"

url=postgresql://postgres@127.0.0.1:$port
export MAPPER_SOURCE_URL=$url/mapper_src MAPPER_TARGET_URL=$url/mapper_dst
export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGDATABASE=mapper_src
export MAPPER_PG_PORT=$port MAPPER_PG_DATADIR=$data MAPPER_PG_SOCKDIR=$sock
export MAPPER_PG_BINDIR=$bindir MAPPER_PG_CTL=$ctl
version=$("$bindir/postgres" --version | awk '{print $3}')
echo "with-postgres: PostgreSQL $version on 127.0.0.1:$port" >&2

# Run CMD in the background so a SIGTERM/SIGINT to us is handled at once (trap -> cleanup);
# explicit <&0 keeps our stdin, which bash would otherwise replace with /dev/null.
"$@" <&0 &
child=$!
wait "$child" && status=0 || status=$?
child=""
exit "$status"
