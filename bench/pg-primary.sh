#!/usr/bin/env bash
# What one PostgreSQL primary takes of aigw's write path: pgbench replays the
# statement that records one request (its three events, RequestAccepted,
# AttemptRecorded and RequestCompleted, with payloads of the size aigw writes,
# in one INSERT as runtime/src/store.rs does) into a fresh database with
# aigw's schema (migrations/*.sql), at 1, 8, 32 and 64 concurrent writers.
# Commits are durable (the server's own fsync and synchronous_commit, both
# printed); concurrent commits share WAL flushes (group commit).
#
#   bench/pg-primary.sh                     # against postgres://postgres@127.0.0.1:5432
#   BENCH_PG_HOST=db BENCH_PG_PORT=5432 BENCH_PG_USER=postgres BENCH_PG_SECONDS=20 bench/pg-primary.sh
#
# Prints the machine's idle CPU before the run, the commit, the server's
# version and settings, then requests/s and events/s per writer count. The
# database is dropped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

HOST=${BENCH_PG_HOST:-127.0.0.1}
PORT=${BENCH_PG_PORT:-5432}
PGUSER_=${BENCH_PG_USER:-postgres}
SECONDS_=${BENCH_PG_SECONDS:-10}
WRITERS=${BENCH_PG_WRITERS:-"1 8 32 64"}
DB="aigw_pgbench_$$"
PGBENCH=$(command -v pgbench || echo /usr/lib/postgresql/15/bin/pgbench)
PSQL=(psql -h "$HOST" -p "$PORT" -U "$PGUSER_" -v ON_ERROR_STOP=1 -Atq)
work=$(mktemp -d)
cleanup() {
  "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

idle=$(vmstat 1 4 | awk 'NR > 3 { s += $15; n++ } END { printf "%.0f", s / n }')
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(nproc) cores, ${idle}% CPU idle before the run"
"${PSQL[@]}" -d postgres -c "CREATE DATABASE \"$DB\""
for m in migrations/*.sql; do
  "${PSQL[@]}" -d "$DB" -1 -f "$m" >/dev/null
done
echo "server: $("${PSQL[@]}" -d "$DB" -c 'SHOW server_version'), fsync=$("${PSQL[@]}" -d "$DB" -c 'SHOW fsync'), synchronous_commit=$("${PSQL[@]}" -d "$DB" -c 'SHOW synchronous_commit'), commit_delay=$("${PSQL[@]}" -d "$DB" -c 'SHOW commit_delay')"

# One request's events, as aigw stores them (sizes from a recorded request:
# 232, 203 and 318 bytes of payload, 77 of metadata).
cat >"$work/request.sql" <<'SQL'
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
SELECT 'request', r.id, v.s, v.t, '1', v.p::json,
       json_build_object('actor', 'dispatcher', 'request_id', r.id)
FROM (SELECT gen_random_uuid()::text AS id) r,
     (VALUES
       (1, 'RequestAccepted', '{"RequestAccepted": {"at": "2026-12-04T17:02:25.478807179Z", "model": "m", "route": {"order": ["p/m"], "reason": "in the configured order", "strategy": "priority"}, "key_id": "01a24201-d294-7510-9373-ce11d28aff11", "stream": false}}'),
       (2, 'AttemptRecorded', '{"AttemptRecorded": {"error": null, "model": "m", "status": 200, "provider": "p", "latency_ms": 23, "started_at": "2026-12-04T17:02:25.763654425Z", "provider_id": "01a24201-d280-7285-94d7-6adf33208676"}}'),
       (3, 'RequestCompleted', '{"RequestCompleted": {"at": "2026-12-04T17:02:25.787278490Z", "model": "m", "usage": {"prompt_tokens": 3, "completion_tokens": 2}, "key_id": "01a24201-d294-7510-9373-ce11d28aff11", "provider": "p", "latency_ms": 23, "cost_micros": null, "provider_id": "01a24201-d280-7285-94d7-6adf33208676", "usage_estimated": false}}')
     ) AS v(s, t, p);
SQL

printf '%8s %12s %12s %10s\n' writers requests/s events/s "avg ms"
for c in $WRITERS; do
  out=$("$PGBENCH" -h "$HOST" -p "$PORT" -U "$PGUSER_" -n -M prepared -f "$work/request.sql" \
    -c "$c" -j "$(( c < 2 ? 1 : 2 ))" -T "$SECONDS_" "$DB" 2>&1)
  tps=$(awk '/^tps = / { printf "%.0f", $3 }' <<<"$out")
  lat=$(awk '/^latency average = / { print $4 }' <<<"$out")
  [ -n "$tps" ] || { echo "$out" >&2; exit 1; }
  printf '%8s %12s %12s %10s\n' "$c" "$tps" "$(( tps * 3 ))" "${lat:-?}"
done
rows=$("${PSQL[@]}" -d "$DB" -c "SELECT count(*) FROM events")
echo "$rows events stored"
