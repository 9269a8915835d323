#!/usr/bin/env bash
# What translating between dialects costs (issue #16: at most 100 µs per
# request at p99 beyond chat completions at 200 req/s): builds aigw and
# aigw-bench, times the translation work of one request per dialect in
# process, then starts a private stack (NATS, a fresh PostgreSQL database,
# the OpenAI-compatible mock, `aigw all`) and sends chat completions,
# Anthropic Messages, Responses and Gemini generateContent bodies through
# aigw at the same rate, alternating in rounds (`aigw-bench dialects`).
# Everything is stopped (and the database dropped) on exit.
#
# Usage: bench/dialects.sh [extra `aigw-bench dialects` flags, e.g. --enforce]
#
# Environment: BENCH_RATE (200), BENCH_DURATION (30s per dialect, in 8
# rounds that each start with the next dialect),
# BENCH_PG_URL, AIGW_LOG (aigw's default level), AIGW_BIN, NATS_SERVER,
# BENCH_KEEP_LOGS=1, BENCH_JSON (where the JSON summary goes).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=bench/stack.sh
source "$ROOT/bench/stack.sh"

RATE="${BENCH_RATE:-200}"
DURATION="${BENCH_DURATION:-30s}"

if [[ -n "${AIGW_BIN:-}" ]]; then
    log "building aigw-bench (aigw from AIGW_BIN=$AIGW_BIN)"
    cargo build --release -q -p aigw-bench
else
    log "building aigw and aigw-bench (release)"
    cargo build --release -q -p aigw -p aigw-bench
    AIGW_BIN="$ROOT/target/release/aigw"
fi
BENCH_BIN="$ROOT/target/release/aigw-bench"

IDLE="$(idle_cpu)"
log "commit $(commit_label), machine idle ${IDLE}% before the run, AIGW_LOG=${AIGW_LOG:-<default>}"

stack_init dialects
stack_nats 1
stack_mock "$BENCH_BIN"
AIGW_PORT="$(free_port)"
GW="http://127.0.0.1:$AIGW_PORT"
stack_env "127.0.0.1:$AIGW_PORT"
log "aigw all on $GW (database $DB, namespace $NS)"
"$AIGW_BIN" all >"$WORK/aigw-all.log" 2>&1 &
PIDS+=($!)
stack_wait_ready "$GW" "${PIDS[-1]}" "$WORK/aigw-all.log"
stack_register "$GW"

AIGW_BENCH_KEY="$KEY" "$BENCH_BIN" dialects --url "$GW" --model bench-model \
    --rate "$RATE" --duration "$DURATION" \
    --json "${BENCH_JSON:-$WORK/dialects.json}" "$@"
echo "  (commit $(commit_label), machine idle ${IDLE}% before the run)"
if grep -qE 'panic|ERROR' "$WORK/aigw-all.log"; then
    log "aigw logged errors during the run (first lines):"
    grep -E 'panic|ERROR' "$WORK/aigw-all.log" | head -n 10 >&2
fi
