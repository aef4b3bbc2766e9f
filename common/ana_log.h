/* Structured logging: one JSON object per line, with a level and a component on every line. */
#ifndef ANA_LOG_H
#define ANA_LOG_H

#include <stdbool.h>
#include <stdio.h>

enum ana_log_level {
  ANA_LOG_ERROR = 0,
  ANA_LOG_WARN,
  ANA_LOG_INFO,
  ANA_LOG_DEBUG,
};

/* A formatted message longer than this many bytes is cut at a character
 * boundary and the line gets "truncated":true. */
#define ANA_LOG_MSG_MAX 8192

/* A whole line (escaped message and fields included) never exceeds this many
 * bytes; fields that do not fit are dropped and the line gets "truncated":true. */
#define ANA_LOG_LINE_MAX 16384

/* Parses "error", "warn", "info" or "debug" (any case) into *out.
 * Returns 0, or ANA_ERR_INVALID (and leaves *out alone) for anything else. */
int ana_log_level_parse(const char *s, enum ana_log_level *out);

/* The level's name as ana_log_level_parse accepts it; "unknown" when out of range. */
const char *ana_log_level_name(enum ana_log_level level);

/* Lines above this level are dropped before they are formatted. The default is
 * ANA_LOG_INFO. Thread-safe; takes effect for lines not yet started. */
void ana_log_set_level(enum ana_log_level level);

/* Where lines go: f is borrowed and must stay open until it is replaced; NULL
 * restores the default, stderr. Each line is flushed as it is written. */
void ana_log_set_output(FILE *f);

/* Whether a line at this level would be written. Cheap (one atomic load), so
 * callers may guard expensive argument preparation with it. */
bool ana_log_enabled(enum ana_log_level level);

/* Writes {"ts","level","component","msg"} with msg formatted printf-style.
 * component should be a short literal ("rpc", "store"). Thread-safe: a line is
 * written with one call under a lock, so lines of different threads never mix.
 * May block briefly on the output. Prefer the ANA_* macros, which skip
 * evaluating the arguments when the level is disabled. */
void ana_log_write(enum ana_log_level level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like ana_log_write with a fixed msg plus extra string fields: key/value pairs
 * after msg, ended by a NULL key. A NULL value is written as JSON null. Keys
 * must not be "ts", "level", "component", "msg" or "truncated". Example:
 *   ana_log_fields(ANA_LOG_INFO, "rpc", "call done", "method", "/x/Y", "code", "OK", NULL); */
void ana_log_fields(enum ana_log_level level, const char *component, const char *msg, ...)
    __attribute__((sentinel));

/* --- request ids --- */

/* The request id of the call this thread is working on (borrowed: it must
 * stay valid until cleared, and is read when each line is written, so a
 * buffer filled later counts); every line the thread writes meanwhile
 * carries it as "requestId" (not while it is ""). NULL clears it.
 * Transports set it around the handler callbacks they run. */
void ana_log_set_request_id(const char *id);

/* This thread's current request id, or NULL. */
const char *ana_log_request_id(void);

/* --- access log --- */

/* One finished request or call, as one access-log line:
 * {"ts","level":"info","component":"access","msg":"<method> <route> <status>",
 *  "requestId","transport","method","route","status","code","bytesIn","bytesOut",
 *  "durationMs","peer"}. */
struct ana_access_entry {
  const char *transport;  /* "http", "websocket" or "grpc" */
  const char *request_id; /* NULL: none */
  const char *method;     /* HTTP method; for gRPC the RPC path */
  const char *route;      /* the route's template or the request path; NULL for gRPC */
  int status;             /* HTTP status, WebSocket close code, or gRPC status code */
  const char *code;       /* gRPC status name (also REST's answer, when known); NULL: none */
  long long bytes_in;     /* request bytes (bodies, messages) */
  long long bytes_out;    /* answer bytes (bodies, messages) */
  double duration_ms;
  const char *peer; /* the client's address */
  bool success;     /* 2xx, a WebSocket closed with 1000/1001, gRPC OK: sampled */
};

/* ACCESS_LOG_SAMPLE: the share (0 to 1) of successful requests logged;
 * every other one is. Parses "0.01", "1", "0". Returns 0 or ANA_ERR_INVALID. */
int ana_log_access_sample_parse(const char *s, double *out);
/* Sets the share; the default is 0.01. Thread-safe. */
void ana_log_access_set_sample(double share);
/* Whether a request with this outcome gets a line (the sampling draw for a
 * successful one). Cheap; thread-safe. */
bool ana_log_access_sampled(bool success);
/* Writes e's line at info level. At most ACCESS_LOG_MAX_PER_S lines a
 * second (a flood of failures is not sampled): the rest are counted in
 * ana_log_suppressed_total and reported in one warn line, {"component":
 * "access","msg":"suppressed access lines (over ACCESS_LOG_MAX_PER_S)",
 * "suppressed":"N"}, once the second is over. */
void ana_log_access(const struct ana_access_entry *e);
/* ACCESS_LOG_MAX_PER_S (default 100; 0 counts as 1). Thread-safe. */
void ana_log_access_set_max_per_second(unsigned n);

/* Flood control: each call site of the ANA_* macros writes at most
 * ANA_LOG_SITE_LINES_PER_S lines per second. The rest are counted, added to
 * the Prometheus counter ana_log_suppressed_total, and reported in one line
 * per site ("suppressed N lines", with the site) when the site's second
 * ends: on the site's next line, or by ana_log_flush_suppressed, which the
 * server calls a few times a second. */
#define ANA_LOG_SITE_LINES_PER_S 10

/* One call site's state: a static in each macro expansion, zero-initialised,
 * updated with atomics only (no lock, no allocation). */
struct ana_log_site {
  const char *file;
  int line;
  const char *_Atomic component;     /* set by the first suppressed line */
  _Atomic long long second;          /* monotonic second of the current window */
  _Atomic unsigned count;            /* lines attempted in it */
  _Atomic unsigned suppressed;       /* not written and not yet reported */
  _Atomic int listed;                /* on the list ana_log_flush_suppressed walks */
  struct ana_log_site *_Atomic next; /* that list */
};

/* Whether the site may write a line now (counting it); false means it is
 * suppressed. May first report what the site suppressed in an earlier
 * second. Thread-safe and lock-free. */
bool ana_log_site_admit(struct ana_log_site *site, const char *component);

/* Reports, one line per site, the lines suppressed in seconds that are over.
 * Thread-safe; cheap when nothing was suppressed. */
void ana_log_flush_suppressed(void);

/* Lines suppressed since the start (ana_log_suppressed_total). */
unsigned long long ana_log_suppressed_total(void);

/* Adds ana_log_suppressed_total to /metrics. Returns 0 or ANA_ERR_FULL. */
int ana_log_register_metrics(void);

#define ANA_LOG(level, component, ...)                                                             \
  do {                                                                                             \
    static struct ana_log_site ana_log_site_ = {.file = __FILE__, .line = __LINE__};               \
    if (ana_log_enabled(level)) {                                                                  \
      if (ana_log_site_admit(&ana_log_site_, component))                                           \
        ana_log_write(level, component, __VA_ARGS__);                                              \
    }                                                                                              \
  } while (0)

#define ANA_ERROR(component, ...) ANA_LOG(ANA_LOG_ERROR, component, __VA_ARGS__)
#define ANA_WARN(component, ...) ANA_LOG(ANA_LOG_WARN, component, __VA_ARGS__)
#define ANA_INFO(component, ...) ANA_LOG(ANA_LOG_INFO, component, __VA_ARGS__)
#define ANA_DEBUG(component, ...) ANA_LOG(ANA_LOG_DEBUG, component, __VA_ARGS__)

#endif
