#!/usr/bin/env bash
# aigw benchmark, self-contained: builds aigw and aigw-bench, starts a private
# NATS server, a fresh PostgreSQL database, the mock upstream and aigw (one
# `aigw all`, or the three roles as separate processes), optionally a peer
# gateway in front of the same mock, then measures the mock directly and
# through each gateway in one interleaved run (latency at a fixed rate, then
# the highest throughput), checks that every request sent to aigw was
# recorded as events, and prints the CPU each process used and its peak RSS.
# Everything is stopped (and the database dropped) on exit.
#
# Usage: bench/run.sh [extra `aigw-bench compare` flags, e.g. --stream --enforce]
#
# Environment:
#   BENCH_PG_URL      PostgreSQL server (default postgres://postgres@127.0.0.1:5432)
#   BENCH_PG_PARAMS   query string for aigw's database URL, e.g. sslmode=disable
#   BENCH_RATE        rate of the latency comparison (default 200 req/s)
#   BENCH_DURATION    measured time of each latency run (default 15s)
#   BENCH_CONCURRENCY workers of the throughput run (default 64)
#   BENCH_TP_DURATION measured time of the throughput run (default 15s)
#   BENCH_ROLES       all (default): one `aigw all`; split: `aigw ingress`,
#                     `aigw dispatcher` and `aigw projector`, each measured
#   BENCH_PEER        portkey: also measure the Portkey gateway
#                     (bench/peers/portkey, npm @portkey-ai/gateway) in the
#                     same interleaved run
#   AIGW_LOG          aigw's log filter (default: aigw's own default, info,
#                     with its per-request access line)
#   AIGW_BIN          use this aigw binary instead of building target/release/aigw
#   NATS_SERVER       use this nats-server binary
#   BENCH_NATS_NODES  1 (default): one NATS server; 3: a 3-node JetStream
#                     cluster on loopback with every stream, consumer and
#                     bucket at 3 replicas (AIGW_NATS_REPLICAS=3)
#   BENCH_KEEP_LOGS=1 keep the work directory (logs) after the run
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=bench/stack.sh
source "$ROOT/bench/stack.sh"

RATE="${BENCH_RATE:-200}"
DURATION="${BENCH_DURATION:-15s}"
CONCURRENCY="${BENCH_CONCURRENCY:-64}"
TP_DURATION="${BENCH_TP_DURATION:-15s}"
ROLES="${BENCH_ROLES:-all}"
PEER="${BENCH_PEER:-}"
case "$ROLES" in all | split) ;; *) log "BENCH_ROLES must be all or split"; exit 2 ;; esac
case "$PEER" in "" | portkey) ;; *) log "BENCH_PEER must be portkey (or unset)"; exit 2 ;; esac

# ---- build ---------------------------------------------------------------
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
log "commit $(commit_label), machine idle ${IDLE}% before the run, AIGW_LOG=${AIGW_LOG:-<default>}, roles: $ROLES${PEER:+, peer: $PEER}"

stack_init bench
stack_nats "${BENCH_NATS_NODES:-1}"
stack_mock "$BENCH_BIN"

# ---- aigw ------------------------------------------------------------------
AIGW_PORT="$(free_port)"
GW="http://127.0.0.1:$AIGW_PORT"
stack_env "127.0.0.1:$AIGW_PORT"
declare -a AIGW_LABELS AIGW_PIDS
start_role() { # label, aigw arguments...
    local label="$1"
    shift
    "$AIGW_BIN" "$@" >"$WORK/aigw-$label.log" 2>&1 &
    PIDS+=($!)
    AIGW_PIDS+=($!)
    AIGW_LABELS+=("$label")
}
log "aigw ($ROLES) on $GW (database $DB, namespace $NS)"
if [[ "$ROLES" == all ]]; then
    start_role all all
else
    # The dispatcher's and projector's probes need ports of their own.
    start_role ingress ingress
    AIGW_PROBE_LISTEN="127.0.0.1:$(free_port)" start_role dispatcher dispatcher
    AIGW_PROBE_LISTEN="127.0.0.1:$(free_port)" start_role projector projector
fi
stack_wait_ready "$GW" "${AIGW_PIDS[0]}" "$WORK/aigw-${AIGW_LABELS[0]}.log"
stack_register "$GW"

# ---- the peer --------------------------------------------------------------
PEER_ARGS=()
PEER_PID=""
if [[ "$PEER" == portkey ]]; then
    PEER_PORT="$(free_port)"
    log "Portkey gateway on port $PEER_PORT"
    "$ROOT/bench/peers/portkey/start.sh" "$PEER_PORT" >"$WORK/portkey.log" 2>&1 &
    PIDS+=($!)
    PEER_PID=$!
    wait_port "$PEER_PORT" portkey "$PEER_PID"
    PEER_ARGS=(--peer-url "http://127.0.0.1:$PEER_PORT/v1" --peer-label portkey
        --peer-header "x-portkey-provider: openai"
        --peer-header "x-portkey-custom-host: http://127.0.0.1:$MOCK_PORT/v1")
fi

# ---- CPU and memory of each process ----------------------------------------
TICKS="$(getconf CLK_TCK)"
pg_backends() {
    psql -Atq "$PG_URL/postgres" -c "SELECT pid FROM pg_stat_activity WHERE datname = '$DB'" 2>/dev/null || true
}
pg_ticks() {
    local sum=0 pid
    for pid in $(pg_backends); do sum=$((sum + $(cpu_ticks "$pid"))); done
    echo "$sum"
}
nats_ticks() { # every NATS node together
    local sum=0 pid
    for pid in "${NATS_PIDS[@]}"; do sum=$((sum + $(cpu_ticks "$pid"))); done
    echo "$sum"
}
tree_ticks() { # a process and its children (the peer runs under a shell)
    local sum=0 pid
    for pid in "$1" $(pgrep -P "$1" 2>/dev/null); do sum=$((sum + $(cpu_ticks "$pid"))); done
    echo "$sum"
}
peak_rss_mib() { # VmHWM of a process, MiB
    awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo "?"
}
machine_busy() { # busy and total jiffies of the whole machine
    awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}
declare -A CPU0
snapshot_cpu() {
    read -r CPU0[busy] CPU0[total] < <(machine_busy)
    local i
    for i in "${!AIGW_PIDS[@]}"; do CPU0[aigw$i]="$(cpu_ticks "${AIGW_PIDS[i]}")"; done
    CPU0[nats]="$(nats_ticks)"
    CPU0[mock]="$(cpu_ticks "$MOCK_PID")"
    CPU0[pg]="$(pg_ticks)"
    [[ -n "$PEER_PID" ]] && CPU0[peer]="$(tree_ticks "$PEER_PID")"
    return 0
}
secs() { awk -v t="$1" -v hz="$TICKS" 'BEGIN { printf "%6.1f", t / hz }'; }
CPU_TSV="$WORK/cpu.tsv" # process, CPU seconds, peak RSS MiB: for the per-request figures
report_cpu() { # wall seconds, load generator CPU seconds
    printf '\nCPU seconds used during the %ss of load (2 cores = %ss available), peak RSS:\n' "$1" "$(($1 * 2))"
    local i used
    : >"$CPU_TSV"
    for i in "${!AIGW_PIDS[@]}"; do
        used="$(secs $(($(cpu_ticks "${AIGW_PIDS[i]}") - ${CPU0[aigw$i]})))"
        printf '  %-30s%s   peak RSS %s MiB\n' "aigw ${AIGW_LABELS[i]}" "$used" "$(peak_rss_mib "${AIGW_PIDS[i]}")"
        printf 'aigw %s\t%s\t%s\n' "${AIGW_LABELS[i]}" "$used" "$(peak_rss_mib "${AIGW_PIDS[i]}")" >>"$CPU_TSV"
    done
    used="$(secs $(($(nats_ticks) - ${CPU0[nats]})))"
    printf '  %-30s%s\n' "nats-server x${BENCH_NATS_NODES:-1}" "$used"
    printf 'nats\t%s\t\n' "$used" >>"$CPU_TSV"
    used="$(secs $(($(pg_ticks) - ${CPU0[pg]})))"
    printf '  %-30s%s\n' "postgres (aigw's backends)" "$used"
    printf 'postgres\t%s\t\n' "$used" >>"$CPU_TSV"
    if [[ -n "$PEER_PID" ]]; then
        printf '  %-30s%s\n' "$PEER (node)" "$(secs $(($(tree_ticks "$PEER_PID") - ${CPU0[peer]})))"
    fi
    printf '  %-30s%s\n' "mock upstream" "$(secs $(($(cpu_ticks "$MOCK_PID") - ${CPU0[mock]})))"
    printf '  %-30s%s\n' "load generator (aigw-bench)" "$2"
    local busy total
    read -r busy total < <(machine_busy)
    printf '  %-30s%s of %s (the rest: other tenants, postgres background work)\n' \
        "whole machine" "$(secs $((busy - ${CPU0[busy]})))" "$(secs $((total - ${CPU0[total]})))"
}

log "running the comparison"
snapshot_cpu
started=$SECONDS
BENCH_CPU="$WORK/bench.cpu"
TIMER=()
if [[ -x /usr/bin/time ]]; then TIMER=(/usr/bin/time -f '%U %S' -o "$BENCH_CPU"); fi
AIGW_BENCH_KEY="$KEY" AIGW_BENCH_DATABASE_URL="$DB_URL" \
    "${TIMER[@]}" "$BENCH_BIN" compare \
    --direct-url "http://127.0.0.1:$MOCK_PORT/v1" \
    --gateway-url "$GW/v1" \
    --model bench-model \
    --rate "$RATE" --duration "$DURATION" \
    --concurrency "$CONCURRENCY" --throughput-duration "$TP_DURATION" \
    --json "${BENCH_JSON:-$WORK/summary.json}" \
    "${PEER_ARGS[@]}" "$@"
report_cpu "$((SECONDS - started))" "$(awk '{ printf "%6.1f", $1 + $2 }' "$BENCH_CPU" 2>/dev/null || echo '     ?')"
# CPU per request through aigw: every aigw process, NATS and aigw's
# PostgreSQL backends together, over every request sent to aigw in the run.
python3 - "${BENCH_JSON:-$WORK/summary.json}" "$CPU_TSV" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[2]) if line.strip()]
sent = s["gateway"]["sent"] + (s.get("gateway_throughput") or {}).get("sent", 0)
parts = [(name, float(cpu)) for name, cpu, _ in rows]
total = sum(c for _, c in parts)
per = max(sent, 1)
print(f"CPU per request through aigw ({sent} requests): {1000 * total / per:.2f} ms = "
      + " + ".join(f"{name} {1000 * c / per:.2f}" for name, c in parts))
PY
echo "  (commit $(commit_label), machine idle ${IDLE}% before the run)"

for f in "$WORK"/aigw-*.log; do
    if grep -qE 'panic|ERROR' "$f"; then
        log "aigw logged errors during the run ($(basename "$f"), first lines):"
        grep -E 'panic|ERROR' "$f" | head -n 10 >&2
    fi
done
