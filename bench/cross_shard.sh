#!/usr/bin/env bash
#
# bench/cross_shard.sh: statements with no shard through the pooler, answered by every
# shard (pool `xs`: three databases, each one hash partition of `items`, default_shard =
# "all") beside the same statements on one database holding every row (pool `one`).
#
#   bench/cross_shard.sh                       # ROWS=300000 CLIENTS=4 DURATION=10
#   ROWS=30000 DURATION=3 SKIP_BUILD=1 bench/cross_shard.sh
#
# Each statement runs as `pgbench -n -f <script> -c CLIENTS -j 2 -T DURATION` (simple
# protocol) through the release build; prints TPS and mean latency per pool.
ROWS=${ROWS:-300000}
CLIENTS=${CLIENTS:-4}
DURATION=${DURATION:-10}
# shellcheck source=bench/shards_lib.sh
. "$(dirname "$0")/shards_lib.sh"

start_postgres
table="CREATE TABLE items (id bigint, grp int, value text, amount numeric)"
rows="SELECT i, i % 5, 'v' || i % 11, i * 3 FROM generate_series(1, $ROWS) i"
log "loading $ROWS rows into shard0..2 and one"
for s in 0 1 2; do
    psql_su -d postgres -c "CREATE DATABASE shard$s"
    psql_su -d "shard$s" -c "$table PARTITION BY HASH (id);
        CREATE TABLE items_p$s PARTITION OF items FOR VALUES WITH (MODULUS 3, REMAINDER $s);
        INSERT INTO items $rows WHERE satisfies_hash_partition('items'::regclass, 3, $s, i::bigint);
        CREATE INDEX ON items (id);"
    psql_su -d "shard$s" -c "VACUUM ANALYZE items"
done
psql_su -d postgres -c "CREATE DATABASE one"
psql_su -d one -c "$table; INSERT INTO items $rows; CREATE INDEX ON items (id);"
psql_su -d one -c "VACUUM ANALYZE items"

general_toml
shard_pool_toml xs shard 3 'query_parser_enabled = true
default_shard = "all"
automatic_sharding_key = "items.id"'
shard_pool_toml one one 1 ''
start_pgcat xs

echo
echo "| statement | every shard (3) | one database |"
echo "|---|---:|---:|"
while IFS= read -r sql; do
    echo "$sql;" >"$WORK/script.sql"
    line="| \`$sql\` |"
    for pool in xs one; do
        read -r tps lat < <(pgbench_pool "$WORK/script.sql" "$CLIENTS" "$pool")
        line="$line $tps tps, $lat ms |"
    done
    echo "$line"
done <<'SQL'
SELECT count(*) FROM items
SELECT id, value FROM items ORDER BY id LIMIT 10
SELECT grp, count(*), avg(amount) FROM items GROUP BY grp ORDER BY grp
SELECT id, value FROM items WHERE id = 4242
SQL
