#!/bin/sh
# One milliseconds <-> google.protobuf.Timestamp conversion: common/timestamp.c
# (ana_timestamp.h) and nowhere else. A copy is a line setting seconds from
# milliseconds (ms / 1000, floor_div(ms, 1000)), nanos from a millisecond
# remainder (... * 1000000), or milliseconds from seconds and nanos (a
# Duration, a retry delay, is not a time: lines naming one are left out).
# Usage: one_timestamp.sh SOURCE_DIR
cd "${1:?usage: one_timestamp.sh SOURCE_DIR}" || exit 2
found=$(grep -rnE --include='*.c' --include='*.h' \
          -e 'seconds = [^;]*[/,] ?1000\)?;' \
          -e 'nanos = [^;]*\* 1000000;' \
          -e 'seconds \* 1000( |;|\))' \
          common server restbridge client bench tests |
        grep -v -e '^common/timestamp\.c:' -e '^tests/unit/test_timestamp\.c:' |
        grep -v -i -e 'delay' -e 'duration')
if [ -n "$found" ]; then
  echo "milliseconds <-> Timestamp outside common/timestamp.c (use ana_timestamp.h):"
  echo "$found"
  exit 1
fi
echo "one Timestamp conversion: common/timestamp.c"
