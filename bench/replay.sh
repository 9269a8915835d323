#!/usr/bin/env bash
# Replay benchmark: fills a fresh database with EVENTS synthetic request
# events (accepted, attempt, completed per request; 100 keys, 5 models, spread
# over November 2026), then times `aigw projector rebuild` (every view from
# the start of history) and `aigw audit` over the month.
#
#   bench/replay.sh [EVENTS]        (default 1000000; target: >= 50,000 events/s)
#
# Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust) and a release
# build (cargo build --release --bin aigw).
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS=${1:-1000000}
REQUESTS=$(( (EVENTS + 2) / 3 ))
DB=${AIGW_BENCH_DB:-aigw_bench_replay}
export AIGW_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
export AIGW_LOG=${AIGW_LOG:-warn}
AIGW=${AIGW_BIN:-target/release/aigw}
PSQL=(psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -qAt)

"${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB"
"$AIGW" projector rebuild 2>/dev/null   # creates the database and schema

echo "inserting $((REQUESTS * 3)) events ($REQUESTS requests)..." >&2
"${PSQL[@]}" -d "$DB" <<SQL
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
SELECT 'request', r.id::text, e.seq, e.kind, '1.0',
  CASE e.seq
    WHEN 1 THEN json_build_object('RequestAccepted', json_build_object(
      'key_id', r.key_id, 'model', r.model, 'stream', false, 'at', r.at))
    WHEN 2 THEN json_build_object('AttemptRecorded', json_build_object(
      'provider_id', '0193a1f0-0000-7000-8000-000000000002', 'provider', 'bench',
      'model', r.model, 'status', 200, 'latency_ms', r.i % 500, 'error', null,
      'started_at', r.at))
    ELSE json_build_object('RequestCompleted', json_build_object(
      'key_id', r.key_id, 'provider_id', '0193a1f0-0000-7000-8000-000000000002',
      'provider', 'bench', 'model', r.model,
      'usage', json_build_object('prompt_tokens', 10 + r.i % 100, 'completion_tokens', 20),
      'usage_estimated', false, 'cost_micros', r.i % 1000, 'latency_ms', r.i % 500,
      'at', r.at))
  END,
  '{"actor": "bench"}'::json
FROM (SELECT i, gen_random_uuid() AS id,
             ('00000000-0000-7000-8000-' || lpad((i % 100)::text, 12, '0'))::uuid AS key_id,
             'model-' || (i % 5) AS model,
             to_char(timestamp '2026-11-01' + (i % 2592000) * interval '1 second',
                     'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS at
      FROM generate_series(1, $REQUESTS) i) r
CROSS JOIN (VALUES (1, 'RequestAccepted'), (2, 'AttemptRecorded'), (3, 'RequestCompleted')) e(seq, kind)
ORDER BY r.i, e.seq;
ANALYZE events;
SQL

echo "== aigw projector rebuild" >&2
AIGW_PROJECTOR_BATCH=20000 "$AIGW" projector rebuild
echo "== aigw audit --from 2026-11-01 --to 2026-11-30" >&2
start=$(date +%s.%N)
"$AIGW" audit --from 2026-11-01 --to 2026-11-30
end=$(date +%s.%N)
python3 -c "import sys; s=float(sys.argv[2])-float(sys.argv[1]); n=int(sys.argv[3]); print(f'audit: {n} events in {s:.1f}s ({n/s:.0f} events/s)')" "$start" "$end" "$((REQUESTS * 3))" >&2
