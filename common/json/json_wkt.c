/* Text forms of the well-known types: RFC 3339 timestamps, durations and
 * FieldMask paths, in both directions. */
#include "json_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z. */
#define TIMESTAMP_MIN_SECONDS INT64_C(-62135596800)
#define TIMESTAMP_MAX_SECONDS INT64_C(253402300799)
#define DURATION_MAX_SECONDS INT64_C(315576000000)
#define NANOS_PER_SECOND 1000000000

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  unsigned yoe = (unsigned)(y - era * 400);
  unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d) {
  z += 719468;
  int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  unsigned doe = (unsigned)(z - era * 146097);
  unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static bool leap_year(int64_t y) {
  return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned days_in_month(int64_t y, unsigned m) {
  static const unsigned days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && leap_year(y) ? 29 : days[m - 1];
}

/* ".123", ".123456", ".123456789" or "" for nanos in [0, 1e9); digits
 * written by hand: sprintf was the largest part of a timestamp's cost, and
 * a batch's answer formats one per event. */
static int format_nanos(uint32_t nanos, char *out) {
  if (nanos == 0)
    return 0;
  int digits = 9;
  if (nanos % 1000000 == 0) {
    nanos /= 1000000;
    digits = 3;
  } else if (nanos % 1000 == 0) {
    nanos /= 1000;
    digits = 6;
  }
  out[0] = '.';
  for (int i = digits; i >= 1; i--) {
    out[i] = (char)('0' + nanos % 10);
    nanos /= 10;
  }
  return digits + 1;
}

int ana_json_format_timestamp(int64_t seconds, int32_t nanos, char out[ANA_JSON_TIME_TEXT_MAX]) {
  if (seconds < TIMESTAMP_MIN_SECONDS || seconds > TIMESTAMP_MAX_SECONDS || nanos < 0 ||
      nanos >= NANOS_PER_SECOND)
    return -1;
  int64_t days = seconds / 86400, rem = seconds % 86400;
  if (rem < 0) {
    rem += 86400;
    days--;
  }
  /* "YYYY-MM-DDT" of the thread's last day (a series' buckets share days);
   * the years are 0001..9999; no printf. */
  static _Thread_local int64_t last_day = INT64_MIN;
  static _Thread_local char day_text[11];
  if (days != last_day) {
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    unsigned yy = (unsigned)y;
    char *p = day_text;
    *p++ = (char)('0' + yy / 1000);
    *p++ = (char)('0' + yy / 100 % 10);
    *p++ = (char)('0' + yy / 10 % 10);
    *p++ = (char)('0' + yy % 10);
    *p++ = '-';
    *p++ = (char)('0' + m / 10);
    *p++ = (char)('0' + m % 10);
    *p++ = '-';
    *p++ = (char)('0' + d / 10);
    *p++ = (char)('0' + d % 10);
    *p = 'T';
    last_day = days;
  }
  memcpy(out, day_text, sizeof day_text);
  unsigned hh = (unsigned)(rem / 3600), mi = (unsigned)(rem / 60 % 60), ss = (unsigned)(rem % 60);
  char *p = out + sizeof day_text;
  *p++ = (char)('0' + hh / 10);
  *p++ = (char)('0' + hh % 10);
  *p++ = ':';
  *p++ = (char)('0' + mi / 10);
  *p++ = (char)('0' + mi % 10);
  *p++ = ':';
  *p++ = (char)('0' + ss / 10);
  *p++ = (char)('0' + ss % 10);
  int n = (int)(p - out);
  n += format_nanos((uint32_t)nanos, out + n);
  out[n++] = 'Z';
  out[n] = '\0';
  return n;
}

/* Exactly n digits at s[*i]; advances *i. */
static bool fixed_digits(const char *s, size_t len, size_t *i, int n, unsigned *v) {
  unsigned r = 0;
  for (int k = 0; k < n; k++, (*i)++) {
    if (*i >= len || s[*i] < '0' || s[*i] > '9')
      return false;
    r = r * 10 + (unsigned)(s[*i] - '0');
  }
  *v = r;
  return true;
}

static bool expect(const char *s, size_t len, size_t *i, char c) {
  if (*i >= len || s[*i] != c)
    return false;
  (*i)++;
  return true;
}

/* ".d{1,9}" at s[*i] (optional): nanos. -1 if malformed. */
static int parse_fraction(const char *s, size_t len, size_t *i, int32_t *nanos) {
  *nanos = 0;
  if (*i >= len || s[*i] != '.')
    return 0;
  (*i)++;
  int digits = 0;
  int32_t v = 0;
  while (*i < len && s[*i] >= '0' && s[*i] <= '9') {
    if (++digits > 9)
      return -1;
    v = v * 10 + (s[*i] - '0');
    (*i)++;
  }
  if (digits == 0)
    return -1;
  for (; digits < 9; digits++)
    v *= 10;
  *nanos = v;
  return 0;
}

int ana_json_parse_timestamp(const char *s, size_t len, int64_t *seconds, int32_t *nanos) {
  size_t i = 0;
  unsigned year, mon, day, hh, mm, ss;
  if (!fixed_digits(s, len, &i, 4, &year) || !expect(s, len, &i, '-') ||
      !fixed_digits(s, len, &i, 2, &mon) || !expect(s, len, &i, '-') ||
      !fixed_digits(s, len, &i, 2, &day) || !expect(s, len, &i, 'T') ||
      !fixed_digits(s, len, &i, 2, &hh) || !expect(s, len, &i, ':') ||
      !fixed_digits(s, len, &i, 2, &mm) || !expect(s, len, &i, ':') ||
      !fixed_digits(s, len, &i, 2, &ss))
    return -1;
  if (parse_fraction(s, len, &i, nanos) < 0)
    return -1;
  int64_t offset = 0;
  if (i < len && s[i] == 'Z') {
    i++;
  } else if (i < len && (s[i] == '+' || s[i] == '-')) {
    int sign = s[i++] == '-' ? -1 : 1;
    unsigned oh, om;
    if (!fixed_digits(s, len, &i, 2, &oh) || !expect(s, len, &i, ':') ||
        !fixed_digits(s, len, &i, 2, &om) || oh > 23 || om > 59)
      return -1;
    offset = sign * (int64_t)(oh * 3600 + om * 60);
  } else {
    return -1;
  }
  if (i != len || mon < 1 || mon > 12 || day < 1 || day > days_in_month(year, mon) || hh > 23 ||
      mm > 59 || ss > 59)
    return -1;
  int64_t secs = days_from_civil(year, mon, day) * 86400 + hh * 3600 + mm * 60 + ss - offset;
  if (secs < TIMESTAMP_MIN_SECONDS || secs > TIMESTAMP_MAX_SECONDS)
    return -2;
  *seconds = secs;
  return 0;
}

int ana_json_format_duration(int64_t seconds, int32_t nanos, char out[ANA_JSON_TIME_TEXT_MAX]) {
  if (seconds < -DURATION_MAX_SECONDS || seconds > DURATION_MAX_SECONDS ||
      nanos <= -NANOS_PER_SECOND || nanos >= NANOS_PER_SECOND || (seconds > 0 && nanos < 0) ||
      (seconds < 0 && nanos > 0))
    return -1;
  bool neg = seconds < 0 || nanos < 0;
  uint64_t s = seconds < 0 ? (uint64_t)-seconds : (uint64_t)seconds;
  uint32_t n = nanos < 0 ? (uint32_t)-nanos : (uint32_t)nanos;
  int len = sprintf(out, "%s%" PRIu64, neg ? "-" : "", s);
  len += format_nanos(n, out + len);
  out[len++] = 's';
  out[len] = '\0';
  return len;
}

/* Canonical "-?digits(.digits{1,9})?s". */
static int parse_duration_canonical(const char *s, size_t len, int64_t *seconds, int32_t *nanos) {
  size_t i = 0;
  bool neg = false;
  if (i < len && s[i] == '-') {
    neg = true;
    i++;
  }
  size_t start = i;
  uint64_t v = 0;
  bool big = false;
  for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
    v = v * 10 + (uint64_t)(s[i] - '0');
    if (v > (uint64_t)DURATION_MAX_SECONDS)
      big = true, v = (uint64_t)DURATION_MAX_SECONDS + 1;
  }
  if (i == start)
    return -1;
  int32_t n;
  if (parse_fraction(s, len, &i, &n) < 0 || !expect(s, len, &i, 's') || i != len)
    return -1;
  if (big)
    return -2;
  *seconds = neg ? -(int64_t)v : (int64_t)v;
  *nanos = neg ? -n : n;
  return 0;
}

/* Go's time.ParseDuration: [-+]?([0-9]*(\.[0-9]*)?[a-z]+)+ or "0". The
 * fractional part is scaled in floating point, as Go does. */
static int parse_duration_go(const char *s, size_t len, int64_t *seconds, int32_t *nanos) {
  static const struct {
    const char *name;
    uint64_t ns;
  } units[] = {
      {"ns", 1},
      {"us", 1000},
      {"\xc2\xb5s", 1000},
      {"\xce\xbcs", 1000},
      {"ms", 1000000},
      {"s", 1000000000},
      {"m", UINT64_C(60000000000)},
      {"h", UINT64_C(3600000000000)},
  };
  size_t i = 0;
  bool neg = false;
  if (i < len && (s[i] == '-' || s[i] == '+'))
    neg = s[i++] == '-';
  if (len - i == 1 && s[i] == '0') {
    *seconds = 0;
    *nanos = 0;
    return 0;
  }
  if (i == len)
    return -1;
  uint64_t secs = 0, ns = 0; /* ns < 1e9 after each step */
  while (i < len) {
    uint64_t whole = 0, frac = 0, scale = 1;
    bool any = false, big = false;
    while (i < len && s[i] >= '0' && s[i] <= '9') {
      if (whole > (UINT64_MAX - 9) / 10)
        big = true;
      else
        whole = whole * 10 + (uint64_t)(s[i] - '0');
      i++;
      any = true;
    }
    if (i < len && s[i] == '.') {
      i++;
      while (i < len && s[i] >= '0' && s[i] <= '9') {
        if (scale <= UINT64_C(100000000000000000)) {
          frac = frac * 10 + (uint64_t)(s[i] - '0');
          scale *= 10;
        }
        i++;
        any = true;
      }
    }
    if (!any)
      return -1;
    size_t u = 0, ulen = 0;
    for (; u < sizeof units / sizeof units[0]; u++) {
      ulen = strlen(units[u].name);
      /* The table lists "ms" before "m", so the longer unit wins. */
      if (len - i >= ulen && memcmp(s + i, units[u].name, ulen) == 0)
        break;
    }
    if (u == sizeof units / sizeof units[0])
      return -1;
    i += ulen;
    uint64_t unit = units[u].ns;
    if (big)
      return -2;
    if (unit >= NANOS_PER_SECOND) {
      uint64_t per = unit / NANOS_PER_SECOND;
      if (whole > (uint64_t)DURATION_MAX_SECONDS / per + 1)
        return -2;
      secs += whole * per;
    } else {
      uint64_t per = NANOS_PER_SECOND / unit;
      secs += whole / per;
      ns += whole % per * unit;
    }
    if (frac)
      ns += (uint64_t)((double)frac * ((double)unit / (double)scale));
    secs += ns / NANOS_PER_SECOND;
    ns %= NANOS_PER_SECOND;
    if (secs > (uint64_t)DURATION_MAX_SECONDS)
      return -2;
  }
  *seconds = neg ? -(int64_t)secs : (int64_t)secs;
  *nanos = neg ? -(int32_t)ns : (int32_t)ns;
  return 0;
}

int ana_json_parse_duration(const char *s, size_t len, bool go_units, int64_t *seconds,
                            int32_t *nanos) {
  int rc = parse_duration_canonical(s, len, seconds, nanos);
  if (rc == -1 && go_units)
    rc = parse_duration_go(s, len, seconds, nanos);
  return rc;
}

long ana_json_mask_path_to_json(const char *path, char *out, size_t size) {
  size_t n = 0;
  bool after_underscore = false;
  for (const char *p = path; *p; p++) {
    char c = *p;
    if (c >= 'A' && c <= 'Z')
      return -1;
    if (after_underscore) {
      if (c < 'a' || c > 'z')
        return -1;
      c = (char)(c - 'a' + 'A');
      after_underscore = false;
    } else if (c == '_') {
      after_underscore = true;
      continue;
    }
    if (n + 1 >= size)
      return -1;
    out[n++] = c;
  }
  if (after_underscore)
    return -1;
  if (size)
    out[n] = '\0';
  return (long)n;
}

long ana_json_mask_path_from_json(const char *path, size_t len, char *out, size_t size) {
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    char c = path[i];
    if (c == '_')
      return -1;
    if (c >= 'A' && c <= 'Z') {
      if (n + 2 >= size)
        return -1;
      out[n++] = '_';
      out[n++] = (char)(c - 'A' + 'a');
    } else {
      if (n + 1 >= size)
        return -1;
      out[n++] = c;
    }
  }
  if (size)
    out[n] = '\0';
  return (long)n;
}
