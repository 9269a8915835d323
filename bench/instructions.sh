#!/usr/bin/env bash
# Instructions per request of the ingress and dispatcher hot paths, counted
# by valgrind's callgrind: repeatable for the same binary and inputs whatever
# else the machine is doing, so a regression shows up without timing noise.
#
# Runs `aigw ingress` and `aigw dispatcher` under callgrind (instrumentation off
# at start), `aigw projector` natively, a private nats-server, a fresh
# database and the mock. After a warm-up it counts, in each role:
#   1. N sequential non-streamed chat requests (collection on, then dumped);
#   2. an idle window as long as step 1 (the background: timers, NATS
#      heartbeats, pulls), which is subtracted;
# and prints instructions per request for each role, and the functions with
# the most instructions of their own (the profile) from step 1.
#
# Usage: bench/instructions.sh [--requests N] [--top K] [--save FILE] [--check FILE]
#   --requests N   requests counted (default 300)
#   --top K        functions listed per role (default 25)
#   --save FILE    write the per-request counts to FILE (a baseline)
#   --check FILE   exit 1 when a role's count exceeds FILE's by over 3 %
# Environment: BENCH_DIALECT (chat, the default; messages, responses or
# gemini: the same request in that dialect, translated), BENCH_PG_URL, AIGW_BIN, NATS_SERVER, BENCH_KEEP_LOGS as for
# bench/run.sh; AIGW_LOG (default: aigw's own, info).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=bench/stack.sh
source "$ROOT/bench/stack.sh"

REQUESTS=300
TOP=25
SAVE=""
CHECK=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --requests) REQUESTS="$2"; shift 2 ;;
        --top) TOP="$2"; shift 2 ;;
        --save) SAVE="$2"; shift 2 ;;
        --check) CHECK="$2"; shift 2 ;;
        -h | --help) sed -n '2,23p' "$0"; exit 0 ;;
        *) log "unknown argument $1"; exit 2 ;;
    esac
done
command -v valgrind >/dev/null || { log "valgrind is needed (apt-get install valgrind)"; exit 1; }

if [[ -z "${AIGW_BIN:-}" ]]; then
    log "building aigw and aigw-bench (release)"
    cargo build --release -q -p aigw -p aigw-bench
    AIGW_BIN="$ROOT/target/release/aigw"
else
    cargo build --release -q -p aigw-bench
fi
BENCH_BIN="$ROOT/target/release/aigw-bench"
log "commit $(commit_label), $AIGW_BIN, $(valgrind --version)"

stack_init instr
stack_nats 1
stack_mock "$BENCH_BIN"
PORT="$(free_port)"
GW="http://127.0.0.1:$PORT"
stack_env "127.0.0.1:$PORT"
# Valgrind runs one thread at a time and is ~50x slower: give the roles time.
export AIGW_ACK_WAIT=120s AIGW_REQUEST_TIMEOUT=120s AIGW_UPSTREAM_TIMEOUT=120s

declare -A ROLE_PID
under_callgrind() { # role
    valgrind --tool=callgrind --instr-atstart=no --dump-instr=no \
        --callgrind-out-file="$WORK/callgrind.$1.%p" \
        "$AIGW_BIN" "$1" >"$WORK/aigw-$1.log" 2>&1 &
    PIDS+=($!)
    ROLE_PID[$1]=$!
}
log "aigw ingress and dispatcher under callgrind, projector native (namespace $NS)"
under_callgrind ingress
AIGW_PROBE_LISTEN="127.0.0.1:$(free_port)" under_callgrind dispatcher
AIGW_PROBE_LISTEN="127.0.0.1:$(free_port)" "$AIGW_BIN" projector >"$WORK/aigw-projector.log" 2>&1 &
PIDS+=($!)
stack_wait_ready "$GW" "${ROLE_PID[ingress]}" "$WORK/aigw-ingress.log" 3000
stack_register "$GW"

send() { # count: sequential non-streamed chat requests on one connection; prints the wall seconds
    python3 - "$PORT" "$KEY" "$1" "${BENCH_DIALECT:-chat}" <<'PY'
import http.client, json, sys, time
port, key, n, dialect = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
system, user = "You are a helpful assistant.", "Say hello in one short sentence."
path, body = {
    "chat": ("/v1/chat/completions", {"model": "bench-model", "max_tokens": 32, "temperature": 0,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]}),
    "messages": ("/v1/messages", {"model": "bench-model", "max_tokens": 32, "temperature": 0,
        "system": system, "messages": [{"role": "user", "content": user}]}),
    "responses": ("/v1/responses", {"model": "bench-model", "max_output_tokens": 32, "temperature": 0,
        "instructions": system, "input": user, "store": False}),
    "gemini": ("/v1beta/models/bench-model:generateContent", {
        "systemInstruction": {"parts": [{"text": system}]},
        "contents": [{"role": "user", "parts": [{"text": user}]}],
        "generationConfig": {"maxOutputTokens": 32, "temperature": 0}}),
}[dialect]
body = json.dumps(body)
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
started = time.monotonic()
for i in range(n):
    conn.request("POST", path, body,
                 {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    r = conn.getresponse()
    answer = r.read()
    if r.status != 200:
        sys.exit(f"request {i}: HTTP {r.status}: {answer[:300]!r}")
print(f"{time.monotonic() - started:.1f}")
PY
}
control() { # on|off|dump: both roles
    local role
    for role in ingress dispatcher; do
        case "$1" in
            on) callgrind_control -i on "${ROLE_PID[$role]}" >/dev/null ;;
            off) callgrind_control -i off "${ROLE_PID[$role]}" >/dev/null ;;
            dump) callgrind_control -d "$2" "${ROLE_PID[$role]}" >/dev/null ;;
        esac
    done
}
total_ir() { # callgrind file: its total instruction count
    awk '/^totals:/ { print $2; exit }' "$1"
}
newest_dump() { # role
    ls -t "$WORK"/callgrind."$1".* | head -n 1
}

log "warm-up: 30 requests"
send 30 >/dev/null
log "counting $REQUESTS requests"
control on
wall="$(send "$REQUESTS")"
control off
control dump requests
sleep 2
declare -A LOAD IDLE
for role in ingress dispatcher; do
    cp "$(newest_dump "$role")" "$WORK/$role.requests.out"
    LOAD[$role]="$(total_ir "$WORK/$role.requests.out")"
done
log "counting an idle window of ${wall}s (the background)"
control on
sleep "$wall"
control off
control dump idle
sleep 2
for role in ingress dispatcher; do
    cp "$(newest_dump "$role")" "$WORK/$role.idle.out"
    IDLE[$role]="$(total_ir "$WORK/$role.idle.out")"
done

RESULT="$WORK/result.tsv"
: >"$RESULT"
echo
echo "Instructions per request ($REQUESTS sequential non-streamed ${BENCH_DIALECT:-chat} requests, ${wall}s under callgrind; commit $(commit_label)):"
for role in ingress dispatcher; do
    per=$(((LOAD[$role] - IDLE[$role]) / REQUESTS))
    printf '  %-11s %12s per request  (requests window %s, idle window %s)\n' "$role" "$per" "${LOAD[$role]}" "${IDLE[$role]}"
    printf '%s\t%s\n' "$role" "$per" >>"$RESULT"
done
for role in ingress dispatcher; do
    echo
    echo "== $role: the $TOP functions with the most instructions of their own (requests window)"
    callgrind_annotate --inclusive=no --threshold=100 "$WORK/$role.requests.out" 2>/dev/null \
        | awk 'listing && NF && !/^-+$/ { print } /file:function/ { listing = 1 }' \
        | sed 's#/root/.cargo/registry/src/[^/]*/##; s#/rustc/[0-9a-f]*/library/##; s# \[.*\]$##' \
        | head -n "$TOP" | cut -c1-160
done

if [[ -n "$SAVE" ]]; then
    cp "$RESULT" "$SAVE"
    log "saved to $SAVE"
fi
if [[ -n "$CHECK" ]]; then
    status=0
    while IFS=$'\t' read -r role base; do
        now="$(awk -v r="$role" '$1 == r { print $2 }' "$RESULT")"
        if [[ -n "$now" ]] && ((now * 100 > base * 103)); then
            log "$role: $now instructions per request, over 3 % above the baseline $base"
            status=1
        fi
    done <"$CHECK"
    exit "$status"
fi
