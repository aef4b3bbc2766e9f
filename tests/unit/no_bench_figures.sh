#!/bin/sh
# Benchmark figures live in bench/RESULTS.md, not in code comments (which
# keep the reason only): a comment line with a throughput (ev/s, ops/s), a
# percentile with its value, a timing set against another, or an "N times
# smaller/faster" fails.
# Usage: no_bench_figures.sh SOURCE_DIR
cd "${1:?usage: no_bench_figures.sh SOURCE_DIR}" || exit 2
found=$(grep -rnE --include='*.c' --include='*.h' \
          -e '(/\*|^ *\*|//).*[0-9] ?(ev|ops|calls|req)/s' \
          -e '(/\*|^ *\*|//).*p(50|90|95|99)[^a-z]*[0-9.]+ ?(ms|us|µs|ns)' \
          -e '(/\*|^ *\*|//).*[0-9.]+ ?(ms|us|µs|ns|MB|KB) (with|without|against)' \
          -e '(/\*|^ *\*|//).*against [0-9.]+ ?(ms|us|µs|ns|MB|KB)' \
          -e '(/\*|^ *\*|//).*medians? .*[0-9.]+ ?(ms|us|µs|ns)' \
          -e '(/\*|^ *\*|//).*[0-9.]+ ?(times|x) (smaller|larger|faster|slower|cheaper)' \
          server restbridge common client)
if [ -n "$found" ]; then
  echo "benchmark figures in code comments (move them to bench/RESULTS.md):"
  echo "$found"
  exit 1
fi
echo "no benchmark figures in code comments"
