#!/bin/sh
# The one clock: clock_gettime is read in common/clock.c (ana_clock.h) and
# nowhere else.
# Usage: one_clock.sh SOURCE_DIR
cd "${1:?usage: one_clock.sh SOURCE_DIR}" || exit 2
found=$(grep -rln --include='*.c' --include='*.h' 'clock_gettime(' \
          common server restbridge client bench tests |
        grep -v -e '^common/clock\.c$')
if [ -n "$found" ]; then
  echo "clock_gettime outside common/clock.c (use ana_clock.h):"
  echo "$found"
  exit 1
fi
echo "one clock: common/clock.c"
