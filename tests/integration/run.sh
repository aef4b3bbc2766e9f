#!/bin/bash
# Integration tests against the real binaries of one build directory:
#   1. the gRPC runtime in-process, through the generated C stubs, and the
#      REST bridge in-process, over HTTP;
#   2. the generated C stubs against a live analyticsd;
#   3. the Python grpcio suite (an independent gRPC implementation), which
#      starts its own servers.
# Usage: tests/integration/run.sh BUILD_DIR
set -euo pipefail
BUILD=$(cd "${1:?usage: run.sh BUILD_DIR}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
PYTHON=/usr/bin/python3
BIN=$BUILD/server/analyticsd

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
GRPC_PORT=$PORT PORT=$HTTP_PORT DATA_DIR=$DATA LOG_LEVEL=debug "$BIN" 2>"$LOG" &
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
stop_server
trap 'rm -rf "$DATA"' EXIT

echo "--- Python grpcio suite"
# Features whose RPCs are implemented no longer answer UNIMPLEMENTED.
export ANA_IMPLEMENTED_FEATURES=events
ANALYTICSD=$BIN $PYTHON "$HERE/python/run_all.py" --binary "$BIN"

echo "--- kill -9 under load (${CRASH_KILLS:-30} kills)"
$PYTHON "$HERE/crash_test.py" --binary "$BIN" --kills "${CRASH_KILLS:-30}"
