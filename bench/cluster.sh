#!/usr/bin/env bash
# One NATS server against a 3-node JetStream cluster (every stream, consumer
# and bucket at 3 replicas), measured in one invocation on this machine:
# bench/run.sh twice, back to back, with the same load, then both side by
# side (latency at a fixed rate, closed-loop throughput, and the CPU per
# gateway request of aigw, NATS and PostgreSQL together).
#
# Usage: bench/cluster.sh    (the environment of bench/run.sh applies to both)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$(mktemp -d "${TMPDIR:-/tmp}/aigw-cluster-bench.XXXXXX")"
trap 'rm -rf "$OUT"' EXIT
# shellcheck source=bench/stack.sh
source "$ROOT/bench/stack.sh"


echo "machine idle before the runs: $(idle_cpu)% (commit $(git -C "$ROOT" rev-parse --short HEAD))"
for nodes in 1 3; do
    echo "==> NATS with $nodes node(s)"
    BENCH_NATS_NODES=$nodes BENCH_JSON="$OUT/n$nodes.json" "$ROOT/bench/run.sh" "$@" | tee "$OUT/n$nodes.txt"
done

python3 - "$OUT" <<'PY'
import json, re, sys
out = sys.argv[1]
rows = []
for nodes in (1, 3):
    s = json.load(open(f"{out}/n{nodes}.json"))
    text = open(f"{out}/n{nodes}.txt").read()
    def cpu(label):
        # The first figure after the label (a line may go on with peak RSS).
        found = re.findall(rf"^\s+{re.escape(label)}[^\d\n]*?(?:x\d+)?\s+([\d.]+)", text, re.M)
        return sum(map(float, found)) if found else float("nan")
    used = cpu("aigw ") + cpu("nats-server") + cpu("postgres (aigw's backends)")
    sent = s["gateway"]["sent"] + (s["gateway_throughput"] or {}).get("sent", 0)
    g, t = s["gateway"], s["gateway_throughput"] or {}
    rows.append((f"{nodes} node" + ("s, R3" if nodes > 1 else ", R1"),
                 g["latency_ms"]["p50"], g["latency_ms"]["p99"],
                 s["overhead_p50_ms"], s["overhead_p99_ms"],
                 t.get("throughput_rps", float("nan")),
                 1000 * used / sent if sent else float("nan"),
                 g["errors"] + t.get("errors", 0)))
print()
print("| NATS | p50 ms | p99 ms | overhead p50 / p99 ms | throughput req/s | CPU ms per request (aigw + NATS + PostgreSQL) | errors |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r[0]} | {r[1]:.2f} | {r[2]:.2f} | +{r[3]:.2f} / +{r[4]:.2f} | {r[5]:.0f} | {r[6]:.2f} | {r[7]} |")
PY
