#!/bin/bash
# Installs the build into a temporary prefix and builds two consumers of the
# installed client library: one with pkg-config (shared, then static) and one
# with CMake's find_package(analytics). Each creates and destroys a client.
# Usage: tests/integration/install_test.sh BUILD_DIR
set -euo pipefail
BUILD=$(cd "${1:?usage: install_test.sh BUILD_DIR}" && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
PREFIX=$TMP/prefix

cmake --install "$BUILD" --prefix "$PREFIX" >"$TMP/install.log"
test -f "$PREFIX/include/analytics/analytics.h"
test -x "$PREFIX/bin/analyticsctl"
# The installed tool finds the installed library by itself: a RUNPATH relative
# to its own place ($ORIGIN), so it runs from any prefix with no
# LD_LIBRARY_PATH (the build tree's path is not left in it).
RUNPATH=$(readelf -d "$PREFIX/bin/analyticsctl" | sed -n 's/.*(RUNPATH).*\[\(.*\)\]/\1/p')
case "$RUNPATH" in
  '$ORIGIN/'*) ;;
  *) echo "analyticsctl installed without a \$ORIGIN RUNPATH: '$RUNPATH'"; exit 1 ;;
esac
case "$RUNPATH" in *"$BUILD"*) echo "RUNPATH names the build tree: $RUNPATH"; exit 1 ;; esac
mv "$PREFIX" "$TMP/moved" && PREFIX=$TMP/moved
env -u LD_LIBRARY_PATH "$PREFIX/bin/analyticsctl" --version
# ldd's output is kept first: `ldd | grep -q` fails under pipefail whenever
# grep exits before ldd has written everything (SIGPIPE).
LIBS=$(env -u LD_LIBRARY_PATH ldd "$PREFIX/bin/analyticsctl")
grep -q "$PREFIX/.*libanalytics.so" <<<"$LIBS" ||
  { echo "installed analyticsctl does not load the installed libanalytics:"; echo "$LIBS"; exit 1; }

# Symbol versions (client/src/libanalytics.map): the 0.1 API under ANALYTICS_0, what
# came after under its own node; nothing of gRPC or the generated code exported.
SO=$(find "$PREFIX" -name 'libanalytics.so.*' -type f -print -quit)
SYMS=$(objdump -T "$SO")
for sym in analytics_create_alert analytics_stream_metric; do
  grep -Eq "ANALYTICS_0 +$sym\$" <<<"$SYMS" || { echo "$sym is not in ANALYTICS_0"; exit 1; }
done
for sym in analytics_create_channel analytics_list_channels analytics_get_channel \
  analytics_update_channel analytics_delete_channel analytics_test_channel analytics_stream_alerts; do
  grep -Eq "ANALYTICS_0\.2 +$sym\$" <<<"$SYMS" || { echo "$sym is not in ANALYTICS_0.2"; exit 1; }
done
if grep -E ' (grpc_|analytics__v1__|protobuf_c_)' <<<"$SYMS" | grep -v '\*UND\*'; then
  echo "libanalytics exports internals"
  exit 1
fi

cat >"$TMP/consumer.c" <<'C'
#include <analytics/analytics.h>
#include <stdio.h>

int main(void) {
  analytics_options_t opts;
  analytics_error_t err;
  analytics_client_t *client;

  analytics_options_init(&opts);
  opts.target = "127.0.0.1:1";
  client = analytics_client_new(&opts, &err);
  if (!client) {
    fprintf(stderr, "analytics_client_new: %s\n", err.message);
    return 1;
  }
  analytics_client_destroy(client);
  printf("consumer: %s\n", analytics_strerror(ANALYTICS_ERR_QUEUE_FULL));
  return 0;
}
C

PKG_CONFIG_PATH=$(dirname "$(find "$PREFIX" -name analytics.pc -print -quit)")
export PKG_CONFIG_PATH
echo "pkg-config --cflags --libs analytics: $(pkg-config --cflags --libs analytics)"
cc -Wall -Werror -o "$TMP/consumer_pc" "$TMP/consumer.c" $(pkg-config --cflags --libs analytics) \
  -Wl,-rpath,"$(pkg-config --variable=libdir analytics)"
"$TMP/consumer_pc"
# Only the shared library is linked by default: nothing of gRPC is needed.
ldd "$TMP/consumer_pc" | grep libanalytics.so >/dev/null
cc -Wall -Werror -o "$TMP/consumer_static" "$TMP/consumer.c" \
  $(pkg-config --cflags analytics) "$(pkg-config --variable=libdir analytics)/libanalytics.a" \
  $(pkg-config --static --libs-only-other --libs-only-l analytics | sed 's/-lanalytics//')
"$TMP/consumer_static"

mkdir -p "$TMP/cmake_consumer"
cp "$TMP/consumer.c" "$TMP/cmake_consumer/"
cat >"$TMP/cmake_consumer/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.16)
project(consumer C)
find_package(analytics 0.1 REQUIRED)
add_executable(consumer consumer.c)
target_link_libraries(consumer PRIVATE analytics::analytics)
add_executable(consumer_static consumer.c)
target_link_libraries(consumer_static PRIVATE analytics::analytics_static)
CM
cmake -S "$TMP/cmake_consumer" -B "$TMP/cmake_consumer/build" -DCMAKE_PREFIX_PATH="$PREFIX" \
  >"$TMP/cmake.log" || { cat "$TMP/cmake.log"; exit 1; }
cmake --build "$TMP/cmake_consumer/build" >"$TMP/build.log" || { cat "$TMP/build.log"; exit 1; }
"$TMP/cmake_consumer/build/consumer"
"$TMP/cmake_consumer/build/consumer_static"
echo "install_test: ok"
