#!/usr/bin/env bash
#
# bench/copy_rss.sh: the pooler's peak memory while a large COPY is split between shards
# (issue 19's goal: under 64 MB for 1 GB).
#
#   bench/copy_rss.sh                   # SIZE_MB=1024
#   SIZE_MB=256 SKIP_BUILD=1 bench/copy_rss.sh
#
# 1. builds target/release/pgcat (SKIP_BUILD=1 uses it as is);
# 2. starts a throwaway PostgreSQL (fsync, synchronous_commit and full_page_writes off: the
#    pooler is measured, not the disk) with three shard databases, each holding one hash
#    partition of `copied (id bigint, payload text)`, and a pgcat pool `sharded` over them
#    (default_shard = "all", automatic_sharding_key = "copied.id");
# 3. streams SIZE_MB of COPY text (rows of about 100 bytes, made by awk) through psql's
#    `\copy copied FROM PROGRAM …` into the pool: psql sends it as CopyData, the pooler
#    splits it by key;
# 4. prints rows, seconds, MB/s, and the pooler's peak RSS (VmHWM from /proc/<pid>/status)
#    before and after the COPY.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SIZE_MB=${SIZE_MB:-1024}
PGCAT_BIN=${PGCAT_BIN:-$ROOT/target/release/pgcat}
WORK=$(mktemp -d /tmp/pgcat-copy-rss.XXXXXX)
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
    as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
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

log "initdb"
as_pg "$PGBIN/initdb" -D "$WORK/pg" -U postgres --auth-local=trust --auth-host=trust >"$WORK/initdb.log" 2>&1 ||
    { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
cat >>"$WORK/pg/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$WORK'
fsync = off
synchronous_commit = off
full_page_writes = off
max_wal_size = 4GB
EOF
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w -t 60 start >/dev/null ||
    { tail -20 "$WORK/pg.log" >&2; die "PostgreSQL did not start"; }

psql_su() { psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"; }
for s in 0 1 2; do
    psql_su -d postgres -c "CREATE DATABASE shard$s"
    psql_su -d "shard$s" -c "CREATE TABLE copied (id bigint, payload text) PARTITION BY HASH (id);
        CREATE TABLE copied_p$s PARTITION OF copied FOR VALUES WITH (MODULUS 3, REMAINDER $s);"
done

cat >"$WORK/pgcat.toml" <<EOF
[general]
host = "127.0.0.1"
port = $PGCAT_PORT
admin_username = "admin"
admin_password = "admin"

[pools.sharded]
pool_mode = "transaction"
query_parser_enabled = true
default_shard = "all"
sharding_function = "pg_bigint_hash"
automatic_sharding_key = "copied.id"

[pools.sharded.users.0]
username = "postgres"
password = "unused"
pool_size = 4
EOF
for s in 0 1 2; do
    printf '\n[pools.sharded.shards.%s]\ndatabase = "shard%s"\nservers = [["127.0.0.1", %s, "primary"]]\n' \
        "$s" "$s" "$PG_PORT" >>"$WORK/pgcat.toml"
done
"$PGCAT_BIN" "$WORK/pgcat.toml" >"$WORK/pgcat.log" 2>&1 &
PGCAT_PID=$!
for _ in $(seq 50); do
    PGPASSWORD=unused psql -X -h 127.0.0.1 -p "$PGCAT_PORT" -U postgres -d sharded -c 'SELECT 1' >/dev/null 2>&1 && break
    sleep 0.2
done
hwm() { awk '/VmHWM/ {print $2}' "/proc/$PGCAT_PID/status"; }
before=$(hwm)

# Rows of about 100 bytes: an id and a 90-character payload.
ROWS=$((SIZE_MB * 1024 * 1024 / 100))
log "COPY of $ROWS rows (~$SIZE_MB MB) through the pooler"
start=$(date +%s.%N)
out=$(PGPASSWORD=unused psql -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGCAT_PORT" -U postgres -d sharded -c \
    "\\copy copied FROM PROGRAM 'awk \"BEGIN { p = sprintf(\\\"%090d\\\", 0); for (i = 1; i <= $ROWS; i++) print i \\\"\\t\\\" p }\"'")
end=$(date +%s.%N)
after=$(hwm)
secs=$(echo "$end - $start" | bc)
echo
echo "| data | rows | seconds | MB/s | pooler peak RSS before | during the COPY |"
echo "|---|---:|---:|---:|---:|---:|"
printf '| %s MB | %s | %.1f | %.0f | %.1f MB | %.1f MB |\n' "$SIZE_MB" "$ROWS" "$secs" \
    "$(echo "$SIZE_MB / $secs" | bc -l)" "$(echo "$before / 1024" | bc -l)" "$(echo "$after / 1024" | bc -l)"
echo "psql: $out"
for s in 0 1 2; do
    echo "shard$s: $(psql_su -d "shard$s" -At -c 'SELECT count(*) FROM copied') rows"
done
