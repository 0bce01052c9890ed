#!/usr/bin/env bash
#
# bench/pgbench.sh: pgbench through direct PostgreSQL, PgBouncer and this pooler, side by side.
#
#   bench/pgbench.sh                          # defaults: SCALE=10 DURATION=15 ROUNDS=3
#   DURATION=10 ROUNDS=3 bench/pgbench.sh     # what BENCHMARKS.md was produced with
#
# What it does, all in a temp dir that is removed at the end (KEEP=1 keeps it, with logs):
#   1. builds target/release/pgcat (`cargo build --release`; SKIP_BUILD=1 uses the binary as is);
#   2. starts a throwaway PostgreSQL (initdb; defaults except listen address, port, socket dir,
#      max_connections = 300 and password_encryption = md5 so that every hop is md5), creates
#      role `bench` (md5 password), role `bench_scram` (the same password stored as a SCRAM
#      secret, for connect-scram) and database `bench`, runs `pgbench -i -s $SCALE`;
#   3. starts the targets, all on 127.0.0.1 free ports, all with md5 client auth (SCRAM for
#      bench_scram: PgBouncer has its SCRAM secret in the auth_file, pgcat its password):
#        direct        PostgreSQL itself
#        pgbouncer     if `pgbouncer` is on PATH: transaction mode, default_pool_size 20,
#                      auth_type md5 with an auth_file
#        pgcat         target/release/pgcat: transaction mode, pool_size 20, auth_type md5,
#                      worker_threads $PGCAT_WORKERS (below)
#        pgcat+parser  the same with query_parser_enabled and query_parser_read_write_splitting
#                      (only a primary, primary_reads_enabled: every query is parsed and routed
#                      to the primary), to measure what the parser costs;
#        relay-epoll   (only when named in TARGETS) bench/relay_epoll.c, built with cc: a
#                      one-thread epoll relay with one server connection per client and no
#                      protocol work, the floor under any pooler in a readiness model;
#        relay-uring   (likewise) bench/relay_uring.c, the same relay on io_uring (needs
#                      liburing: apt-get install liburing-dev);
#        relay-tokio   (likewise) bench/relay_tokio.rs, the same relay on tokio (one thread,
#                      as the pooler runs here), built with `cargo build --release --example
#                      relay_tokio`: what tokio costs before the pooler does anything. No
#                      relay pools, so they run only the workloads with as many server
#                      connections as clients (select, extended, tpcb, prepared);
#   4. memory per idle client, on the freshly started poolers: a python3 script (stdlib sockets,
#      startup + md5 login) opens $IDLE_CLIENTS idle connections to each pooler in turn;
#      (VmRSS after - VmRSS before) / clients. The poolers are then restarted and warmed up
#      ($WARMUP s of -S each);
#   5. $ROUNDS rounds; in each round, for each workload, one `pgbench -j 2 -T $DURATION` run per
#      target, targets alternated (the order rotates from round to round):
#        select         -S, $CLIENTS clients
#        extended       -S -M extended, $CLIENTS clients
#        tpcb           built-in tpcb-like, $CLIENTS clients
#        select-200     -S, 200 clients (the poolers have 20 server connections)
#        connect        -S -C (a new connection per transaction), $CLIENTS clients
#        connect-scram  the same as user bench_scram: a SCRAM login per transaction
#        prepared       -S -M prepared, $CLIENTS clients
#      Runs use -n; before a tpcb run the script vacuums branches/tellers and truncates history
#      on PostgreSQL directly (what pgbench does by itself), so the pooler only sees the workload.
#      Per run: TPS and average latency (pgbench's output), pooler CPU seconds per 10k
#      transactions (utime+stime of the pooler process from /proc/<pid>/stat before and after,
#      in CLK_TCK ticks; utime alone in the next column: the rest is the kernel's), peak RSS of the pooler during the run (VmHWM from /proc/<pid>/status,
#      reset before each run by writing 5 to /proc/<pid>/clear_refs).
#      Shared machines: before each run the script waits (at most $QUIET_WAIT s) until other
#      processes use less than $QUIET_PCT % of the cores; during the run it measures the CPU
#      used by everything that is not ours (/proc/stat minus PostgreSQL, the poolers and
#      pgbench) and repeats a run where that exceeded $DISTURBED_PCT % (at most $RETRIES times;
#      the last attempt is kept and the report says how many kept runs were disturbed).
#   6. prints a markdown table (medians over the rounds, each column its own median) with ratios
#      to PgBouncer, the idle-client memory, and the issue's targets with met/missed.
#
# CALLGRIND=1 bench/pgbench.sh measures instead the pooler's own instructions per transaction,
# which a shared machine does not disturb: after steps 1-2 it runs each pgcat target (default:
# pgcat; relay targets too when named) under `valgrind --tool=callgrind` once per workload (default: select extended
# prepared), warms it up with 300 transactions per client, zeroes the counters, runs `pgbench
# -t $CG_TX` (500 per client), dumps the counters and prints instructions per transaction (the
# pooler's user space; what the kernel spends is not counted). PgBouncer, a target by
# default, runs under callgrind the same way, so the table shows both. Needs valgrind
# (`apt-get install valgrind`).
#
# STRACE=1 bench/pgbench.sh counts instead the system calls per transaction of each pooler
# target (default: pgbouncer pgcat; workloads select extended select-200): after 300
# transactions per client of warm-up, `strace -f -c` is attached to the pooler for a `pgbench
# -t $CG_TX` run, and the calls of each kind are divided by the transactions: one table per
# workload, the poolers side by side. Needs strace (`apt-get install strace`).
#
# Environment: SCALE (10), DURATION (15 s), ROUNDS (3), CLIENTS (16), IDLE_CLIENTS (2000),
#   WORKLOADS (space-separated subset of the names above, default all), TARGETS (default
#   "direct pgbouncer pgcat pgcat+parser"; relay-epoll and relay-uring on request), WARMUP
#   (5 s), PGBIN (dir of initdb/pg_ctl; found via pg_config or /usr/lib/postgresql/*/bin),
#   PGCAT_BIN (default target/release/pgcat, under $CARGO_TARGET_DIR when that is set, where
#   `cargo build` puts it),
#   OUT (also write the report to this file, and the per-run rows to ${OUT%.*}.tsv),
#   KEEP=1 (keep the temp dir), QUIET_PCT (10), QUIET_WAIT (600), DISTURBED_PCT (10), RETRIES (2),
#   PGCAT_WORKERS (1: worker_threads of the pooler, one event loop like PgBouncer's; 0 leaves
#   the pooler's default, one worker per core).
#
# Needs: PostgreSQL server binaries, pgbench, psql, python3; pgbouncer optional
#   (`apt-get install pgbouncer`). Run as root, PostgreSQL and PgBouncer run as the `postgres`
#   user (they refuse root); the pooler runs as the invoking user. Every process the script
#   starts is stopped by pid on exit (trap), and every wait has a bound.
#
set -euo pipefail

SCALE=${SCALE:-10}
DURATION=${DURATION:-15}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-16}
IDLE_CLIENTS=${IDLE_CLIENTS:-2000}
WARMUP=${WARMUP:-5}
CALLGRIND=${CALLGRIND:-}
STRACE=${STRACE:-}
CG_TX=${CG_TX:-500}
if [ -n "$CALLGRIND" ]; then
    WORKLOADS=${WORKLOADS:-"select extended prepared connect connect-scram"}
    TARGETS=${TARGETS:-"pgbouncer pgcat"}
elif [ -n "$STRACE" ]; then
    WORKLOADS=${WORKLOADS:-"select extended select-200 connect connect-scram"}
    TARGETS=${TARGETS:-"pgbouncer pgcat"}
else
    WORKLOADS=${WORKLOADS:-"select extended tpcb select-200 connect connect-scram prepared"}
    TARGETS=${TARGETS:-"direct pgbouncer pgcat pgcat+parser"}
fi
PGCAT_WORKERS=${PGCAT_WORKERS:-1}
POOL_SIZE=20
BIG_CLIENTS=200

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGCAT_BIN=${PGCAT_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/pgcat}
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- process bookkeeping
WORK=""
PG_PID=""
PGB_PID=""
declare -A POOLER_PID=()   # target -> pid of the pooler process
CHILD_PID=""               # the pgbench / python currently running in the background

# Stop one pid: signal, wait at most $3 seconds, then SIGKILL. Not our child necessarily
# (PostgreSQL and PgBouncer daemonize), so poll with kill -0.
stop_pid() {
    local pid=$1 sig=$2 secs=$3 i
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -"$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        # reap it if it is our child (a zombie still answers kill -0)
        if [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ]; then wait "$pid" 2>/dev/null || true; break; fi
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]; then
        log "pid $pid did not stop within ${secs}s; SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? t
    trap - EXIT INT TERM
    stop_pid "$CHILD_PID" TERM 5
    for t in "${!POOLER_PID[@]}"; do stop_pid "${POOLER_PID[$t]}" TERM 10; done
    stop_pid "$PGB_PID" TERM 10
    stop_pid "$PG_PID" INT 30          # SIGINT = PostgreSQL's fast shutdown
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        if [ "${KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Run a command in the background with a time bound and wait for it (so the trap can stop it).
# Output goes to $1.
bounded() {
    local out=$1 secs=$2 rc=0
    shift 2
    timeout --kill-after=10 "$secs" "$@" >"$out" 2>&1 &
    CHILD_PID=$!
    wait "$CHILD_PID" || rc=$?
    CHILD_PID=""
    return "$rc"
}

# PostgreSQL and PgBouncer refuse to run as root.
if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' OS user to run PostgreSQL"
    as_pg() { runuser -u postgres -- "$@"; }
else
    as_pg() { "$@"; }
fi

# ---------------------------------------------------------------- prerequisites
find_pgbin() {
    local d
    if [ -n "${PGBIN:-}" ]; then echo "$PGBIN"; return; fi
    if command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then pg_config --bindir; return; fi
    if command -v initdb >/dev/null; then dirname "$(command -v initdb)"; return; fi
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        [ -x "$d/initdb" ] && { echo "$d"; return; }
    done
    die "PostgreSQL server binaries (initdb, pg_ctl) not found; set PGBIN"
}
PGBIN=$(find_pgbin)
for c in pgbench psql python3 timeout; do command -v "$c" >/dev/null || die "$c not found"; done
HAVE_PGB=0
if command -v pgbouncer >/dev/null; then HAVE_PGB=1; else log "pgbouncer not installed: skipping it (apt-get install pgbouncer)"; fi

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
fi
[ -x "$PGCAT_BIN" ] || die "$PGCAT_BIN not found (cargo build --release)"

# Targets actually run, in order.
ACTIVE=()
for t in $TARGETS; do
    case $t in
        direct|pgcat|pgcat+parser|relay-epoll|relay-uring|relay-tokio) ACTIVE+=("$t") ;;
        pgbouncer) [ "$HAVE_PGB" = 1 ] && ACTIVE+=("$t") ;;
        *) die "unknown target $t" ;;
    esac
done
for w in $WORKLOADS; do
    case $w in select|extended|tpcb|select-200|connect|connect-scram|prepared) ;; *) die "unknown workload $w" ;; esac
done

# Raise our open-file limit for the idle-client test (children inherit it).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge $((IDLE_CLIENTS + 200)) ] ||
    log "warning: open-file limit $(ulimit -n) is low for $IDLE_CLIENTS idle clients"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pgcat-bench.XXXXXX")
chmod 755 "$WORK"
[ "$(id -u)" = 0 ] && chown postgres: "$WORK"
mkdir -p "$WORK/runs"
[ "$(id -u)" = 0 ] && chown postgres: "$WORK/runs"
log "work dir $WORK"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PG_PORT=$(free_port)
declare -A PORT=([direct]=$PG_PORT)
for t in pgbouncer pgcat pgcat+parser relay-epoll relay-uring relay-tokio; do
    while :; do
        p=$(free_port)
        case " ${PORT[*]} " in *" $p "*) ;; *) PORT[$t]=$p; break ;; esac
    done
done

# The reference relays, built from source; a target whose build fails is dropped.
build_relay() { # target
    local t=$1 src="$ROOT/bench/${1/-/_}.c" libs=()
    if [ "$t" = relay-tokio ]; then
        (cd "$ROOT" && cargo build --release --quiet --example relay_tokio) >"$WORK/$t.build.log" 2>&1 &&
            cp "$(dirname "$PGCAT_BIN")/examples/relay_tokio" "$WORK/$t" && return 0
        log "$t: cannot build bench/relay_tokio.rs (see $WORK/$t.build.log): skipping it"
        return 1
    fi
    [ "$t" = relay-uring ] && libs=(-luring)
    if command -v cc >/dev/null && cc -O2 -o "$WORK/$t" "$src" "${libs[@]}" 2>"$WORK/$t.build.log"; then return 0; fi
    log "$t: cannot build $src (needs cc$([ "$t" = relay-uring ] && echo ' and liburing-dev')): skipping it"
    return 1
}
KEPT=()
for t in "${ACTIVE[@]}"; do
    case $t in relay-*) build_relay "$t" || continue ;; esac
    KEPT+=("$t")
done
ACTIVE=("${KEPT[@]}")
# A relay has one server connection per client: it runs only where the poolers have as many.
runs_workload() { # target workload
    case $1:$2 in relay-*:connect*|relay-*:select-200) return 1 ;; esac
}

# ---------------------------------------------------------------- PostgreSQL
export PGPASSWORD=bench
log "initdb ($PGBIN)"
as_pg "$PGBIN/initdb" -D "$WORK/pg" -U postgres --auth-local=trust --auth-host=md5 >"$WORK/initdb.log" 2>&1 ||
    { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
cat >>"$WORK/pg/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$WORK'
max_connections = 300
password_encryption = md5
EOF
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w -t 60 start >/dev/null ||
    { tail -20 "$WORK/pg.log" >&2; die "PostgreSQL did not start"; }
PG_PID=$(head -1 "$WORK/pg/postmaster.pid")
log "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on port $PG_PORT (pid $PG_PID)"

psql_su() { as_pg timeout 300 psql -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "$PG_PORT" -U postgres "$@"; }
psql_su -d postgres -c "CREATE ROLE bench LOGIN PASSWORD 'bench'" -c "CREATE DATABASE bench OWNER bench"
# The connect-scram workload's user: the same password, stored as a SCRAM secret (PgBouncer
# gets that secret in its auth_file, so neither pooler derives keys from a password per login).
psql_su -d postgres -c "SET password_encryption = 'scram-sha-256'" -c "CREATE ROLE bench_scram LOGIN PASSWORD 'bench'"
log "pgbench -i -s $SCALE"
bounded "$WORK/init.log" 1800 pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U bench bench ||
    { cat "$WORK/init.log" >&2; die "pgbench -i failed"; }
psql_su -d bench -c "GRANT SELECT ON ALL TABLES IN SCHEMA public TO bench_scram" -c "VACUUM ANALYZE" -c "CHECKPOINT"

# ---------------------------------------------------------------- poolers
has_target() { [[ " ${ACTIVE[*]} " == *" $1 "* ]]; }
if has_target pgbouncer; then
    printf '"bench" "md5%s"\n' "$(printf '%s' benchbench | md5sum | cut -d' ' -f1)" >"$WORK/userlist.txt"
    # auth_type md5 authenticates a user whose auth_file entry is a SCRAM secret with SCRAM.
    printf '"bench_scram" "%s"\n' "$(psql_su -d postgres -Atc "SELECT rolpassword FROM pg_authid WHERE rolname = 'bench_scram'")" \
        >>"$WORK/userlist.txt"
    cat >"$WORK/pgbouncer.ini" <<EOF
[databases]
bench = host=127.0.0.1 port=$PG_PORT dbname=bench

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${PORT[pgbouncer]}
unix_socket_dir = $WORK
auth_type = md5
auth_file = $WORK/userlist.txt
pool_mode = transaction
default_pool_size = $POOL_SIZE
max_client_conn = $((IDLE_CLIENTS + 1000))
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
logfile = $WORK/pgbouncer.log
pidfile = $WORK/pgbouncer.pid
EOF
    [ "$(id -u)" = 0 ] && chown postgres: "$WORK/userlist.txt" "$WORK/pgbouncer.ini"
    PGB_VERSION=$(pgbouncer --version | head -1)
fi
start_pgbouncer() {
    rm -f "$WORK/pgbouncer.pid"
    if [ "${#PGCAT_WRAP[@]}" -gt 0 ]; then
        # Under a wrapper (valgrind): in the foreground of its own background process.
        # runuser stays the parent: the wrapped process's pid is the shell's that execs it.
        rm -f "$WORK/pgbouncer.wrapped"
        as_pg bash -c 'echo $$ >"$1"; shift; ulimit -n "$(ulimit -Hn)"; exec "$@"' _ "$WORK/pgbouncer.wrapped" \
            "${PGCAT_WRAP[@]}" pgbouncer "$WORK/pgbouncer.ini" >"$WORK/pgbouncer.out" 2>&1 &
        local i
        for ((i = 0; i < 100; i++)); do [ -s "$WORK/pgbouncer.wrapped" ] && break; sleep 0.1; done
        PGB_PID=$(cat "$WORK/pgbouncer.wrapped")
        POOLER_PID[pgbouncer]=$PGB_PID
        log "$PGB_VERSION under ${PGCAT_WRAP[0]} on port ${PORT[pgbouncer]} (pid $PGB_PID)"
        return 0
    fi
    # runuser's PAM session resets the open-file limit: raise it again for the idle-client test
    as_pg bash -c 'ulimit -n "$(ulimit -Hn)"; exec pgbouncer -d "$1"' _ "$WORK/pgbouncer.ini" >"$WORK/pgbouncer.out" 2>&1 ||
        { cat "$WORK/pgbouncer.out" "$WORK/pgbouncer.log" >&2 2>/dev/null; die "pgbouncer did not start"; }
    local i
    for ((i = 0; i < 100; i++)); do [ -s "$WORK/pgbouncer.pid" ] && break; sleep 0.1; done
    [ -s "$WORK/pgbouncer.pid" ] || die "pgbouncer wrote no pid file"
    PGB_PID=$(cat "$WORK/pgbouncer.pid")
    POOLER_PID[pgbouncer]=$PGB_PID
    log "$PGB_VERSION on port ${PORT[pgbouncer]} (pid $PGB_PID)"
}

pgcat_config() { # $1 target, $2 extra pool keys
    cat <<EOF
[general]
host = "127.0.0.1"
port = ${PORT[$1]}
admin_username = "admin"
admin_password = "admin"
max_client_conn = $((IDLE_CLIENTS + 1000))
$(if [ "$PGCAT_WORKERS" != 0 ]; then echo "worker_threads = $PGCAT_WORKERS"; fi)

[pools.bench]
pool_mode = "transaction"
default_shard = "shard_0"
$2

[pools.bench.users.0]
username = "bench"
password = "bench"
auth_type = "md5"
pool_size = $POOL_SIZE

[pools.bench.users.1]
username = "bench_scram"
password = "bench"
auth_type = "scram-sha-256"
pool_size = $POOL_SIZE

[pools.bench.shards.0]
database = "bench"
servers = [["127.0.0.1", $PG_PORT, "primary"]]
EOF
}
start_pgcat() { # $1 target, $2 extra pool keys
    local t=$1 f="$WORK/${1/+/-}.toml"
    pgcat_config "$t" "$2" >"$f"
    "$PGCAT_BIN" --check "$f" >"$WORK/${t/+/-}.check" 2>&1 || { cat "$WORK/${t/+/-}.check" >&2; die "$t: config rejected"; }
    "${PGCAT_WRAP[@]}" "$PGCAT_BIN" "$f" >"$WORK/${t/+/-}.log" 2>&1 &
    POOLER_PID[$t]=$!
    log "$t on port ${PORT[$t]} (pid ${POOLER_PID[$t]})"
}
PGCAT_WRAP=()   # a command the pooler runs under (CALLGRIND=1: valgrind)
PARSER_KEYS=$'query_parser_enabled = true\nquery_parser_read_write_splitting = true\nprimary_reads_enabled = true'

# Wait (bounded: 30 s) until target $1 answers a query.
wait_answers() {
    local t=$1 i
    for ((i = 0; i < 60; i++)); do
        if [ -n "${POOLER_PID[$t]:-}" ] && ! kill -0 "${POOLER_PID[$t]}" 2>/dev/null; then break; fi
        if timeout 5 psql -X -qAt -h 127.0.0.1 -p "${PORT[$t]}" -U bench -d bench -c 'SELECT 1' >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    tail -20 "$WORK/${t/+/-}.log" >&2 2>/dev/null || true
    die "$t does not answer on port ${PORT[$t]}"
}

# Start every pooler target and wait until each answers a query.
start_poolers() {
    local t
    has_target pgbouncer && start_pgbouncer
    has_target pgcat && start_pgcat pgcat ""
    has_target pgcat+parser && start_pgcat pgcat+parser "$PARSER_KEYS"
    for t in relay-epoll relay-uring relay-tokio; do
        has_target "$t" && start_relay "$t"
    done
    for t in "${ACTIVE[@]}"; do wait_answers "$t"; done
}
start_relay() { # target
    "${PGCAT_WRAP[@]}" "$WORK/$1" "${PORT[$1]}" "$PG_PORT" >"$WORK/$1.log" 2>&1 &
    POOLER_PID[$1]=$!
    log "$1 on port ${PORT[$1]} (pid ${POOLER_PID[$1]})"
}
stop_poolers() {
    local t
    for t in "${!POOLER_PID[@]}"; do stop_pid "${POOLER_PID[$t]}" TERM 10; unset "POOLER_PID[$t]"; done
    PGB_PID=""
}

# ---------------------------------------------------------------- measurements
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }  # utime+stime
user_ticks() { awk '{ sub(/^.*\) /, ""); print $12 }' "/proc/$1/stat"; }  # utime
status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# Ticks the whole machine spent busy (user+nice+system+irq+softirq: a task's stime includes
# the softirq time spent in its context), and the hypervisor's steal.
sys_busy_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat; }  # user nice system irq softirq
sys_steal_ticks() { awk '$1 == "cpu" { print $9; exit }' /proc/stat; }
# Ticks spent by our PostgreSQL: the postmaster, its reaped children (cutime+cstime) and its
# live children.
pg_ticks() {
    { cat "/proc/$PG_PID/stat" /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v p="$PG_PID" '
        { pid = $1; sub(/^[0-9]+ \(.*\) /, "") }
        NR == 1 { s += $12 + $13 + $14 + $15; next }
        $2 == p { s += $12 + $13 }
        END { print s + 0 }'
}
# Ticks of every pooler process (the idle ones included: all of it is ours).
poolers_ticks() { local t s=0; for t in "${!POOLER_PID[@]}"; do s=$((s + $(cpu_ticks "${POOLER_PID[$t]}"))); done; echo "$s"; }
# Children of this shell that have been reaped (pgbench, through timeout), from `times`.
children_ticks() { times | awk -v hz="$CLK_TCK" 'NR == 2 { n = split($0, f, " "); s = 0
    for (i = 1; i <= n; i++) { split(f[i], m, "m"); sub(/s$/, "", m[2]); s += m[1] * 60 + m[2] }
    printf "%d\n", s * hz + 0.5 }'; }
ours_ticks() { echo $(($(pg_ticks) + $(poolers_ticks) + $(children_ticks))); }

# Wait (at most QUIET_WAIT s) until the machine is quiet: less than QUIET_PCT % of all cores
# busy over one second while nothing of ours runs (idle poolers' housekeeping aside).
NCPU=$(nproc)
QUIET_PCT=${QUIET_PCT:-10}
QUIET_WAIT=${QUIET_WAIT:-600}
busy_pct_1s() { local b0 b1; b0=$(sys_busy_ticks); sleep 1; b1=$(sys_busy_ticks)
    awk -v d=$((b1 - b0)) -v hz="$CLK_TCK" -v n="$NCPU" 'BEGIN { printf "%.0f\n", d / hz / n * 100 }'; }
wait_quiet() {
    local start=$SECONDS p
    while :; do
        p=$(busy_pct_1s)
        [ "$p" -lt "$QUIET_PCT" ] && return 0
        if ((SECONDS - start >= QUIET_WAIT)); then log "machine still ${p}% busy after ${QUIET_WAIT}s; measuring anyway"; return 0; fi
        ((SECONDS - start < 2)) && log "machine ${p}% busy (not ours): waiting up to ${QUIET_WAIT}s for quiet"
        sleep 4
    done
}

pgbench_args() { # workload -> pgbench options (besides -j -T -n and the connection)
    case $1 in
        select) echo "-S -c $CLIENTS" ;;
        extended) echo "-S -M extended -c $CLIENTS" ;;
        tpcb) echo "-c $CLIENTS" ;;
        select-200) echo "-S -c $BIG_CLIENTS" ;;
        connect) echo "-S -C -c $CLIENTS" ;;
        connect-scram) echo "-S -C -c $CLIENTS -U bench_scram" ;;
        prepared) echo "-S -M prepared -c $CLIENTS" ;;
    esac
}

label() {
    case $1 in
        select) echo "\`-S\`, $CLIENTS clients" ;;
        extended) echo "\`-S -M extended\`, $CLIENTS clients" ;;
        tpcb) echo "tpcb-like, $CLIENTS clients" ;;
        select-200) echo "\`-S\`, $BIG_CLIENTS clients / $POOL_SIZE server conns" ;;
        connect) echo "\`-S -C\`, $CLIENTS clients" ;;
        connect-scram) echo "\`-S -C\`, SCRAM, $CLIENTS clients" ;;
        prepared) echo "\`-S -M prepared\`, $CLIENTS clients" ;;
    esac
}

# Our CPU ticks so far (PostgreSQL, poolers, reaped children of this shell). Must run in
# this shell, not in $(...): `times` reports the calling process's children.
sample_ours() {
    times >"$WORK/times.txt"
    OURS=$(($(pg_ticks) + $(poolers_ticks) + $(awk -v hz="$CLK_TCK" 'NR == 2 { n = split($0, f, " ")
        for (i = 1; i <= n; i++) { split(f[i], m, "m"); sub(/s$/, "", m[2]); s += m[1] * 60 + m[2] }
        printf "%d\n", s * hz + 0.5 }' "$WORK/times.txt")))
}

DISTURBED_PCT=${DISTURBED_PCT:-10}
RETRIES=${RETRIES:-2}
RESULTS="$WORK/results.tsv"   # round workload target tps latency_ms tx cpu_s_per_10k hwm_kb status foreign% steal% user_cpu_s_per_10k
: >"$RESULTS"

# One pgbench run; sets TPS LAT TX CPU USER_CPU HWM STATUS FOREIGN STEAL.
measure() { # round workload target attempt
    local r=$1 w=$2 t=$3 pid="${POOLER_PID[$3]:-}" out c0 c1 u0 u1 rc=0 s0 s1 st0 st1 o0 t0 t1
    out="$WORK/runs/r$r-$w-${t/+/-}-$4.log"
    if [ "$w" = tpcb ]; then
        psql_su -d bench -c "VACUUM pgbench_branches" -c "VACUUM pgbench_tellers" -c "TRUNCATE pgbench_history"
    fi
    wait_quiet
    if [ -n "$pid" ]; then
        kill -0 "$pid" 2>/dev/null || die "$t (pid $pid) is gone"
        echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || true   # reset VmHWM to the current RSS
        c0=$(cpu_ticks "$pid"); u0=$(user_ticks "$pid")
    fi
    sample_ours; o0=$OURS; s0=$(sys_busy_ticks); st0=$(sys_steal_ticks); t0=$EPOCHREALTIME
    # shellcheck disable=SC2046
    bounded "$out" $((DURATION + 120)) pgbench -n -j 2 -T "$DURATION" -h 127.0.0.1 -p "${PORT[$t]}" -U bench \
        $(pgbench_args "$w") bench || rc=$?
    s1=$(sys_busy_ticks); st1=$(sys_steal_ticks); t1=$EPOCHREALTIME; sample_ours
    # CPU the rest of the machine used during the run, in % of all cores (steal separately)
    FOREIGN=$(awk -v d=$((s1 - s0 - (OURS - o0))) -v hz="$CLK_TCK" -v n="$NCPU" -v t0="$t0" -v t1="$t1" \
        'BEGIN { printf "%.1f", d / hz / n / (t1 - t0) * 100 }')
    STEAL=$(awk -v d=$((st1 - st0)) -v hz="$CLK_TCK" -v n="$NCPU" -v t0="$t0" -v t1="$t1" \
        'BEGIN { printf "%.1f", d / hz / n / (t1 - t0) * 100 }')
    TPS=$(awk '/^tps = / { print $3; exit }' "$out")
    LAT=$(awk '/^latency average = / { print $4; exit }' "$out")
    TX=$(awk -F': ' '/^number of transactions actually processed/ { split($2, a, "/"); print a[1]; exit }' "$out")
    STATUS=ok
    if [ "$rc" != 0 ] || [ -z "$TPS" ] || [ -z "$TX" ] || [ "$TX" = 0 ] || grep -qiE 'aborted|error' "$out"; then
        STATUS=FAIL
        log "  $t $w: pgbench rc=$rc: $(grep -m1 -iE 'error|aborted|fatal' "$out" || tail -1 "$out")"
    fi
    CPU=- USER_CPU=- HWM=-
    if [ -n "$pid" ]; then
        c1=$(cpu_ticks "$pid"); u1=$(user_ticks "$pid")
        HWM=$(status_kb "$pid" VmHWM)
        if [ -n "$TX" ] && [ "$TX" != 0 ]; then
            CPU=$(awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" -v n="$TX" 'BEGIN { printf "%.4f", d / hz / n * 10000 }')
            USER_CPU=$(awk -v d=$((u1 - u0)) -v hz="$CLK_TCK" -v n="$TX" 'BEGIN { printf "%.4f", d / hz / n * 10000 }')
        fi
    fi
}

# A run during which the rest of the machine used more than DISTURBED_PCT % of the cores is
# repeated (at most RETRIES times; the last attempt is kept either way).
run_one() { # round workload target
    local r=$1 w=$2 t=$3 a
    for ((a = 0; a <= RETRIES; a++)); do
        measure "$r" "$w" "$t" "$a"
        log "  round $r $w $t: tps=${TPS:--} lat=${LAT:--}ms cpu/10k=$CPU hwm=${HWM}kB foreign=${FOREIGN}% steal=${STEAL}% $STATUS"
        [ "$STATUS" = ok ] || break   # a failed run measures nothing: no point repeating it
        awk -v f="$FOREIGN" -v m="$DISTURBED_PCT" 'BEGIN { exit !(f > m) }' || break
        [ "$a" -lt "$RETRIES" ] && log "  disturbed (${FOREIGN}% of the cores used by other processes): again"
    done
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$w" "$t" "${TPS:--}" "${LAT:--}" "${TX:--}" \
        "$CPU" "$HWM" "$STATUS" "$FOREIGN" "$STEAL" "$USER_CPU" >>"$RESULTS"
}

# Memory per idle client.
IDLE_PY=$(cat <<'EOF'
import hashlib, socket, struct, sys, time
port, n, ready = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
user, password, db = b"bench", b"bench", b"bench"
def recv_exact(s, k):
    b = b""
    while len(b) < k:
        c = s.recv(k - len(b))
        if not c: raise EOFError("closed during login")
        b += c
    return b
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    body = struct.pack("!i", 196608) + b"user\0" + user + b"\0database\0" + db + b"\0\0"
    s.sendall(struct.pack("!i", len(body) + 4) + body)
    while True:
        t = recv_exact(s, 1); ln = struct.unpack("!i", recv_exact(s, 4))[0]; p = recv_exact(s, ln - 4)
        if t == b"R":
            code = struct.unpack("!i", p[:4])[0]
            if code == 5:
                inner = hashlib.md5(password + user).hexdigest().encode()
                pw = b"md5" + hashlib.md5(inner + p[4:8]).hexdigest().encode() + b"\0"
                s.sendall(b"p" + struct.pack("!i", len(pw) + 4) + pw)
            elif code != 0:
                raise SystemExit("unexpected auth request %d" % code)
        elif t == b"E":
            raise SystemExit("login %d failed: %r" % (i, p))
        elif t == b"Z":
            break
    socks.append(s)
open(ready, "w").write("%d\n" % len(socks))
time.sleep(600)
EOF
)
declare -A IDLE_KB=()
idle_test() { # target
    local t=$1 pid="${POOLER_PID[$1]}" before after i rc=0 ready="$WORK/idle-${1/+/-}.ready"
    sleep 1
    before=$(status_kb "$pid" VmRSS)
    python3 -c "$IDLE_PY" "${PORT[$t]}" "$IDLE_CLIENTS" "$ready" >"$WORK/idle-${t/+/-}.log" 2>&1 &
    CHILD_PID=$!
    for ((i = 0; i < 1200; i++)); do
        [ -s "$ready" ] && break
        kill -0 "$CHILD_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [ -s "$ready" ]; then
        sleep 3   # let the pooler settle
        after=$(status_kb "$pid" VmRSS)
        IDLE_KB[$t]=$(awk -v a="$after" -v b="$before" -v n="$IDLE_CLIENTS" 'BEGIN { printf "%.2f", (a - b) / n }')
        log "idle clients via $t: VmRSS ${before} kB -> ${after} kB: ${IDLE_KB[$t]} kB per client"
    else
        IDLE_KB[$t]=FAIL
        log "idle clients via $t failed: $(tail -2 "$WORK/idle-${t/+/-}.log")"
    fi
    stop_pid "$CHILD_PID" TERM 10 || rc=$?
    CHILD_PID=""
    sleep 2   # let the pooler notice the closed clients before the next measurement
    return 0
}
# callgrind_control for target $1's process (PgBouncer's runs as postgres: so does this).
cg_control() { # target option pid
    if [ "$1" = pgbouncer ]; then
        as_pg timeout 60 callgrind_control "$2" "$3" >/dev/null 2>&1
    else
        timeout 60 callgrind_control "$2" "$3" >/dev/null 2>&1
    fi
}

# STRACE=1: the system calls per transaction of each pooler, side by side, then exit.
strace_run() {
    command -v strace >/dev/null || die "STRACE=1 needs strace (apt-get install strace)"
    local t w pid tx out
    declare -A CALLS=() NAMES=()
    echo "System calls per transaction in the pooler (strace -f -c; pgbench -t $CG_TX per client after 300 each of warm-up):"
    for w in $WORKLOADS; do
        for t in "${ACTIVE[@]}"; do
            [[ $t == pgcat* || $t == pgbouncer ]] || continue
            # PgBouncer 1.18 keeps no prepared statements in transaction mode.
            if [ "$t" = pgbouncer ] && [ "$w" = prepared ]; then continue; fi
            case $t in
                pgbouncer) start_pgbouncer ;;
                pgcat+parser) start_pgcat "$t" "$PARSER_KEYS" ;;
                *) start_pgcat "$t" "" ;;
            esac
            wait_answers "$t"
            pid=${POOLER_PID[$t]}
            # shellcheck disable=SC2046
            bounded "$WORK/st-warm-$w.log" 600 pgbench -n -j 2 -t 300 -h 127.0.0.1 -p "${PORT[$t]}" -U bench \
                $(pgbench_args "$w") bench || die "$t $w: warm-up failed"
            out="$WORK/st-${t/+/-}-$w.txt"
            strace -f -c -o "$out" -p "$pid" 2>/dev/null &
            local tracer=$!
            sleep 1
            # shellcheck disable=SC2046
            bounded "$WORK/st-run-$w.log" 1200 pgbench -n -j 2 -t "$CG_TX" -h 127.0.0.1 -p "${PORT[$t]}" -U bench \
                $(pgbench_args "$w") bench || die "$t $w: pgbench failed"
            kill -INT "$tracer" 2>/dev/null || true
            wait "$tracer" 2>/dev/null || true
            stop_poolers
            tx=$(awk -F': ' '/^number of transactions actually processed/ { split($2, a, "/"); print a[1]; exit }' "$WORK/st-run-$w.log")
            [ -n "$tx" ] && [ -s "$out" ] || die "$t $w: no strace summary"
            # strace -c: "% time  seconds  usecs/call  calls  [errors]  syscall"
            while read -r name calls; do
                CALLS[$w/$t/$name]=$(awk -v c="$calls" -v n="$tx" 'BEGIN { printf "%.2f", c / n }')
                NAMES[$w/$name]=1
            done < <(awk '$1 ~ /^[0-9.]+$/ && NF >= 5 { print $NF, $4 }' "$out")
        done
        echo
        echo "$(label "$w"):"
        echo
        local head="| system call |" rule="|---|"
        for t in "${ACTIVE[@]}"; do
            [[ $t == pgcat* || $t == pgbouncer ]] || continue
            head="$head $t |"; rule="$rule---:|"
        done
        echo "$head"; echo "$rule"
        local n line
        for n in $(printf '%s\n' "${!NAMES[@]}" | awk -F/ -v w="$w" '$1 == w { print $2 }' | sort); do
            line="| \`$n\` |"
            local keep=0
            for t in "${ACTIVE[@]}"; do
                [[ $t == pgcat* || $t == pgbouncer ]] || continue
                line="$line ${CALLS[$w/$t/$n]:-0.00} |"
                if [ "${CALLS[$w/$t/$n]:-0.00}" != 0.00 ]; then keep=1; fi
            done
            if [ "$keep" = 1 ]; then echo "$line"; fi
        done
    done
}
if [ -n "$STRACE" ]; then
    strace_run >"$WORK/strace.md"
    cat "$WORK/strace.md"
    [ -n "${OUT:-}" ] && { cp "$WORK/strace.md" "$OUT"; log "report written to $OUT"; }
    exit 0
fi

# CALLGRIND=1: the pooler's instructions per transaction, then exit.
callgrind_run() {
    command -v valgrind >/dev/null && command -v callgrind_control >/dev/null ||
        die "CALLGRIND=1 needs valgrind (apt-get install valgrind)"
    local t w pid dump ir tx
    echo "Instructions per transaction in the pooler (callgrind; $CLIENTS clients, $CG_TX transactions each after 300 each of warm-up):"
    echo
    echo "| workload | target | transactions | instructions | per transaction |"
    echo "|---|---|---:|---:|---:|"
    for t in "${ACTIVE[@]}"; do
        [[ $t == direct ]] && continue
        for w in $WORKLOADS; do
            runs_workload "$t" "$w" || continue
            if [ "$t" = pgbouncer ] && [ "$w" = prepared ]; then
                # PgBouncer 1.18 keeps no prepared statements in transaction mode: pgbench fails.
                printf '| %s | %s | (fails) | | |\n' "$(label "$w")" "$t"
                continue
            fi
            PGCAT_WRAP=(valgrind --tool=callgrind "--callgrind-out-file=$WORK/cg-${t/+/-}-$w")
            case $t in
                pgbouncer) start_pgbouncer ;;
                pgcat+parser) start_pgcat "$t" "$PARSER_KEYS" ;;
                relay-*) start_relay "$t" ;;
                *) start_pgcat "$t" "" ;;
            esac
            wait_answers "$t"
            pid=${POOLER_PID[$t]}
            # shellcheck disable=SC2046
            bounded "$WORK/cg-warm-$w.log" 1200 pgbench -n -j 2 -t 300 -h 127.0.0.1 -p "${PORT[$t]}" -U bench \
                $(pgbench_args "$w") bench || die "$t $w: warm-up failed"
            cg_control "$t" -z "$pid"
            # shellcheck disable=SC2046
            bounded "$WORK/cg-run-$w.log" 1800 pgbench -n -j 2 -t "$CG_TX" -h 127.0.0.1 -p "${PORT[$t]}" -U bench \
                $(pgbench_args "$w") bench || die "$t $w: pgbench failed"
            cg_control "$t" -d "$pid"
            stop_poolers
            dump="$WORK/cg-${t/+/-}-$w.1"
            ir=$(awk '/^summary:/ { print $2; exit }' "$dump")
            tx=$(awk -F': ' '/^number of transactions actually processed/ { split($2, a, "/"); print a[1]; exit }' "$WORK/cg-run-$w.log")
            [ -n "$ir" ] && [ -n "$tx" ] || die "$t $w: no callgrind summary in $dump"
            printf '| %s | %s | %s | %s | %s |\n' "$(label "$w")" "$t" "$tx" "$ir" "$((ir / tx))"
        done
    done
    PGCAT_WRAP=()
}
if [ -n "$CALLGRIND" ]; then
    callgrind_run >"$WORK/callgrind.md"
    cat "$WORK/callgrind.md"
    [ -n "${OUT:-}" ] && { cp "$WORK/callgrind.md" "$OUT"; log "report written to $OUT"; }
    exit 0
fi

# On fresh poolers (one query each so far); then they are restarted for the workloads, so the
# memory the idle clients left behind does not count in the workloads' peak RSS.
start_poolers
if [ "$IDLE_CLIENTS" -gt 0 ] && [ "${#POOLER_PID[@]}" -gt 0 ]; then
    for t in "${ACTIVE[@]}"; do
        case $t in direct|relay-*) ;; *) idle_test "$t" ;; esac
    done
    stop_poolers
    start_poolers
fi

# Warm-up: the data into cache, the pools open.
log "warm-up (${WARMUP}s per target)"
for t in "${ACTIVE[@]}"; do
    bounded "$WORK/warmup-${t/+/-}.log" $((WARMUP + 60)) pgbench -n -S -j 2 -c "$CLIENTS" -T "$WARMUP" \
        -h 127.0.0.1 -p "${PORT[$t]}" -U bench bench || log "warm-up through $t failed"
done

NT=${#ACTIVE[@]}
for ((r = 1; r <= ROUNDS; r++)); do
    log "round $r/$ROUNDS"
    for w in $WORKLOADS; do
        for ((k = 0; k < NT; k++)); do
            t=${ACTIVE[$(((k + r - 1) % NT))]}
            runs_workload "$t" "$w" && run_one "$r" "$w" "$t"
        done
    done
done

# ---------------------------------------------------------------- report
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.4f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# med workload target column(4=tps 5=lat 7=cpu 8=hwm 12=user cpu): median over the successful runs, "-" if none
med() {
    awk -F'\t' -v w="$1" -v t="$2" -v c="$3" '$2 == w && $3 == t && $9 == "ok" && $c != "-" { print $c }' "$RESULTS" | median
}
range() { # workload target column -> "min–max" over the successful runs
    awk -F'\t' -v w="$1" -v t="$2" -v c="$3" '$2 == w && $3 == t && $9 == "ok" && $c != "-" {
        if (n++ == 0 || $c < lo) lo = $c; if (n == 1 || $c > hi) hi = $c }
        END { if (n) printf "%.0f–%.0f\n", lo, hi; else print "-" }' "$RESULTS"
}
nfail() { awk -F'\t' -v w="$1" -v t="$2" '$2 == w && $3 == t && $9 != "ok"' "$RESULTS" | wc -l; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f\n", a / b }'; }
fmt() { awk -v v="$1" -v f="$2" 'BEGIN { if (v == "-") print "-"; else printf f "\n", v }'; }

report() {
    local w t tps lat cpu ucpu hwm btps bcpu nf
    echo "pgbench -j 2 -T $DURATION, scale $SCALE, $ROUNDS round(s), median per cell; transaction mode, pool_size $POOL_SIZE, md5."
    awk -F'\t' '{ n++; if ($10 > f) f = $10; if ($11 > st) st = $11; if ($10 > m) d++ }
        END { printf "Other processes used at most %.1f%% of the cores during a kept run (%d of %d runs above %s%%); steal at most %.1f%%.\n", f, d, n, m, st }' \
        m="$DISTURBED_PCT" "$RESULTS"
    echo
    echo "Peak RSS: VmHWM of the pooler during the run (reset before each run to the RSS at that moment,"
    echo "which includes what earlier workloads left allocated)."
    echo
    echo "| workload | target | TPS | TPS range | TPS × PgBouncer | avg latency ms | pooler CPU s / 10k tx | of which user | CPU × PgBouncer | pooler peak RSS MB |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for w in $WORKLOADS; do
        btps=$(med "$w" pgbouncer 4); bcpu=$(med "$w" pgbouncer 7)
        for t in "${ACTIVE[@]}"; do
            runs_workload "$t" "$w" || continue
            tps=$(med "$w" "$t" 4); lat=$(med "$w" "$t" 5); cpu=$(med "$w" "$t" 7); hwm=$(med "$w" "$t" 8)
            ucpu=$(med "$w" "$t" 12)
            nf=$(nfail "$w" "$t")
            if [ "$nf" != 0 ]; then
                if [ "$tps" = - ]; then tps="FAIL ($nf/$ROUNDS)"; else tps="$(fmt "$tps" %.0f) ($nf/$ROUNDS failed)"; fi
            else
                tps=$(fmt "$tps" %.0f)
            fi
            printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$(label "$w")" "$t" "$tps" "$(range "$w" "$t" 4)" \
                "$( [ "$t" = pgbouncer ] || ratio "$(med "$w" "$t" 4)" "$btps" )" \
                "$(fmt "$lat" %.3f)" "$(fmt "$cpu" %.3f)" "$(fmt "$ucpu" %.3f)" \
                "$( [ "$t" = pgbouncer ] || [ "$t" = direct ] || ratio "$cpu" "$bcpu" )" \
                "$(awk -v v="$hwm" 'BEGIN { if (v == "-") print "-"; else printf "%.1f", v / 1024 }')"
        done
    done
    if [ "${#IDLE_KB[@]}" -gt 0 ]; then
        echo
        echo "Memory per idle client ($IDLE_CLIENTS idle md5 connections, VmRSS growth / clients):"
        echo
        echo "| target | KB per idle client |"
        echo "|---|---:|"
        for t in "${ACTIVE[@]}"; do
            [ -n "${IDLE_KB[$t]:-}" ] && printf '| %s | %s |\n' "$t" "${IDLE_KB[$t]}"
        done
    fi
    if [[ " ${ACTIVE[*]} " == *" pgcat+parser "* ]] && [[ " ${ACTIVE[*]} " == *" pgcat "* ]]; then
        echo
        echo "Parser cost (pgcat+parser TPS vs pgcat TPS, medians):"
        echo
        echo "| workload | pgcat | pgcat+parser | change |"
        echo "|---|---:|---:|---:|"
        for w in $WORKLOADS; do
            local a b
            a=$(med "$w" pgcat 4); b=$(med "$w" pgcat+parser 4)
            printf '| %s | %s | %s | %s |\n' "$(label "$w")" "$(fmt "$a" %.0f)" "$(fmt "$b" %.0f)" \
                "$(awk -v a="$a" -v b="$b" 'BEGIN { if (a == "-" || b == "-" || a == 0) print "-"; else printf "%+.1f%%", (b / a - 1) * 100 }')"
        done
    fi
    if [[ " ${ACTIVE[*]} " == *" pgbouncer "* ]] && [[ " ${ACTIVE[*]} " == *" pgcat "* ]]; then
        echo
        echo "Targets of issues 7 and 24 (pgcat against PgBouncer in this run):"
        echo
        echo "| target | goal | measured | result |"
        echo "|---|---|---:|---|"
        check() { # name goal-op goal value unit
            local name=$1 op=$2 goal=$3 v=$4
            if [ "$v" = - ] || [ -z "$v" ]; then printf '| %s | %s %s | - | not measured |\n' "$name" "$op" "$goal"; return; fi
            awk -v n="$name" -v op="$op" -v g="$goal" -v v="$v" 'BEGIN {
                ok = (op == "≥") ? (v >= g) : (v <= g)
                gap = (op == "≥") ? (g - v) : (v - g)
                printf "| %s | %s %s | %s | %s |\n", n, op, g, v, ok ? "met" : sprintf("missed by %.2f", gap) }'
        }
        check "pooler CPU per select tx (× PgBouncer)" "≤" 0.8 "$(ratio "$(med select pgcat 7)" "$(med select pgbouncer 7)")"
        check "select TPS (× PgBouncer)" "≥" 1.15 "$(ratio "$(med select pgcat 4)" "$(med select pgbouncer 4)")"
        check "extended TPS (× PgBouncer)" "≥" 1.15 "$(ratio "$(med extended pgcat 4)" "$(med extended pgbouncer 4)")"
        check "200-client TPS (× PgBouncer)" "≥" 1.15 "$(ratio "$(med select-200 pgcat 4)" "$(med select-200 pgbouncer 4)")"
        check "tpcb TPS (× PgBouncer)" "≥" 1.0 "$(ratio "$(med tpcb pgcat 4)" "$(med tpcb pgbouncer 4)")"
        check "connect-per-tx TPS (× PgBouncer)" "≥" 1.0 "$(ratio "$(med connect pgcat 4)" "$(med connect pgbouncer 4)")"
        check "memory per idle client (KB)" "≤" 1.0 "$(fmt "${IDLE_KB[pgcat]:--}" %.2f)"
        # Issue 24's time figures (the user's view of its counted targets).
        local w
        for w in select extended tpcb select-200 connect connect-scram; do
            case " $WORKLOADS " in *" $w "*) ;; *) continue ;; esac
            check "issue 24: pooler CPU per tx, $(label "$w") (× PgBouncer)" "≤" 1.0 \
                "$(ratio "$(med "$w" pgcat 7)" "$(med "$w" pgbouncer 7)")"
            check "issue 24: TPS, $(label "$w") (× PgBouncer)" "≥" 1.0 \
                "$(ratio "$(med "$w" pgcat 4)" "$(med "$w" pgbouncer 4)")"
        done
        if [[ " ${ACTIVE[*]} " == *" pgcat+parser "* ]]; then
            local worst=- a b d
            for w in $WORKLOADS; do
                a=$(med "$w" pgcat 4); b=$(med "$w" pgcat+parser 4)
                d=$(awk -v a="$a" -v b="$b" 'BEGIN { if (a == "-" || b == "-" || a == 0) print "-"; else printf "%.1f", (1 - b / a) * 100 }')
                [ "$d" = - ] && continue
                worst=$(awk -v x="$worst" -v d="$d" 'BEGIN { if (x == "-" || d > x) print d; else print x }')
            done
            check "parser on: TPS loss vs off, % (worst workload)" "≤" 3 "$worst"
        fi
    fi
    if [[ " ${ACTIVE[*]} " == *" pgbouncer "* ]] && [[ " ${ACTIVE[*]} " == *" relay-"* ]]; then
        echo
        echo "The floor: the reference relays, and pgcat beside them, against PgBouncer in this run"
        echo "(CPU per transaction × / TPS ×):"
        echo
        local cols=() r
        for t in pgcat relay-epoll relay-uring relay-tokio; do has_target "$t" && cols+=("$t"); done
        printf '| workload |%s\n' "$(printf ' %s |' "${cols[@]}")"
        printf '|---|%s\n' "$(printf -- '---:|%.0s' "${cols[@]}")"
        for w in $WORKLOADS; do
            runs_workload relay-epoll "$w" || continue
            printf '| %s |' "$(label "$w")"
            for r in "${cols[@]}"; do
                printf ' %s / %s |' "$(ratio "$(med "$w" "$r" 7)" "$(med "$w" pgbouncer 7)")" \
                    "$(ratio "$(med "$w" "$r" 4)" "$(med "$w" pgbouncer 4)")"
            done
            echo
        done
    fi
}

report_text=$(report)
echo "$report_text"
[ -n "${OUT:-}" ] && { echo "$report_text" >"$OUT"; cp "$RESULTS" "${OUT%.*}.tsv"; log "report written to $OUT"; }
exit 0
