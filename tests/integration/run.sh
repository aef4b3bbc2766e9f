#!/bin/bash
# Integration tests against the real binaries of one build directory:
#   1. the gRPC runtime in-process, through the generated C stubs, and the
#      REST bridge in-process, over HTTP;
#   2. the generated C stubs against a live analyticsd, and the client
#      library (libanalytics), its examples and analyticsctl against the same
#      server; then the installed library built into consumer programs;
#   3. the Python grpcio suite (an independent gRPC implementation), which
#      starts its own servers.
# Usage: tests/integration/run.sh BUILD_DIR
set -euo pipefail
BUILD=$(cd "${1:?usage: run.sh BUILD_DIR}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
PYTHON=/usr/bin/python3
BIN=$BUILD/server/analyticsd
# Features whose RPCs are implemented no longer answer UNIMPLEMENTED (every suite below).
export ANA_IMPLEMENTED_FEATURES="events,metrics,API keys,channels,alerts,reports,audit records,field encryption"
# Methods implemented ahead of the rest of their feature ("real-time streams":
# StreamAnalytics and StreamMetric both work).
export ANA_IMPLEMENTED_METHODS=/analytics.v1.RealtimeService/StreamAnalytics,/analytics.v1.RealtimeService/StreamMetric,/analytics.v1.RealtimeService/StreamAlerts

echo "--- runtime in-process (C stubs)"
"$BUILD/tests/integration/test_rpc_runtime"

if [ -x "$BUILD/tests/integration/test_restbridge" ]; then
  echo "--- REST + WebSocket bridge in-process (libcurl)"
  "$BUILD/tests/integration/test_restbridge"
fi

echo "--- generated C stubs against a live analyticsd"
DATA=$(mktemp -d)
LOG=$DATA/analyticsd.log
PORT=$($PYTHON -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
HTTP_PORT=$($PYTHON -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# Private networks allowed: test_client_lib's webhook receiver is on loopback.
GRPC_PORT=$PORT PORT=$HTTP_PORT DATA_DIR=$DATA LOG_LEVEL=debug NOTIFY_ALLOW_PRIVATE_NETWORKS=true \
  "$BIN" 2>"$LOG" &
SERVER=$!
stop_server() {
  kill -TERM "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
}
trap 'stop_server; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do
  grep -q '"analyticsd is serving"' "$LOG" && break
  kill -0 "$SERVER" 2>/dev/null || { cat "$LOG"; exit 1; }
  sleep 0.1
done
if ! "$BUILD/tests/integration/test_client_stubs" "127.0.0.1:$PORT"; then
  tail -n 30 "$LOG"
  exit 1
fi

echo "--- client library (libanalytics), its examples and analyticsctl against the same server"
CLIENT_OK=1
timeout 120 "$BUILD/tests/integration/test_client_lib" "127.0.0.1:$PORT" || CLIENT_OK=0
# The examples exit 0 only when the call worked; every feature they use is
# implemented, so anything else fails (test_analyticsctl.sh checks the errors).
# The spec's "Create Alert" example watches a metric named error_rate: make it first.
"$BUILD/client/cli/analyticsctl" --target "127.0.0.1:$PORT" -o json metrics create \
  --name error_rate --formula '(api_error / api_request) * 100' >/dev/null || CLIENT_OK=0
for ex in track_event create_metric generate_report create_alert; do
  echo "\$ $ex 127.0.0.1:$PORT"
  rc=0
  timeout 60 "$BUILD/client/examples/$ex" "127.0.0.1:$PORT" 2>"$DATA/$ex.err" || rc=$?
  cat "$DATA/$ex.err"
  if [ $rc -ne 0 ]; then
    echo "$ex failed (exit $rc)"
    CLIENT_OK=0
  fi
done
echo "--- analyticsctl against the same server"
"$HERE/test_analyticsctl.sh" "$BUILD/client/cli/analyticsctl" "127.0.0.1:$PORT" || CLIENT_OK=0
if [ $CLIENT_OK = 0 ]; then
  tail -n 30 "$LOG"
  exit 1
fi
stop_server
trap 'rm -rf "$DATA"' EXIT

# An installed sanitizer build cannot be linked by an ordinary consumer, so
# the install check runs for the plain build only.
case "$(basename "$BUILD")" in
  *-asan) echo "--- client library installed: skipped for $(basename "$BUILD")" ;;
  *)
    echo "--- client library installed: pkg-config and find_package(analytics) consumers"
    "$HERE/install_test.sh" "$BUILD"
    ;;
esac

echo "--- Python grpcio suite"
# test_openapi_docs.py validates /openapi.json with @seriousme/openapi-schema-validator
# (pinned by tests/openapi/package-lock.json).
(cd "$HERE/../openapi" && npm ci --no-audit --no-fund --loglevel=error)
ANALYTICSD=$BIN $PYTHON "$HERE/python/run_all.py" --binary "$BIN"

# The live dashboard in headless chromium (playwright-core from npm, pinned by
# tests/browser/package-lock.json). Not for sanitizer builds (*-asan): a browser
# test checks the page, not memory, and is slow there.
case "$(basename "$BUILD")" in
  *-asan) echo "--- dashboard in a headless browser: skipped for $(basename "$BUILD")" ;;
  *)
    echo "--- dashboard in a headless browser (chromium + playwright-core)"
    (cd "$HERE/../browser" && npm ci --no-audit --no-fund --loglevel=error &&
      ANALYTICSD=$BIN node dashboard.test.mjs "$BUILD")
    ;;
esac

echo "--- kill -9 under load (${CRASH_KILLS:-30} kills)"
$PYTHON "$HERE/crash_test.py" --binary "$BIN" --kills "${CRASH_KILLS:-30}"

echo "--- kill -9 during an out-of-order import (${CRASH_IMPORT_KILLS:-6} kills)"
$PYTHON "$HERE/crash_test.py" --binary "$BIN" --kills "${CRASH_IMPORT_KILLS:-6}" --out-of-order

echo "--- kill -9 under load with a metric: rollups equal raw events (${CRASH_METRIC_KILLS:-6} kills)"
$PYTHON "$HERE/crash_test.py" --binary "$BIN" --kills "${CRASH_METRIC_KILLS:-6}" --metric
