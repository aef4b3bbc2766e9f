# The two commands: `make run` (set up, build, start analyticsd) and
# `make test` (set up, build, run the whole suite). Everything else is a helper.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=RelWithDebInfo

.PHONY: all deps build run test test-unit test-integration asan fuzz fuzz-long crash-long bench \
	test-clickhouse-long \
        format format-check docs install clean

all: build

deps:
	./scripts/install-deps.sh build

build: deps
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS) -DANA_WERROR=ON
	cmake --build $(BUILD) -j$(JOBS)

run: build
	./$(BUILD)/server/analyticsd

test:
	./scripts/test.sh all

test-unit:
	./scripts/test.sh unit

test-integration:
	./scripts/test.sh integration

asan:
	./scripts/test.sh asan

fuzz:
	./scripts/test.sh fuzz

# Long fuzzing runs: FUZZ_SECONDS per target (default 600).
fuzz-long:
	FUZZ_SECONDS=$${FUZZ_SECONDS:-600} ./scripts/test.sh fuzz

# Benchmarks: ingest throughput, ack latency, search; metric rollups (their
# rows are appended); writes bench/RESULTS.md.
# BENCH_SECONDS per load run, BENCH_SEARCH_EVENTS events in the search store,
# BENCH_METRIC_EVENTS events for the metric benchmark, BENCH_WORD_EVENTS events for the
# common-word search benchmark, BENCH_IMPORT_EVENTS for the historical import (random
# against time-ordered timestamps).
# BENCH_SERVER_CPUS=0 BENCH_CLIENT_CPUS=1 pins the server and the load
# generators to separate CPUs; by default they share the machine's CPUs.
# BENCH_PEERS_EVENTS: the event counts of the peers benchmark (analyticsd
# against InfluxDB and ClickHouse, bench/peers), one run and section each.
bench: build
	./scripts/install-deps.sh bench
	./$(BUILD)/bench/ingest_bench --server ./$(BUILD)/server/analyticsd \
	  --seconds $${BENCH_SECONDS:-5} --search-events $${BENCH_SEARCH_EVENTS:-10000000} \
	  --out bench/RESULTS.md
	./$(BUILD)/bench/search_bench --events $${BENCH_WORD_EVENTS:-1000000} --out bench/RESULTS.md
	./$(BUILD)/bench/rest_bench --server ./$(BUILD)/server/analyticsd \
	  --seconds $${BENCH_SECONDS:-5} --out bench/RESULTS.md
	./$(BUILD)/bench/tls_bench --server ./$(BUILD)/server/analyticsd \
	  --seconds $${BENCH_SECONDS:-5} --out bench/RESULTS.md
	./$(BUILD)/bench/jwt_bench --out bench/RESULTS.md
	./$(BUILD)/bench/rate_limit_bench --out bench/RESULTS.md
	./$(BUILD)/bench/crypto_bench --out bench/RESULTS.md
	./$(BUILD)/bench/auth_bench --server ./$(BUILD)/server/analyticsd \
	  --seconds $${BENCH_SECONDS:-5} --out bench/RESULTS.md
	./$(BUILD)/bench/report_writers_bench --rows $${BENCH_REPORT_ROWS:-1000000} --out bench/RESULTS.md
	/usr/bin/python3 bench/reports_bench.py --binary ./$(BUILD)/server/analyticsd \
	  --events $${BENCH_REPORT_EVENTS:-1000000} --out bench/RESULTS.md
	./$(BUILD)/bench/metrics_bench --events $${BENCH_METRIC_EVENTS:-10000000} --out bench/RESULTS.md
	/usr/bin/python3 bench/metric_stream_bench.py --binary ./$(BUILD)/server/analyticsd \
	  --out bench/RESULTS.md
	/usr/bin/python3 bench/alerts_bench.py --binary ./$(BUILD)/server/analyticsd \
	  --seconds $${BENCH_SECONDS:-5} --out bench/RESULTS.md
	/usr/bin/python3 bench/import_bench.py --binary ./$(BUILD)/server/analyticsd \
	  --events $${BENCH_IMPORT_EVENTS:-1000000} --rounds 2 --out bench/RESULTS.md
	for n in $${BENCH_PEERS_EVENTS:-1000000 10000000}; do \
	  /usr/bin/python3 bench/peers/peers_bench.py --binary ./$(BUILD)/server/analyticsd \
	    --events $$n --out bench/RESULTS.md || exit 1; \
	done

# kill -9 of analyticsd while it ships to a real ClickHouse (started on loopback): KILLS cycles
# (default 30) with an out-of-order import; every acknowledged event in ClickHouse exactly once.
# Then the event, search, metric and rollup suites with their events in ClickHouse
# (ANA_TEST_EVENT_STORE=clickhouse: reads pushed down).
test-clickhouse-long: build
	/usr/bin/python3 tests/integration/clickhouse_crash_test.py --binary ./$(BUILD)/server/analyticsd \
	  --kills $(or $(KILLS),30)
	ANA_TEST_EVENT_STORE=clickhouse /usr/bin/python3 tests/integration/python/run_all.py \
	  --binary ./$(BUILD)/server/analyticsd -q -k test_events -k test_metrics -k test_rollups \
	  -k test_metric_stream -k test_report_rollups -k test_alerts

# The long crash tests: KILLS kill -9 cycles under load (default 500), then
# IMPORT_KILLS during an import at random times (default 30).
crash-long: build
	/usr/bin/python3 tests/integration/crash_test.py --binary ./$(BUILD)/server/analyticsd \
	  --kills $${KILLS:-500}
	/usr/bin/python3 tests/integration/crash_test.py --binary ./$(BUILD)/server/analyticsd \
	  --kills $${IMPORT_KILLS:-30} --out-of-order

install: build
	cmake --install $(BUILD)

# Regenerates the files that are made from the configuration table.
docs: build
	./$(BUILD)/server/analyticsd --print-env-example > .env.example
	ANA_UPDATE_DOCS=1 ./$(BUILD)/tests/unit/test_config > /dev/null

# Every C source of the tree (generated code lives under build directories).
FORMATTED_DIRS = common gen server client restbridge bench tests

format:
	find $(FORMATTED_DIRS) -name '*.[ch]' | xargs clang-format -i

format-check:
	find $(FORMATTED_DIRS) -name '*.[ch]' | xargs clang-format --dry-run --Werror

clean:
	rm -rf $(BUILD) build-asan build-fuzz
