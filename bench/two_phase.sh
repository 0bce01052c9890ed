#!/usr/bin/env bash
#
# bench/two_phase.sh: what two-phase commit costs a transaction that writes on two shards
# (issue 20): the same pgbench script through pool `one_phase` (two_phase_commit = false)
# and pool `two_phase` (true), over the same three shard databases.
#
#   bench/two_phase.sh                    # DURATION=10, 1 and 8 clients
#   DURATION=3 SKIP_BUILD=1 bench/two_phase.sh
#
# The script: BEGIN; an UPDATE on shard 0; an UPDATE on shard 1 (comment hints pick the
# shards); COMMIT. With two_phase_commit the COMMIT is PREPARE TRANSACTION on both, the
# decision fsync'd to the decision log (in a temporary directory on this machine's disk),
# COMMIT PREPARED on both. PostgreSQL runs with fsync off, so the figures are the pooler's
# round trips and its one fsync, not PostgreSQL's disk. Prints TPS and mean latency.
DURATION=${DURATION:-10}
# shellcheck source=bench/shards_lib.sh
. "$(dirname "$0")/shards_lib.sh"

start_postgres
for s in 0 1 2; do
    psql_su -d postgres -c "CREATE DATABASE shard$s"
    psql_su -d "shard$s" -c "CREATE TABLE accounts (id bigint PRIMARY KEY, balance int);
        INSERT INTO accounts SELECT i, 1000 FROM generate_series(1, 10000) i;"
done
general_toml
printf 'two_phase_commit_log = "%s"\n' "$WORK/decisions.log" >>"$WORK/pgcat.toml"
extra='query_parser_enabled = true
default_shard = "all"
shard_id_regex = '"'"'/\* shard_id: (\d+) \*/'"'"
shard_pool_toml one_phase shard 3 "$extra"
shard_pool_toml two_phase shard 3 "$extra
two_phase_commit = true"
start_pgcat one_phase

cat >"$WORK/transfer.sql" <<'SQL'
\set a random(1, 10000)
\set b random(1, 10000)
BEGIN;
/* shard_id: 0 */ UPDATE accounts SET balance = balance - 1 WHERE id = :a;
/* shard_id: 1 */ UPDATE accounts SET balance = balance + 1 WHERE id = :b;
COMMIT;
SQL

echo
echo "| clients | one-phase commit | two-phase commit | latency added |"
echo "|---:|---:|---:|---:|"
for clients in 1 8; do
    line="| $clients |"
    lats=()
    for pool in one_phase two_phase; do
        read -r tps lat < <(pgbench_pool "$WORK/transfer.sql" "$clients" "$pool")
        lats+=("$lat")
        line="$line $tps tps, $lat ms |"
    done
    added=$(echo "${lats[1]} - ${lats[0]}" | bc -l)
    printf '%s %+.3f ms |\n' "$line" "$added"
done
prepared=$(psql_su -d postgres -At -c "SELECT count(*) FROM pg_prepared_xacts")
echo
echo "prepared transactions left: $prepared; decision log: $(wc -c <"$WORK/decisions.log") bytes"
