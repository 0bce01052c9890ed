#!/usr/bin/env bash
# Builds the cargo-fuzz targets and runs each for SECONDS (default 60):
#
#   bash fuzz/run.sh [SECONDS]
#
# Seeds come from fixtures/fuzz/<target>/ and are copied into a scratch corpus under
# target/fuzz/run/ (fixtures are never modified). Prints each target's final executions,
# executions per second and coverage (libFuzzer's cov/ft), and exits non-zero if any
# target crashed, printing the crashing input's path.
#
# Environment: FUZZ_TARGETS="route" runs a subset; FUZZ_KEEP_CORPUS=1 keeps the scratch
# corpus of an earlier run instead of starting from the seeds again; FUZZ_NO_BUILD=1 runs
# the binaries already built (e.g. while the tree is mid-edit and does not compile).
#
# Builds use a separate target dir (target/fuzz) and a stable toolchain with
# RUSTC_BOOTSTRAP=1 (cargo-fuzz needs nightly flags). Every cargo invocation takes
# /tmp/cargo.lock so builds never run concurrently; fuzzers run at nice 19.
set -euo pipefail

SECONDS_PER_TARGET="${1:-60}"
if ! [[ "$SECONDS_PER_TARGET" =~ ^[0-9]+$ ]] || [ "$SECONDS_PER_TARGET" -lt 1 ]; then
    echo "usage: $0 [SECONDS]" >&2
    exit 2
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ_DIR="$ROOT/fuzz"
TARGET_DIR="$ROOT/target/fuzz"
SCRATCH="$TARGET_DIR/run"
LOCK=/tmp/cargo.lock
# Waits are bounded: a build waits at most this long for the lock, then this long to build.
LOCK_WAIT=1800
BUILD_TIMEOUT=3600
TARGETS="${FUZZ_TARGETS:-frontend_framing route}"

export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="$TARGET_DIR"

cargo_locked() {
    timeout -k 30 "$BUILD_TIMEOUT" flock -w "$LOCK_WAIT" "$LOCK" nice -n 19 cargo "$@"
}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo_locked install cargo-fuzz --locked
fi

if [ "${FUZZ_NO_BUILD:-0}" = 1 ]; then
    echo "== FUZZ_NO_BUILD=1: using the fuzz binaries already in $TARGET_DIR"
else
    echo "== building fuzz targets ($TARGET_DIR)"
    (cd "$ROOT" && cargo_locked fuzz build --fuzz-dir "$FUZZ_DIR" --target-dir "$TARGET_DIR")
fi

HOST="$(rustc -vV | sed -n 's/^host: //p')"
BIN_DIR="$TARGET_DIR/$HOST/release"

failed=0
summary=()
for target in $TARGETS; do
    bin="$BIN_DIR/$target"
    seeds="$ROOT/fixtures/fuzz/$target"
    corpus="$SCRATCH/corpus/$target"
    artifacts="$SCRATCH/artifacts/$target"
    log="$SCRATCH/$target.log"
    if [ ! -x "$bin" ]; then
        echo "error: no fuzz binary $bin" >&2
        exit 1
    fi
    if [ "${FUZZ_KEEP_CORPUS:-0}" != 1 ]; then
        rm -rf "$corpus"
    fi
    rm -rf "$artifacts"
    mkdir -p "$corpus" "$artifacts"
    if [ -d "$seeds" ]; then
        cp -n "$seeds"/* "$corpus"/ 2>/dev/null || true
    fi
    args=(
        -max_total_time="$SECONDS_PER_TARGET"
        -rss_limit_mb=2048
        -timeout=30
        -print_final_stats=1
        -artifact_prefix="$artifacts/"
    )
    if [ "$target" = frontend_framing ]; then
        args+=(-max_len=65536)
    fi
    if [ -f "$FUZZ_DIR/dict/$target.dict" ]; then
        args+=(-dict="$FUZZ_DIR/dict/$target.dict")
    fi
    echo "== $target: ${SECONDS_PER_TARGET}s, corpus $corpus, log $log"
    status=0
    # libFuzzer stops itself after max_total_time; the outer timeout only guards a hang.
    timeout -k 30 "$((SECONDS_PER_TARGET + 300))" \
        nice -n 19 "$bin" "${args[@]}" "$corpus" >"$log" 2>&1 || status=$?

    # The last status line ("#N DONE cov: C ft: F corp: ...") and the final stats.
    last="$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)"
    cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")"
    ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")"
    corp="$(sed -n 's/.* corp: \([0-9]*\/[0-9A-Za-z]*\).*/\1/p' <<<"$last")"
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)"
    rss="$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)"
    line="$target: execs=${execs:-?} exec/s=${rate:-?} cov=${cov:-?} ft=${ft:-?} corp=${corp:-?} peak_rss_mb=${rss:-?} exit=$status"
    echo "$line"
    summary+=("$line")

    crash="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)"
    if [ "$status" -ne 0 ] || [ -n "$crash" ]; then
        failed=1
        echo "!! $target FAILED (exit $status); last lines of $log:" >&2
        grep -E 'panicked|ERROR: libFuzzer|ERROR: AddressSanitizer|SUMMARY|deadly signal|timeout|out-of-memory' "$log" | head -n 20 >&2 || true
        if [ -n "$crash" ]; then
            echo "!! crashing input: $crash" >&2
            echo "!! reproduce: $bin $crash" >&2
            echo "!! minimise:  $bin -minimize_crash=1 -max_total_time=120 -exact_artifact_path=$crash.min $crash" >&2
        fi
    fi
done

echo "== summary (${SECONDS_PER_TARGET}s per target)"
printf '%s\n' "${summary[@]}"
exit "$failed"
