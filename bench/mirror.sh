#!/usr/bin/env bash
#
# bench/mirror.sh: what a mirror costs the clients of the mirrored server, and that a
# frozen or dead mirror costs them nothing (issue 21). Two throwaway PostgreSQL servers, the
# second one the mirror; pool `plain` has no mirror, pool `mirrored` mirrors its server to
# the second. pgbench's simple-update transaction (-N, 8 clients) through each:
#
#   bench/mirror.sh                    # DURATION=10
#   DURATION=3 SKIP_BUILD=1 bench/mirror.sh
#
# Rows: no mirror; mirror healthy; mirror frozen (SIGSTOP on all its processes); mirror
# down (stopped). Prints TPS and mean latency, then SHOW MIRRORS (what was sent, dropped).
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-8}
# shellcheck source=bench/shards_lib.sh
. "$(dirname "$0")/shards_lib.sh"

MIRROR_PORT=$(free_port)
start_postgres
start_postgres mirror "$MIRROR_PORT"
for port in "$PG_PORT" "$MIRROR_PORT"; do
    psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -c "CREATE DATABASE bench"
    pgbench -q -i -s 5 -h 127.0.0.1 -p "$port" -U postgres bench >/dev/null 2>&1 || die "pgbench -i"
done
general_toml
shard_pool_toml plain bench 1 ""
shard_pool_toml mirrored bench 1 ""
# Appended to the last section: shard 0 of `mirrored`, its server 0 mirrored.
printf 'mirrors = [["127.0.0.1", %s, 0]]\n' "$MIRROR_PORT" >>"$WORK/pgcat.toml"
start_pgcat plain

cat >"$WORK/simple_update.sql" <<'SQL'
\set aid random(1, 500000)
\set bid random(1, 5)
\set tid random(1, 50)
\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
END;
SQL

mirror_pids() {
    local postmaster
    postmaster=$(head -1 "$WORK/mirror/postmaster.pid")
    echo "$postmaster" $(pgrep -P "$postmaster")
}
# "sent dropped" of the mirror so far.
mirror_counts() {
    PGPASSWORD=admin psql -X -At -F ' ' -h 127.0.0.1 -p "$PGCAT_PORT" -U admin -d pgcat \
        -c "SHOW MIRRORS" | awk '{s += $8; d += $10} END {print s + 0, d + 0}'
}
row() {
    local before after
    before=$(mirror_counts)
    read -r tps lat < <(pgbench_pool "$WORK/simple_update.sql" "$CLIENTS" "$2")
    after=$(mirror_counts)
    read -r s0 d0 <<<"$before"
    read -r s1 d1 <<<"$after"
    echo "| $1 | $tps | $lat ms | $((s1 - s0)) | $((d1 - d0)) |"
}

echo
echo "| mirror ($CLIENTS clients, simple-update) | TPS | mean latency | writes mirrored | dropped |"
echo "|---|---:|---:|---:|---:|"
row "none (pool without mirrors)" plain
row "healthy" mirrored
pids=$(mirror_pids)
# shellcheck disable=SC2086
kill -STOP $pids
row "frozen (SIGSTOP)" mirrored
# shellcheck disable=SC2086
kill -CONT $pids
as_pg "$PGBIN/pg_ctl" -D "$WORK/mirror" -m fast stop >/dev/null
row "down (stopped)" mirrored
echo
PGPASSWORD=admin psql -X -h 127.0.0.1 -p "$PGCAT_PORT" -U admin -d pgcat -c "SHOW MIRRORS"
