/* Bucket boundaries from ICU's calendar, so local-time rules (offsets, DST)
 * come from the tz database rather than from arithmetic of our own. */
#include "ana_buckets.h"

#include <stdlib.h>
#include <string.h>
#include <unicode/ucal.h>
#include <unicode/ustring.h>

#define AUTO_TARGET_BUCKETS 300

static const struct {
  const char *name;
  int64_t ms;
} intervals[] = {
    [ANA_INTERVAL_1M] = {"1m", 60000},
    [ANA_INTERVAL_5M] = {"5m", 300000},
    [ANA_INTERVAL_1H] = {"1h", 3600000},
    [ANA_INTERVAL_1D] = {"1d", 86400000},
};

const char *ana_interval_name(enum ana_interval iv) {
  return intervals[iv].name;
}

int64_t ana_interval_ms(enum ana_interval iv) {
  return intervals[iv].ms;
}

int ana_interval_parse(const char *text, int64_t from_ms, int64_t to_ms, enum ana_interval *out,
                       struct ana_error *err) {
  if (!text || !text[0] || strcmp(text, "auto") == 0) {
    int64_t span = to_ms - from_ms;
    for (int i = ANA_INTERVAL_1M; i <= ANA_INTERVAL_1D; i++) {
      *out = (enum ana_interval)i;
      if (span / intervals[i].ms <= AUTO_TARGET_BUCKETS)
        break;
    }
    return 0;
  }
  for (int i = ANA_INTERVAL_1M; i <= ANA_INTERVAL_1D; i++) {
    if (strcmp(text, intervals[i].name) == 0) {
      *out = (enum ana_interval)i;
      return 0;
    }
  }
  return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                       "interval: \"%.32s\" is not one of 1m, 5m, 1h, 1d, auto", text);
}

static UCalendar *open_zone(const char *tz, struct ana_error *err) {
  UChar id[128], canonical[128];
  UErrorCode status = U_ZERO_ERROR;
  const char *name = tz && tz[0] ? tz : "UTC";
  if (strlen(name) >= 100) {
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "timeZone: unknown time zone");
    return NULL;
  }
  u_uastrcpy(id, name);
  UBool system_id = 0;
  ucal_getCanonicalTimeZoneID(id, -1, canonical, 128, &system_id, &status);
  if (U_FAILURE(status) || !system_id) {
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                  "timeZone: unknown time zone \"%.64s\" (use an IANA name such as "
                  "Europe/Berlin)",
                  name);
    return NULL;
  }
  status = U_ZERO_ERROR;
  UCalendar *cal = ucal_open(id, -1, "en_US_POSIX", UCAL_GREGORIAN, &status);
  if (U_FAILURE(status)) {
    ana_error_set(err, ANA_STATUS_INTERNAL, "timeZone: cannot open a calendar for %.64s", name);
    return NULL;
  }
  return cal;
}

/* Start of the local bucket holding ms. */
static int64_t floor_local(UCalendar *cal, enum ana_interval iv, int64_t ms) {
  UErrorCode status = U_ZERO_ERROR;
  ucal_setMillis(cal, (UDate)ms, &status);
  ucal_set(cal, UCAL_MILLISECOND, 0);
  ucal_set(cal, UCAL_SECOND, 0);
  switch (iv) {
  case ANA_INTERVAL_1M: break;
  case ANA_INTERVAL_5M:
    ucal_set(cal, UCAL_MINUTE, ucal_get(cal, UCAL_MINUTE, &status) / 5 * 5);
    break;
  case ANA_INTERVAL_1H: ucal_set(cal, UCAL_MINUTE, 0); break;
  case ANA_INTERVAL_1D:
    ucal_set(cal, UCAL_MINUTE, 0);
    ucal_set(cal, UCAL_HOUR_OF_DAY, 0);
    break;
  }
  int64_t start = (int64_t)ucal_getMillis(cal, &status);
  /* In a repeated hour (DST ending) the calendar may pick the earlier of
   * the two; a start after ms would mean the later one was meant. */
  if (start > ms)
    start -= intervals[iv].ms;
  return start;
}

static int64_t next_local(UCalendar *cal, enum ana_interval iv, int64_t start) {
  UErrorCode status = U_ZERO_ERROR;
  if (iv != ANA_INTERVAL_1D)
    return start + intervals[iv].ms; /* elapsed time: repeated hours are separate buckets */
  ucal_setMillis(cal, (UDate)start, &status);
  ucal_add(cal, UCAL_DATE, 1, &status);
  /* Back to the next day's first instant: where a clock change skips
   * midnight (America/Havana in March) a day starts at 01:00, and adding a
   * day to that start would keep 01:00 for every day after it. */
  ucal_set(cal, UCAL_HOUR_OF_DAY, 0);
  ucal_set(cal, UCAL_MINUTE, 0);
  return (int64_t)ucal_getMillis(cal, &status);
}

int ana_buckets_make(int64_t from_ms, int64_t to_ms, enum ana_interval iv, const char *tz,
                     size_t max_buckets, int64_t **starts, size_t *n, struct ana_error *err) {
  *starts = NULL;
  *n = 0;
  if (to_ms <= from_ms)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "to: must be after from");
  if ((to_ms - from_ms) / intervals[iv].ms > (int64_t)max_buckets + 2)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                         "interval: %s over this range gives more than %zu buckets",
                         intervals[iv].name, max_buckets);
  UCalendar *cal = open_zone(tz, err);
  if (!cal)
    return ANA_ERR_INVALID;
  size_t cap = 64, count = 0;
  int64_t *v = malloc(cap * sizeof *v);
  int rc = 0;
  for (int64_t s = floor_local(cal, iv, from_ms); v && s < to_ms; s = next_local(cal, iv, s)) {
    if (count == max_buckets) {
      rc = ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                         "interval: %s over this range gives more than %zu buckets",
                         intervals[iv].name, max_buckets);
      break;
    }
    if (count == cap) {
      int64_t *bigger = realloc(v, (cap *= 2) * sizeof *v);
      if (!bigger) {
        free(v);
        v = NULL;
        break;
      }
      v = bigger;
    }
    v[count++] = s;
  }
  ucal_close(cal);
  if (!v)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory"), ANA_ERR_NOMEM;
  if (rc < 0) {
    free(v);
    return rc;
  }
  *starts = v;
  *n = count;
  return 0;
}

size_t ana_bucket_index(const int64_t *starts, size_t n, int64_t end_ms, int64_t ts) {
  if (n == 0 || ts < starts[0] || ts >= end_ms)
    return n;
  size_t lo = 0, hi = n;
  while (hi - lo > 1) {
    size_t mid = lo + (hi - lo) / 2;
    if (starts[mid] <= ts)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}
