# bench/shards_lib.sh: sourced by the sharding benchmarks (copy_rss.sh, cross_shard.sh).
# A throwaway PostgreSQL tuned for measuring the pooler (fsync, synchronous_commit and
# full_page_writes off), and a pgcat started on a config the script writes.
#
# Provides: log, die, as_pg, psql_su, free_port; start_postgres [name port]; start_pgcat <pool>;
# shard_pool_toml <pool> <database prefix> <shards> <extra pool keys> (appends to $WORK/pgcat.toml);
# cleanup on exit. Sets ROOT, WORK, PGBIN, PGCAT_BIN, PG_PORT, PGCAT_PORT.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGCAT_BIN=${PGCAT_BIN:-$ROOT/target/release/pgcat}
WORK=$(mktemp -d /tmp/pgcat-bench.XXXXXX)
chmod 755 "$WORK"
log() { echo "== $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

if [ "$(id -u)" = 0 ]; then
    as_pg() { runuser -u postgres -- "$@"; }
    chown postgres "$WORK"
else
    as_pg() { "$@"; }
fi
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r | head -1)}
[ -x "$PGBIN/initdb" ] || die "PostgreSQL server binaries not found; set PGBIN"

PGCAT_PID=""
cleanup() {
    [ -n "$PGCAT_PID" ] && kill "$PGCAT_PID" 2>/dev/null || true
    for data in "$WORK"/*/PG_VERSION; do
        [ -e "$data" ] || continue
        as_pg "$PGBIN/pg_ctl" -D "$(dirname "$data")" -m immediate stop >/dev/null 2>&1 || true
    done
    [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PG_PORT=$(free_port)
PGCAT_PORT=$(free_port)

psql_su() { psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"; }

# start_postgres [NAME PORT]: the throwaway PostgreSQL in $WORK/NAME on PORT (default: pg on
# $PG_PORT).
start_postgres() {
    local dir=$WORK/${1:-pg} port=${2:-$PG_PORT}
    log "initdb ${1:-pg}"
    as_pg "$PGBIN/initdb" -D "$dir" -U postgres --auth-local=trust --auth-host=trust >"$dir.initdb.log" 2>&1 ||
        { cat "$dir.initdb.log" >&2; die "initdb failed"; }
    cat >>"$dir/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$WORK'
fsync = off
synchronous_commit = off
full_page_writes = off
max_wal_size = 4GB
max_connections = 200
max_prepared_transactions = 100
CONF
    as_pg "$PGBIN/pg_ctl" -D "$dir" -l "$dir.log" -w -t 60 start >/dev/null ||
        { tail -20 "$dir.log" >&2; die "PostgreSQL did not start"; }
}

# The [general] section of $WORK/pgcat.toml.
general_toml() {
    cat >"$WORK/pgcat.toml" <<TOML
[general]
host = "127.0.0.1"
port = $PGCAT_PORT
admin_username = "admin"
admin_password = "admin"
TOML
}

# shard_pool_toml POOL PREFIX SHARDS EXTRA: pool POOL (user postgres) over databases
# PREFIX0..PREFIX<SHARDS-1> on the throwaway PostgreSQL, EXTRA lines in its section.
shard_pool_toml() {
    local pool=$1 prefix=$2 shards=$3 extra=$4
    printf '\n[pools.%s]\npool_mode = "transaction"\nsharding_function = "pg_bigint_hash"\n%s\n' \
        "$pool" "$extra" >>"$WORK/pgcat.toml"
    printf '\n[pools.%s.users.0]\nusername = "postgres"\npassword = "unused"\npool_size = 8\n' \
        "$pool" >>"$WORK/pgcat.toml"
    for s in $(seq 0 $((shards - 1))); do
        local db=$prefix$s
        [ "$shards" = 1 ] && db=$prefix
        printf '\n[pools.%s.shards.%s]\ndatabase = "%s"\nservers = [["127.0.0.1", %s, "primary"]]\n' \
            "$pool" "$s" "$db" "$PG_PORT" >>"$WORK/pgcat.toml"
    done
}

# Starts pgcat on $WORK/pgcat.toml and waits until pool $1 answers.
start_pgcat() {
    "$PGCAT_BIN" "$WORK/pgcat.toml" >"$WORK/pgcat.log" 2>&1 &
    PGCAT_PID=$!
    for _ in $(seq 50); do
        PGPASSWORD=unused psql -X -h 127.0.0.1 -p "$PGCAT_PORT" -U postgres -d "$1" -c 'SELECT 1' >/dev/null 2>&1 && return
        sleep 0.2
    done
    cat "$WORK/pgcat.log" >&2
    die "pgcat did not start"
}

# pgbench_pool SCRIPT CLIENTS POOL: runs pgbench -f SCRIPT (-T $DURATION) through pool POOL
# of the running pgcat; prints "<tps> <mean latency ms>".
pgbench_pool() {
    local out tps lat
    out=$(PGPASSWORD=unused pgbench -n -f "$1" -c "$2" -j 2 -T "$DURATION" \
        -h 127.0.0.1 -p "$PGCAT_PORT" -U postgres "$3" 2>&1) || { echo "$out" >&2; die "pgbench on $3"; }
    tps=$(echo "$out" | awk '/^tps/ {printf "%.1f", $3}')
    lat=$(echo "$out" | awk '/latency average/ {print $4}')
    [ -n "$tps" ] || { echo "$out" >&2; die "no TPS from pgbench on $3"; }
    echo "$tps $lat"
}
