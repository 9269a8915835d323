#!/usr/bin/env bash
# Starts the Portkey AI gateway (npm @portkey-ai/gateway, pinned in
# package.json beside this script) on 127.0.0.1:$1, headless, installing it
# on first use. bench/run.sh runs it with BENCH_PEER=portkey and points it at
# the mock with Portkey's own headers (x-portkey-provider: openai,
# x-portkey-custom-host).
#
# Portkey's server takes no listen address: it listens on every interface
# of this machine, on PORT, for the length of the run.
#
# Usage: bench/peers/portkey/start.sh PORT
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
if [[ ! -d node_modules/@portkey-ai/gateway ]]; then
    echo "[portkey] installing @portkey-ai/gateway (npm ci)" >&2
    npm ci --no-audit --no-fund --loglevel=error >&2
fi
# NODE_ENV=production: no interactive console UI.
NODE_ENV=production exec node node_modules/@portkey-ai/gateway/build/start-server.js --port="$1" --headless
