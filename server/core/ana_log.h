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

#define ANA_LOG(level, component, ...)                                                             \
  do {                                                                                             \
    if (ana_log_enabled(level))                                                                    \
      ana_log_write(level, component, __VA_ARGS__);                                                \
  } while (0)

#define ANA_ERROR(component, ...) ANA_LOG(ANA_LOG_ERROR, component, __VA_ARGS__)
#define ANA_WARN(component, ...) ANA_LOG(ANA_LOG_WARN, component, __VA_ARGS__)
#define ANA_INFO(component, ...) ANA_LOG(ANA_LOG_INFO, component, __VA_ARGS__)
#define ANA_DEBUG(component, ...) ANA_LOG(ANA_LOG_DEBUG, component, __VA_ARGS__)

#endif
