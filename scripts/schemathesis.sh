#!/usr/bin/env bash
# Fuzzes a running strongroom with schemathesis (all checks) against the
# OpenAPI document it serves. Starts its own server on a temp data dir.
# Usage: scripts/schemathesis.sh [path/to/strongroom]   (needs `schemathesis` on PATH)
set -euo pipefail
bin=${1:-target/debug/strongroom}
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
# The fuzzer sends its invalid credentials by the thousand from one address,
# which the failed-authentication limit answers with 429 after the first 20
# (as documented); it is off here so each gets the 401 the check expects.
# tests/api/audit.rs tests the limit.
STRONGROOM_AUTH_FAILURE_LIMIT=0 STRONGROOM_DATA_DIR="$work/data" "$bin" serve --listen 127.0.0.1:0 2>"$work/log" &
pid=$!
for _ in $(seq 1 100); do
  addr=$(grep -o '"addr":"[^"]*"' "$work/log" | head -1 | cut -d'"' -f4 || true)
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "${addr:-}" ] || { echo "strongroom did not start"; cat "$work/log"; exit 1; }
key=$(grep '^sr_' "$work/log")
# /watch is a stream that does not end while the server runs, so a fuzzer
# waiting for its body would only time out; tests/api/watch.rs tests it.
schemathesis --config-file "$(dirname "$0")/schemathesis.toml" run "http://$addr/openapi.json" \
  --checks all \
  --exclude-path /watch \
  --header "X-Api-Key: $key" \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-100}" \
  --seed "${SCHEMATHESIS_SEED:-1}" \
  --suppress-health-check all
