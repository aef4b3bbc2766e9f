#!/bin/bash
# Runs the test suite in stages and prints how long each took.
#   scripts/test.sh all          everything `make test` runs
#   scripts/test.sh STAGE...     deps format build unit deploy integration adversarial asan fuzz
# Environment: BUILD (default build), FUZZ_SECONDS (default 20 per target).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${BUILD:-build}
JOBS=$(nproc)
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
PYTHON=/usr/bin/python3

declare -a TIMES=()

stage() {
  local name=$1
  shift
  echo "=== stage $name ==="
  local start=$SECONDS
  "$@"
  local took=$((SECONDS - start))
  TIMES+=("$(printf '%-12s %4ds' "$name" "$took")")
  echo "=== stage $name passed in ${took}s ==="
}

configure_and_build() {
  local dir=$1
  shift
  cmake -S . -B "$dir" -DANA_WERROR=ON "$@" >"$dir.configure.log" 2>&1 || {
    cat "$dir.configure.log"
    return 1
  }
  cmake --build "$dir" -j"$JOBS"
}

do_deps() { ./scripts/install-deps.sh test; }

# The house formatting (.clang-format): `make format` applies it.
do_format() { make --no-print-directory format-check; }

do_build() {
  mkdir -p "$BUILD"
  configure_and_build "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo
}

do_unit() { ctest --test-dir "$BUILD" -L unit --output-on-failure -j"$JOBS"; }

do_deploy() { $PYTHON tests/deploy/test_manifests.py "$ROOT"; }

do_integration() { tests/integration/run.sh "$ROOT/$BUILD"; }

# Attacks over the real sockets (tests/adversarial/): the server must survive each.
do_adversarial() { $PYTHON tests/adversarial/run_all.py --binary "$BUILD/server/analyticsd"; }

do_asan() {
  mkdir -p build-asan
  configure_and_build build-asan -DCMAKE_BUILD_TYPE=Debug -DANA_SANITIZE=ON
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  export LSAN_OPTIONS=suppressions=$ROOT/tests/lsan.supp
  ctest --test-dir build-asan -L unit --output-on-failure -j"$JOBS"
  tests/integration/run.sh "$ROOT/build-asan"
}

do_fuzz() {
  mkdir -p build-fuzz
  configure_and_build build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DANA_FUZZ=ON
  for target in build-fuzz/tests/fuzz/fuzz_*; do
    [ -x "$target" ] || continue
    local name
    name=$(basename "$target")
    local corpus=tests/fuzz/corpus/$name
    local work
    work=$(mktemp -d)
    # Per-target libFuzzer flags (e.g. a larger -max_len) from tests/fuzz/<target>.options.
    local extra=()
    [ -f "tests/fuzz/$name.options" ] && read -r -a extra < "tests/fuzz/$name.options"
    echo "fuzzing $name for ${FUZZ_SECONDS}s ${extra[*]}"
    # Seeds from the repository; new inputs go to a scratch directory.
    "$target" -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 -timeout=10 \
      -artifact_prefix="$ROOT/build-fuzz/" "${extra[@]}" \
      -rss_limit_mb=2048 "$work" "$corpus" 2>&1 | tail -n 15
    rm -rf "$work"
  done
}

run_stage() {
  case "$1" in
    deps) stage deps do_deps ;;
    format) stage format do_format ;;
    build) stage build do_build ;;
    unit) stage unit do_unit ;;
    deploy) stage deploy do_deploy ;;
    integration) stage integration do_integration ;;
    adversarial) stage adversarial do_adversarial ;;
    asan) stage asan do_asan ;;
    fuzz) stage fuzz do_fuzz ;;
    *) echo "unknown stage $1" >&2; exit 2 ;;
  esac
}

if [ $# -eq 0 ] || [ "$1" = all ]; then
  set -- deps format build unit deploy integration adversarial asan fuzz
elif [ "$1" = unit ] || [ "$1" = integration ] || [ "$1" = adversarial ]; then
  set -- deps build "$@"
fi

total_start=$SECONDS
for s in "$@"; do
  run_stage "$s"
done

echo
echo "stage times:"
for t in "${TIMES[@]}"; do echo "  $t"; done
echo "  total        $((SECONDS - total_start))s"
