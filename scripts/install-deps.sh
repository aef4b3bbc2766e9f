#!/bin/sh
# Installs the Debian 12 packages analyticsd needs to build, run and test.
# Used by `make run`, `make test`, .ci/run and the Dockerfile, so every path
# sets a machine up the same way. Installs only what is missing.
#
#   install-deps.sh build    compilers, tools and -dev packages to build
#   install-deps.sh test     build + what the test suite needs
#   install-deps.sh bench    build + test + the peers `make bench` compares
#                            against (InfluxDB)
#   install-deps.sh runtime  only the shared libraries the installed binaries
#                            load (the Dockerfile's runtime stage)
set -eu

# Packages needed to build and run the service.
BUILD_PACKAGES="build-essential cmake pkg-config git
  libgrpc-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
  libprotoc-dev libprotobuf-dev grpc-proto golang-github-gogo-googleapis-dev
  libsqlite3-dev libjansson-dev libwebsockets-dev libicu-dev libssl-dev
  libcurl4-openssl-dev libhpdf-dev libxlsxwriter-dev fonts-dejavu-core zlib1g-dev
  libzstd-dev libyajl-dev libdeflate-dev"

# Packages needed only by the test suite and the sanitizer/fuzz builds.
# python3-aiosmtpd is the SMTP server the channel tests send to. clang-format checks the house formatting (`make format-check`). chromium, nodejs and npm run the dashboard's browser test (tests/browser/:
# playwright-core from npm drives Debian's chromium; no browser download) and the OpenAPI
# validator (tests/openapi/). prometheus provides promtool, which checks GET /metrics.
TEST_PACKAGES="libcmocka-dev clang libclang-rt-14-dev clang-format
  python3 python3-grpcio python3-protobuf protobuf-compiler-grpc python3-yaml
  sqlite3 procps libcurl4-openssl-dev curl python3-websockets python3-aiosmtpd
  python3-cryptography iproute2 poppler-utils python3-openpyxl python3-pypdf unzip
  chromium nodejs npm prometheus clickhouse-server clickhouse-client"

# Peers the benchmarks (bench/peers) run beside analyticsd; ClickHouse is in TEST_PACKAGES.
BENCH_PACKAGES="influxdb influxdb-client"

# Shared libraries loaded by the installed binaries, and nothing to build with.
# One runtime package per library linked in cmake/Dependencies.cmake:
#   libgrpc29      libgrpc.so.29, libgpr.so.29 (and libupb, libaddress_sorting)
#   libprotobuf-c1 libprotobuf-c.so.1
#   libjansson4    libjansson.so.4
#   libsqlite3-0   libsqlite3.so.0
#   libwebsockets17 libwebsockets.so.17
#   libicu72       libicuuc.so.72, libicui18n.so.72 (time zones for metric buckets)
#   libssl3        libcrypto.so.3 (JWT signatures)
#   libcurl4       libcurl.so.4 (JWKS URL)
#   libhpdf-2.3.0  libhpdf-2.3.0.so (PDF reports), fonts-dejavu-core its embedded font
#   libxlsxwriter4 libxlsxwriter.so.4 (Excel reports)
#   zlib1g         libz.so.1 (gzip-compressed /metrics)
#   libzstd1       libzstd.so.1 (compressed event payloads)
#   libyajl2       libyajl.so.2 (the batch elements' JSON read straight into messages)
#   libdeflate0    libdeflate.so.0 (gzip-compressed ClickHouse inserts)
# ca-certificates lets the remote backends (ClickHouse, MongoDB, Elasticsearch,
# Redis, RabbitMQ) verify TLS peers. A library added to the build adds its
# runtime package here too (check with `dpkg -S libfoo.so.N`).
RUNTIME_PACKAGES="libgrpc29 libprotobuf-c1 libjansson4 libsqlite3-0 libwebsockets17 libicu72
  libssl3 libcurl4 libhpdf-2.3.0 libxlsxwriter4 zlib1g libzstd1 libyajl2 libdeflate0 fonts-dejavu-core ca-certificates"

case "${1:-build}" in
  build) wanted="$BUILD_PACKAGES" ;;
  test) wanted="$BUILD_PACKAGES $TEST_PACKAGES" ;;
  bench) wanted="$BUILD_PACKAGES $TEST_PACKAGES $BENCH_PACKAGES" ;;
  runtime) wanted="$RUNTIME_PACKAGES" ;;
  *) echo "usage: $0 [build|test|bench|runtime]" >&2; exit 2 ;;
esac

missing=""
for pkg in $wanted; do
  # A nodejs that bundles npm (NodeSource's) conflicts with Debian's npm.
  if [ "$pkg" = npm ] && command -v npm >/dev/null 2>&1; then
    continue
  fi
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  case "$status" in
    *"install ok installed"*) ;;
    *) missing="$missing $pkg" ;;
  esac
done

if [ -z "$missing" ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages:$missing (run as root to install them)" >&2
  exit 1
fi

echo "install-deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
