/* JSON-lines logger: formats each line into a per-thread buffer, then writes it in one call. */
#include "ana_log.h"

#include "ana_error.h"
#include "ana_prom.h"
#include "ana_clock.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* Longest component name kept; longer ones are cut (they are meant to be short literals). */
#define COMPONENT_MAX 64

/* Room kept at the end of every line for ,"truncated":true}\n */
#define TAIL_RESERVE 32

#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)

static const char *const level_names[] = {"error", "warn", "info", "debug"};

static atomic_int current_level = ANA_LOG_INFO;

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *out_file; /* NULL means stderr; guarded by out_lock */

/* Per-thread, so formatting needs neither the lock nor the heap nor much stack. */
static _Thread_local char msg_buf[ANA_LOG_MSG_MAX + 1];
static _Thread_local char line_buf[ANA_LOG_LINE_MAX];

int ana_log_level_parse(const char *s, enum ana_log_level *out) {
  if (!s)
    return ANA_ERR_INVALID;
  for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
    if (strcasecmp(s, level_names[i]) == 0) {
      *out = (enum ana_log_level)i;
      return 0;
    }
  }
  return ANA_ERR_INVALID;
}

const char *ana_log_level_name(enum ana_log_level level) {
  if ((unsigned)level < sizeof level_names / sizeof level_names[0])
    return level_names[level];
  return "unknown";
}

void ana_log_set_level(enum ana_log_level level) {
  atomic_store_explicit(&current_level, (int)level, memory_order_relaxed);
}

void ana_log_set_output(FILE *f) {
  pthread_mutex_lock(&out_lock);
  out_file = f;
  pthread_mutex_unlock(&out_lock);
}

bool ana_log_enabled(enum ana_log_level level) {
  return (int)level >= 0 &&
         (int)level <= atomic_load_explicit(&current_level, memory_order_relaxed);
}

/* Length of the well-formed UTF-8 sequence at s (n > 0 bytes available), or 0
 * when it is ill-formed; then *bad is the length of its longest valid prefix
 * (at least 1), which is replaced by one U+FFFD as Unicode recommends. */
static size_t utf8_sequence(const unsigned char *s, size_t n, size_t *bad) {
  unsigned char c = s[0], lo = 0x80, hi = 0xBF;
  size_t need, i;

  if (c < 0x80)
    return 1;
  if (c >= 0xC2 && c <= 0xDF) {
    need = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    need = 3;
    if (c == 0xE0)
      lo = 0xA0; /* overlong */
    else if (c == 0xED)
      hi = 0x9F; /* surrogates */
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 4;
    if (c == 0xF0)
      lo = 0x90; /* overlong */
    else if (c == 0xF4)
      hi = 0x8F; /* above U+10FFFF */
  } else {
    *bad = 1;
    return 0;
  }
  for (i = 1; i < need && i < n; i++) {
    unsigned char min = i == 1 ? lo : 0x80, max = i == 1 ? hi : 0xBF;
    if (s[i] < min || s[i] > max)
      break;
  }
  if (i == need)
    return need;
  *bad = i;
  return 0;
}

/* Shortens s[0..len) so that it does not end inside a multi-byte character. */
static size_t utf8_trim(const char *s, size_t len) {
  size_t start = len, back = 0;
  while (start > 0 && back < 3 && ((unsigned char)s[start - 1] & 0xC0) == 0x80) {
    start--;
    back++;
  }
  if (start == 0)
    return len;
  start--; /* the byte that may lead the last character */
  unsigned char c = (unsigned char)s[start];
  size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
  return len - start < need ? start : len;
}

/* A line being built. Content grows up to limit; the bytes past it are kept
 * for the tail, so a line can always be closed as valid JSON. */
struct line {
  char *buf;
  size_t len;
  size_t limit;
  bool truncated;
};

static bool put(struct line *l, const char *s, size_t n) {
  if (n > l->limit - l->len) {
    l->truncated = true;
    return false;
  }
  memcpy(l->buf + l->len, s, n);
  l->len += n;
  return true;
}

static bool put_str(struct line *l, const char *s) {
  return put(l, s, strlen(s));
}

/* Appends s[0..n) as a JSON string: quotes, backslashes and control characters
 * escaped, ill-formed UTF-8 replaced by \ufffd. When room runs out it stops at
 * a character boundary, still closes the string, and returns false. */
static bool put_json_string(struct line *l, const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  bool ok = true;

  if (l->limit - l->len < 2) {
    l->truncated = true;
    return false;
  }
  l->buf[l->len++] = '"';
  l->limit--; /* room for the closing quote */
  for (size_t i = 0; i < n && ok;) {
    char esc[8];
    const char *out = esc;
    size_t out_len = 0, used = 1, bad = 0;

    switch (u[i]) {
    case '"': out = "\\\""; break;
    case '\\': out = "\\\\"; break;
    case '\b': out = "\\b"; break;
    case '\f': out = "\\f"; break;
    case '\n': out = "\\n"; break;
    case '\r': out = "\\r"; break;
    case '\t': out = "\\t"; break;
    default:
      if (u[i] < 0x20) {
        snprintf(esc, sizeof esc, "\\u%04x", u[i]);
      } else {
        used = utf8_sequence(u + i, n - i, &bad);
        if (used > 0) {
          out = s + i;
          out_len = used;
        } else {
          out = "\\ufffd";
          used = bad;
        }
      }
      break;
    }
    if (out_len == 0)
      out_len = strlen(out);
    ok = put(l, out, out_len);
    if (ok)
      i += used;
  }
  l->limit++;
  l->buf[l->len++] = '"';
  return ok;
}

static void format_timestamp(char *out, size_t size) {
  int64_t ms = ana_clock_wall_ms();
  time_t secs = (time_t)(ms / 1000);
  struct tm tm;
  size_t n;

  gmtime_r(&secs, &tm);
  n = strftime(out, size, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(out + n, size - n, ".%03dZ", (int)(ms % 1000));
}

static _Thread_local const char *current_request_id;

void ana_log_set_request_id(const char *id) {
  current_request_id = id;
}

const char *ana_log_request_id(void) {
  return current_request_id && current_request_id[0] ? current_request_id : NULL;
}

static bool line_field(struct line *l, const char *key, const char *value);

/* Starts a line in this thread's buffer with ts, level, component and msg
 * (and the thread's request id). */
static void line_begin(struct line *l, enum ana_log_level level, const char *component,
                       const char *msg, size_t msg_len, bool msg_truncated) {
  char ts[48];
  size_t component_len;

  l->buf = line_buf;
  l->len = 0;
  l->limit = sizeof line_buf - TAIL_RESERVE;
  l->truncated = msg_truncated;

  if (!component)
    component = "unknown";
  component_len = utf8_trim(component, strnlen(component, COMPONENT_MAX));
  format_timestamp(ts, sizeof ts);

  put_str(l, "{\"ts\":\"");
  put_str(l, ts);
  put_str(l, "\",\"level\":\"");
  put_str(l, ana_log_level_name(level));
  put_str(l, "\",\"component\":");
  put_json_string(l, component, component_len);
  put_str(l, ",\"msg\":");
  put_json_string(l, msg, msg_len);
  if (current_request_id && current_request_id[0])
    line_field(l, "requestId", current_request_id);
}

/* Adds "key":"value" (or null) whole, or not at all. Returns false once the
 * line is full, so the caller stops adding. */
static bool line_field(struct line *l, const char *key, const char *value) {
  size_t saved = l->len;
  bool ok;

  assert(strcmp(key, "ts") != 0 && strcmp(key, "level") != 0 && strcmp(key, "component") != 0 &&
         strcmp(key, "msg") != 0 && strcmp(key, "truncated") != 0 &&
         (strcmp(key, "requestId") != 0 || !current_request_id ||
          value == current_request_id)); /* line_begin wrote it */
  ok = put_str(l, ",") && put_json_string(l, key, strlen(key)) && put_str(l, ":");
  if (ok)
    ok = value ? put_json_string(l, value, strlen(value)) : put_str(l, "null");
  if (!ok) {
    l->len = saved;
    l->truncated = true;
  }
  return ok;
}

/* Closes the line (the tail always fits: TAIL_RESERVE) and writes it at once. */
static void line_finish(struct line *l) {
  static const char mark[] = ",\"truncated\":true";
  FILE *f;

  if (l->truncated) {
    memcpy(l->buf + l->len, mark, sizeof mark - 1);
    l->len += sizeof mark - 1;
  }
  l->buf[l->len++] = '}';
  l->buf[l->len++] = '\n';

  pthread_mutex_lock(&out_lock);
  f = out_file ? out_file : stderr;
  fwrite(l->buf, 1, l->len, f);
  fflush(f);
  pthread_mutex_unlock(&out_lock);
}

void ana_log_write(enum ana_log_level level, const char *component, const char *fmt, ...) {
  struct line l;
  va_list ap;
  int n;
  size_t len;
  bool truncated;

  if (!ana_log_enabled(level))
    return;
  va_start(ap, fmt);
  n = vsnprintf(msg_buf, sizeof msg_buf, fmt, ap);
  va_end(ap);
  if (n < 0) {
    n = 0;
    msg_buf[0] = '\0';
  }
  truncated = (size_t)n >= sizeof msg_buf;
  len = truncated ? utf8_trim(msg_buf, ANA_LOG_MSG_MAX) : (size_t)n;

  line_begin(&l, level, component, msg_buf, len, truncated);
  line_finish(&l);
}

void ana_log_fields(enum ana_log_level level, const char *component, const char *msg, ...) {
  struct line l;
  va_list ap;
  const char *key;
  size_t len;
  bool truncated;

  if (!ana_log_enabled(level))
    return;
  if (!msg)
    msg = "";
  len = strnlen(msg, ANA_LOG_MSG_MAX + 1);
  truncated = len > ANA_LOG_MSG_MAX;
  if (truncated)
    len = utf8_trim(msg, ANA_LOG_MSG_MAX);

  line_begin(&l, level, component, msg, len, truncated);
  va_start(ap, msg);
  while ((key = va_arg(ap, const char *)) != NULL) {
    const char *value = va_arg(ap, const char *);
    if (!line_field(&l, key, value))
      break;
  }
  va_end(ap);
  line_finish(&l);
}

/* ------------------------------------------------------------------ */
/* access log */

/* Share of successful requests logged, in millionths (an integer, so one
 * atomic load per request). */
static atomic_uint access_sample_ppm = 10000;

int ana_log_access_sample_parse(const char *s, double *out) {
  char *end;
  if (!s || !*s)
    return ANA_ERR_INVALID;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || *end || !(v >= 0.0 && v <= 1.0))
    return ANA_ERR_INVALID;
  *out = v;
  return 0;
}

void ana_log_access_set_sample(double share) {
  if (!(share >= 0.0))
    share = 0.0;
  if (share > 1.0)
    share = 1.0;
  atomic_store_explicit(&access_sample_ppm, (unsigned)(share * 1e6 + 0.5), memory_order_relaxed);
}

bool ana_log_access_sampled(bool success) {
  if (!ana_log_enabled(ANA_LOG_INFO))
    return false;
  if (!success)
    return true;
  unsigned ppm = atomic_load_explicit(&access_sample_ppm, memory_order_relaxed);
  if (ppm >= 1000000)
    return true;
  if (ppm == 0)
    return false;
  /* xorshift64*, one state per thread, seeded from the clock and the
   * state's own address (threads differ). */
  static _Thread_local uint64_t x;
  if (x == 0) {
    uint64_t ns = (uint64_t)ana_clock_mono_ns();
    x = (ns << 20) ^ (ns >> 30) ^ (uint64_t)(uintptr_t)&x;
    if (x == 0)
      x = 0x9E3779B97F4A7C15ull;
  }
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  return (unsigned)((x * 0x2545F4914F6CDD1Dull >> 32) % 1000000u) < ppm;
}

static bool line_number(struct line *l, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Adds "key":<number> whole, or not at all. */
static bool line_number(struct line *l, const char *key, const char *fmt, ...) {
  char num[48];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(num, sizeof num, fmt, ap);
  va_end(ap);
  size_t saved = l->len;
  bool ok =
      put_str(l, ",") && put_json_string(l, key, strlen(key)) && put_str(l, ":") && put_str(l, num);
  if (!ok) {
    l->len = saved;
    l->truncated = true;
  }
  return ok;
}

static long long mono_second(void);
static _Atomic unsigned long long suppressed_total;

/* At most access_max access lines per (monotonic) second; the rest are
 * counted, in ana_log_suppressed_total too, and reported in one line when
 * the second is over. */
static atomic_uint access_max = 100;
static _Atomic long long access_second;
static atomic_uint access_count, access_suppressed;

void ana_log_access_set_max_per_second(unsigned n) {
  atomic_store_explicit(&access_max, n ? n : 1, memory_order_relaxed);
}

static void access_report(void) {
  unsigned n = atomic_exchange_explicit(&access_suppressed, 0, memory_order_relaxed);
  if (n == 0)
    return;
  char count[16], max[16];
  snprintf(count, sizeof count, "%u", n);
  snprintf(max, sizeof max, "%u", atomic_load_explicit(&access_max, memory_order_relaxed));
  ana_log_fields(ANA_LOG_WARN, "access", "suppressed access lines (over ACCESS_LOG_MAX_PER_S)",
                 "suppressed", count, "max_per_s", max, NULL);
}

static void access_roll(long long now) {
  long long seen = atomic_load_explicit(&access_second, memory_order_relaxed);
  if (seen == now || !atomic_compare_exchange_strong(&access_second, &seen, now))
    return;
  atomic_store_explicit(&access_count, 0, memory_order_relaxed);
  access_report();
}

void ana_log_access(const struct ana_access_entry *e) {
  struct line l;
  char msg[512];
  if (!ana_log_enabled(ANA_LOG_INFO))
    return;
  access_roll(mono_second());
  if (atomic_fetch_add_explicit(&access_count, 1, memory_order_relaxed) >=
      atomic_load_explicit(&access_max, memory_order_relaxed)) {
    atomic_fetch_add_explicit(&access_suppressed, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&suppressed_total, 1, memory_order_relaxed);
    return;
  }
  if (e->code)
    snprintf(msg, sizeof msg, "%s%s%s %s", e->method ? e->method : "?", e->route ? " " : "",
             e->route ? e->route : "", e->code);
  else
    snprintf(msg, sizeof msg, "%s%s%s %d", e->method ? e->method : "?", e->route ? " " : "",
             e->route ? e->route : "", e->status);
  const char *saved = current_request_id;
  current_request_id = NULL; /* the entry's own id goes in its place */
  line_begin(&l, ANA_LOG_INFO, "access", msg, utf8_trim(msg, strlen(msg)), false);
  (void)(line_field(&l, "requestId", e->request_id) &&
         line_field(&l, "transport", e->transport ? e->transport : "?") &&
         line_field(&l, "method", e->method ? e->method : "?") &&
         (!e->route || line_field(&l, "route", e->route)) &&
         line_number(&l, "status", "%d", e->status) &&
         (!e->code || line_field(&l, "code", e->code)) &&
         line_number(&l, "bytesIn", "%lld", e->bytes_in) &&
         line_number(&l, "bytesOut", "%lld", e->bytes_out) &&
         line_number(&l, "durationMs", "%.3f", e->duration_ms) && line_field(&l, "peer", e->peer));
  current_request_id = saved;
  line_finish(&l);
}

/* ------------------------------------------------------------------ */
/* flood control */

/* Sites that suppressed something, pushed once each (never removed: sites
 * are statics). */
static struct ana_log_site *_Atomic suppressing_sites;

static long long mono_second(void) {
  return (long long)(ana_clock_mono_coarse_ms() / 1000);
}

/* Writes the report of what the site suppressed, if anything. */
static void report_suppressed(struct ana_log_site *site) {
  unsigned n = atomic_exchange_explicit(&site->suppressed, 0, memory_order_relaxed);
  if (n == 0)
    return;
  char count[16], where[300];
  snprintf(count, sizeof count, "%u", n);
  snprintf(where, sizeof where, "%s:%d", site->file ? site->file : "?", site->line);
  const char *component = atomic_load_explicit(&site->component, memory_order_relaxed);
  ana_log_fields(
      ANA_LOG_WARN, component ? component : "log",
      "suppressed lines of one call site (over " STRINGIFY(ANA_LOG_SITE_LINES_PER_S) " per second)",
      "suppressed", count, "site", where, NULL);
}

/* Starts a new second for the site when its current one is over; the
 * thread that starts it reports the previous second's suppressed lines. */
static void roll_second(struct ana_log_site *site, long long now) {
  long long seen = atomic_load_explicit(&site->second, memory_order_relaxed);
  if (seen == now)
    return;
  if (!atomic_compare_exchange_strong(&site->second, &seen, now))
    return; /* another thread rolled it */
  atomic_store_explicit(&site->count, 0, memory_order_relaxed);
  report_suppressed(site);
}

bool ana_log_site_admit(struct ana_log_site *site, const char *component) {
  roll_second(site, mono_second());
  if (atomic_fetch_add_explicit(&site->count, 1, memory_order_relaxed) < ANA_LOG_SITE_LINES_PER_S)
    return true;
  atomic_fetch_add_explicit(&site->suppressed, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&suppressed_total, 1, memory_order_relaxed);
  if (atomic_load_explicit(&site->listed, memory_order_acquire) == 0) {
    int expected = 0;
    if (atomic_compare_exchange_strong(&site->listed, &expected, 1)) {
      atomic_store_explicit(&site->component, component, memory_order_relaxed);
      struct ana_log_site *head = atomic_load(&suppressing_sites);
      do
        site->next = head;
      while (!atomic_compare_exchange_weak(&suppressing_sites, &head, site));
    }
  }
  return false;
}

void ana_log_flush_suppressed(void) {
  long long now = mono_second();
  if (atomic_load_explicit(&access_suppressed, memory_order_relaxed) > 0)
    access_roll(now);
  for (struct ana_log_site *s = atomic_load(&suppressing_sites); s; s = s->next)
    if (atomic_load_explicit(&s->suppressed, memory_order_relaxed) > 0)
      roll_second(s, now);
}

unsigned long long ana_log_suppressed_total(void) {
  return atomic_load_explicit(&suppressed_total, memory_order_relaxed);
}

static void collect(struct ana_prom_writer *w, void *ctx) {
  (void)ctx;
  ana_prom_write_family(w, "ana_log_suppressed_total", "counter",
                        "Log lines not written because their call site exceeded " STRINGIFY(
                            ANA_LOG_SITE_LINES_PER_S) " lines per second.");
  ana_prom_write_u64(w, "ana_log_suppressed_total", NULL, ana_log_suppressed_total());
}

int ana_log_register_metrics(void) {
  return ana_prom_register(collect, NULL);
}
