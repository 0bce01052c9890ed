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
SIZE_MB=${SIZE_MB:-1024}
# shellcheck source=bench/shards_lib.sh
. "$(dirname "$0")/shards_lib.sh"

start_postgres
for s in 0 1 2; do
    psql_su -d postgres -c "CREATE DATABASE shard$s"
    psql_su -d "shard$s" -c "CREATE TABLE copied (id bigint, payload text) PARTITION BY HASH (id);
        CREATE TABLE copied_p$s PARTITION OF copied FOR VALUES WITH (MODULUS 3, REMAINDER $s);"
done
general_toml
shard_pool_toml sharded shard 3 'query_parser_enabled = true
default_shard = "all"
automatic_sharding_key = "copied.id"'
start_pgcat sharded
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
