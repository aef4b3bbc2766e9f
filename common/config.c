/* The configuration engine: loads modules' tables of variables into their settings structs and
 * writes --help, .env.example and the README table from them. */
#include "ana_config_table.h"

#include "ana_alloc.h"
#include "ana_log.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PATH_MAX_LEN 4095
#define QUOTED_VALUE_MAX 64

static const char *last_char(const char *s, size_t n, char c);

/* ---- value checks ---- */

static bool is_hostname(const char *s, size_t n) {
  if (n == 0 || n > 253 || s[0] == '-' || s[0] == '.')
    return false;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (!isalnum(c) && c != '-' && c != '.' && c != '_')
      return false;
  }
  return true;
}

static bool is_ipv6(const char *s, size_t n) {
  size_t colons = 0;
  if (n < 2 || n > 45)
    return false;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == ':')
      colons++;
    else if (!isxdigit(c) && c != '.')
      return false;
  }
  return colons >= 2;
}

static bool is_port_text(const char *s, size_t n) {
  long v = 0;
  if (n == 0 || n > 5)
    return false;
  for (size_t i = 0; i < n; i++) {
    if (!isdigit((unsigned char)s[i]))
      return false;
    v = v * 10 + (s[i] - '0');
  }
  return v >= 1 && v <= 65535;
}

/* host, host:port, [v6], [v6]:port or a bare IPv6 address. */
static bool is_host_port(const char *s, size_t n) {
  const char *colon;
  size_t colons = 0;

  if (n > 0 && s[0] == '[') {
    const char *close = memchr(s, ']', n);
    size_t inside, rest;
    if (!close)
      return false;
    inside = (size_t)(close - s) - 1;
    rest = n - inside - 2;
    if (!is_ipv6(s + 1, inside))
      return false;
    return rest == 0 || (close[1] == ':' && is_port_text(close + 2, rest - 1));
  }
  for (size_t i = 0; i < n; i++)
    colons += s[i] == ':';
  if (colons == 0)
    return is_hostname(s, n);
  if (colons > 1)
    return is_ipv6(s, n);
  colon = memchr(s, ':', n);
  return is_hostname(s, (size_t)(colon - s)) &&
         is_port_text(colon + 1, n - (size_t)(colon - s) - 1);
}

static const char *last_char(const char *s, size_t n, char c) {
  while (n > 0) {
    if (s[--n] == c)
      return s + n;
  }
  return NULL;
}

static bool has_control_or_space(const char *s) {
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c <= ' ' || c == 0x7f)
      return true;
  }
  return false;
}

/* Whether s starts with "<scheme>://" for one of the space-separated schemes. */
static bool has_scheme(const char *s, const char *schemes) {
  const char *p = schemes;
  while (*p) {
    size_t len = strcspn(p, " ");
    if (strncasecmp(s, p, len) == 0 && strncmp(s + len, "://", 3) == 0)
      return true;
    p += len;
    p += strspn(p, " ");
  }
  return false;
}

static bool valid_url(const char *s, const char *schemes) {
  const char *sep = strstr(s, "://");
  return has_scheme(s, schemes) && sep[3] != '\0' && !has_control_or_space(s);
}

bool ana_config_valid_bind_host(const char *s) {
  size_t n = strlen(s);
  if (n >= 2 && s[0] == '[' && s[n - 1] == ']')
    return is_ipv6(s + 1, n - 2);
  return is_hostname(s, n) || is_ipv6(s, n);
}

bool ana_config_valid_host_or_url(const char *s) {
  const char *authority, *at;
  size_t n;

  if (has_control_or_space(s))
    return false;
  if (!strstr(s, "://"))
    return is_host_port(s, strlen(s));
  if (!has_scheme(s, "http https"))
    return false;
  authority = strstr(s, "://") + 3;
  n = strcspn(authority, "/?#");
  at = last_char(authority, n, '@');
  if (at) {
    n -= (size_t)(at + 1 - authority);
    authority = at + 1;
  }
  return is_host_port(authority, n);
}

const char *ana_config_list_next(const char **cursor, size_t *len) {
  const char *p = *cursor + strspn(*cursor, ", ");
  if (!*p)
    return NULL;
  *len = strcspn(p, ", ");
  *cursor = p + *len;
  return p;
}

bool ana_config_valid_list(const char *s, bool (*item_ok)(const char *item, size_t len)) {
  bool any = false;
  size_t n;
  for (const char *item; (item = ana_config_list_next(&s, &n));) {
    if (!item_ok(item, n))
      return false;
    any = true;
  }
  return any;
}

static bool valid_path(const char *s) {
  if (strlen(s) > PATH_MAX_LEN)
    return false;
  for (; *s; s++) {
    if ((unsigned char)*s < ' ' || *s == 0x7f)
      return false;
  }
  return true;
}

/* ---- parsing ---- */

/* A whole decimal integer: an optional '-', digits and nothing else. */
static int parse_integer(const char *s, long long *out) {
  const char *digits = s[0] == '-' ? s + 1 : s;
  char *end;
  long long v;

  if (!isdigit((unsigned char)digits[0]))
    return ANA_ERR_INVALID;
  errno = 0;
  v = strtoll(s, &end, 10);
  if (errno == ERANGE || *end != '\0')
    return ANA_ERR_INVALID;
  *out = v;
  return 0;
}

int ana_config_parse_duration_ms(const char *s, long long *out) {
  long long v = 0, unit;
  size_t i = 0;

  if (!s || !isdigit((unsigned char)s[0]))
    return ANA_ERR_INVALID;
  for (; isdigit((unsigned char)s[i]); i++) {
    int d = s[i] - '0';
    if (v > (LLONG_MAX - d) / 10)
      return ANA_ERR_INVALID;
    v = v * 10 + d;
  }
  if (s[i] == '\0' || strcmp(s + i, "ms") == 0)
    unit = 1;
  else if (strcmp(s + i, "s") == 0)
    unit = 1000;
  else if (strcmp(s + i, "m") == 0)
    unit = 60000;
  else if (strcmp(s + i, "h") == 0)
    unit = 3600000;
  else
    return ANA_ERR_INVALID;
  if (v > LLONG_MAX / unit)
    return ANA_ERR_INVALID;
  *out = v * unit;
  return 0;
}

int ana_config_parse_bool(const char *s, bool *out) {
  static const char *const yes[] = {"true", "1", "yes"};
  static const char *const no[] = {"false", "0", "no"};

  if (!s)
    return ANA_ERR_INVALID;
  for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
    if (strcasecmp(s, yes[i]) == 0) {
      *out = true;
      return 0;
    }
    if (strcasecmp(s, no[i]) == 0) {
      *out = false;
      return 0;
    }
  }
  return ANA_ERR_INVALID;
}

/* ---- descriptions, shared by error messages and documentation ---- */

static void bounds(const struct ana_config_row *v, long long *min, long long *max) {
  if (v->type == ANA_CONFIG_PORT) {
    *min = 1;
    *max = 65535;
  } else {
    *min = v->min;
    *max = v->max;
  }
}

/* What the variable accepts, as a noun phrase: "a port (1-65535)". */
static void describe_expected(const struct ana_config_row *v, char *buf, size_t size) {
  long long min, max;

  bounds(v, &min, &max);
  switch (v->type) {
  case ANA_CONFIG_STRING: snprintf(buf, size, "%s", v->expect ? v->expect : "a string"); break;
  case ANA_CONFIG_PATH: snprintf(buf, size, "a directory path"); break;
  case ANA_CONFIG_URL: {
    size_t len = (size_t)snprintf(buf, size, "a URL starting with");
    const char *p = v->schemes;
    while (*p && len < size) {
      size_t n = strcspn(p, " ");
      const char *next = p + n + strspn(p + n, " ");
      const char *sep = p == v->schemes ? "" : *next ? "," : " or";
      len += (size_t)snprintf(buf + len, size - len, "%s %.*s://", sep, (int)n, p);
      p = next;
    }
    break;
  }
  case ANA_CONFIG_INT: snprintf(buf, size, "an integer from %lld to %lld", min, max); break;
  case ANA_CONFIG_PORT: snprintf(buf, size, "a port (%lld-%lld)", min, max); break;
  case ANA_CONFIG_DURATION:
    snprintf(buf, size,
             "a duration from %lld to %lld ms (plain milliseconds, or with a suffix ms, s, m or h)",
             min, max);
    break;
  case ANA_CONFIG_LOG_LEVEL: snprintf(buf, size, "a log level (error, warn, info or debug)"); break;
  case ANA_CONFIG_BOOL: snprintf(buf, size, "a boolean (true/false, 1/0, yes/no)"); break;
  }
}

/* The full description used by --help, .env.example and the README. */
static void describe(const struct ana_config_row *v, char *buf, size_t size) {
  char expected[256];
  size_t len;

  describe_expected(v, expected, sizeof expected);
  len = (size_t)snprintf(buf, size, "%s Accepts %s.", v->help, expected);
  if (v->status == ANA_CONFIG_NOT_YET_SUPPORTED && len < size)
    snprintf(buf + len, size - len,
             " Not yet supported: if set, the value is validated, then ignored with a warning"
             " (%s).",
             v->instead);
}

/* Copies value into buf for an error message: quoted characters and control
 * characters escaped, cut after QUOTED_VALUE_MAX bytes, and the password of a
 * URL (scheme://user:password@host) replaced by ***, since messages are logged. */
static void quote_value(const char *value, char *buf, size_t size) {
  size_t mask_from = 0, mask_to = 0, len = 0, i;
  const char *sep = strstr(value, "://");

  if (sep) {
    const char *auth = sep + 3;
    size_t n = strcspn(auth, "/?#");
    const char *at = last_char(auth, n, '@');
    const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    if (colon) {
      mask_from = (size_t)(colon + 1 - value);
      mask_to = (size_t)(at - value);
    }
  }
  for (i = 0; value[i] && len + 8 < size; i++) {
    unsigned char c = (unsigned char)value[i];
    if (i >= QUOTED_VALUE_MAX) {
      len += (size_t)snprintf(buf + len, size - len, "...");
      break;
    }
    if (i == mask_from && mask_to > mask_from) {
      len += (size_t)snprintf(buf + len, size - len, "***");
      i = mask_to - 1;
    } else if (c == '"' || c == '\\') {
      len += (size_t)snprintf(buf + len, size - len, "\\%c", c);
    } else if (c < ' ' || c == 0x7f) {
      len += (size_t)snprintf(buf + len, size - len, "\\x%02x", c);
    } else {
      buf[len++] = (char)c;
    }
  }
  buf[len] = '\0';
}

static int bad_value(const struct ana_config_row *v, const char *value, struct ana_error *err) {
  char quoted[QUOTED_VALUE_MAX * 4 + 8], expected[256];

  quote_value(value, quoted, sizeof quoted);
  describe_expected(v, expected, sizeof expected);
  ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "%s: \"%s\" is not %s", v->name, quoted,
                expected);
  return ANA_ERR_INVALID;
}

/* ---- loading ---- */

static void *field_of(void *settings, const struct ana_config_row *v) {
  return (char *)settings + v->offset;
}

static bool is_string_type(enum ana_config_type type) {
  return type == ANA_CONFIG_STRING || type == ANA_CONFIG_PATH || type == ANA_CONFIG_URL;
}

static void store_number(void *cfg, const struct ana_config_row *v, long long n) {
  void *field = field_of(cfg, v);
  if (v->size == sizeof(int)) {
    assert(n >= INT_MIN && n <= INT_MAX);
    *(int *)field = (int)n;
  } else {
    assert(v->size == sizeof(long) && n >= LONG_MIN && n <= LONG_MAX);
    *(long *)field = (long)n;
  }
}

static int set_var(void *cfg, const struct ana_config_row *v, const char *value,
                   struct ana_error *err) {
  void *field = field_of(cfg, v);
  long long n = 0, min, max;
  bool ok = false;

  if (value[0] == '\0') {
    /* Unset with no default: only strings may be, and they stay NULL. */
    assert(is_string_type(v->type));
    *(char **)field = NULL;
    return 0;
  }
  bounds(v, &min, &max);
  switch (v->type) {
  case ANA_CONFIG_STRING: ok = !v->check || v->check(value); break;
  case ANA_CONFIG_PATH: ok = valid_path(value); break;
  case ANA_CONFIG_URL: ok = valid_url(value, v->schemes); break;
  case ANA_CONFIG_INT:
  case ANA_CONFIG_PORT: ok = parse_integer(value, &n) == 0 && n >= min && n <= max; break;
  case ANA_CONFIG_DURATION:
    ok = ana_config_parse_duration_ms(value, &n) == 0 && n >= min && n <= max;
    break;
  case ANA_CONFIG_LOG_LEVEL: {
    enum ana_log_level level;
    assert(v->size == sizeof level);
    ok = ana_log_level_parse(value, &level) == 0;
    if (ok)
      *(enum ana_log_level *)field = level;
    break;
  }
  case ANA_CONFIG_BOOL: {
    bool b;
    assert(v->size == sizeof b);
    ok = ana_config_parse_bool(value, &b) == 0;
    if (ok)
      *(bool *)field = b;
    break;
  }
  }
  if (!ok)
    return bad_value(v, value, err);

  if (is_string_type(v->type)) {
    char *copy = ana_strdup(value);
    assert(v->size == sizeof(char *));
    if (!copy) {
      ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "%s: out of memory", v->name);
      return ANA_ERR_NOMEM;
    }
    *(char **)field = copy;
  } else if (v->type == ANA_CONFIG_INT || v->type == ANA_CONFIG_PORT ||
             v->type == ANA_CONFIG_DURATION) {
    store_number(cfg, v, n);
  }
  return 0;
}

/* Appends one bad variable's message to all (separated by "; "), and reports it. */
static void note_bad(const struct ana_error *one, struct ana_error *all, bool first,
                     ana_config_report_fn report, void *report_ctx) {
  if (report)
    report(one->message, report_ctx);
  if (!all)
    return;
  if (first) {
    *all = *one;
    return;
  }
  size_t len = strlen(all->message), room = sizeof all->message - len - 1;
  size_t add = strlen(one->message);
  if (room < 2 + add)
    return; /* the messages so far fill it; each was also reported */
  memcpy(all->message + len, "; ", 2);
  memcpy(all->message + len + 2, one->message, add + 1);
}

int ana_config_table_load(const struct ana_config_binding *bindings, size_t n,
                          ana_getenv_fn getenv_fn, void *ctx, ana_config_report_fn report,
                          void *report_ctx, struct ana_error *err) {
  int rc = 0;

  /* Zero every field first (the structs may be uninitialized): nothing to free yet. */
  for (size_t b = 0; b < n; b++)
    for (size_t i = 0; i < bindings[b].table->n_rows; i++)
      memset(field_of(bindings[b].settings, &bindings[b].table->rows[i]), 0,
             bindings[b].table->rows[i].size);
  for (size_t b = 0; b < n; b++) {
    const struct ana_config_table *t = bindings[b].table;
    for (size_t i = 0; i < t->n_rows; i++) {
      const struct ana_config_row *v = &t->rows[i];
      const char *value = getenv_fn ? getenv_fn(v->name, ctx) : getenv(v->name);
      struct ana_error one;
      ana_error_clear(&one);
      if (!value || value[0] == '\0')
        value = v->def;
      int vrc = set_var(bindings[b].settings, v, value, &one);
      if (vrc == ANA_ERR_NOMEM) {
        if (err)
          *err = one;
        rc = vrc;
        goto out;
      }
      if (vrc < 0) {
        note_bad(&one, err, rc == 0, report, report_ctx);
        rc = vrc;
      }
    }
  }
out:
  if (rc < 0)
    ana_config_table_fini(bindings, n);
  return rc;
}

void ana_config_table_fini(const struct ana_config_binding *bindings, size_t n) {
  for (size_t b = 0; b < n; b++) {
    const struct ana_config_table *t = bindings[b].table;
    if (!bindings[b].settings)
      continue;
    for (size_t i = 0; i < t->n_rows; i++) {
      const struct ana_config_row *v = &t->rows[i];
      void *field = field_of(bindings[b].settings, v);
      if (is_string_type(v->type))
        ana_free(*(char **)field);
      memset(field, 0, v->size);
    }
  }
}

void ana_config_table_each_unsupported(const struct ana_config_binding *bindings, size_t n,
                                       void (*fn)(const char *name, const char *what, void *ctx),
                                       void *ctx) {
  for (size_t b = 0; b < n; b++) {
    const struct ana_config_table *t = bindings[b].table;
    for (size_t i = 0; i < t->n_rows; i++) {
      const struct ana_config_row *v = &t->rows[i];
      char what[256];
      if (v->status != ANA_CONFIG_NOT_YET_SUPPORTED)
        continue;
      assert(is_string_type(v->type) && v->feature && v->instead);
      if (*(char *const *)((const char *)bindings[b].settings + v->offset) == NULL)
        continue;
      snprintf(what, sizeof what, "%s is not yet supported; %s", v->feature, v->instead);
      fn(v->name, what, ctx);
    }
  }
}

/* ---- documentation ---- */

/* Writes text word-wrapped to width columns, each line starting with prefix. */
static void write_wrapped(FILE *out, const char *prefix, const char *text, size_t width) {
  size_t col = 0;

  while (*text) {
    size_t word = strcspn(text, " ");
    if (col > 0 && col + 1 + word > width) {
      fputc('\n', out);
      col = 0;
    }
    if (col == 0) {
      fputs(prefix, out);
      col = strlen(prefix);
    } else {
      fputc(' ', out);
      col++;
    }
    fwrite(text, 1, word, out);
    col += word;
    text += word;
    text += strspn(text, " ");
  }
  if (col > 0)
    fputc('\n', out);
}

void ana_config_table_write_help(const struct ana_config_binding *bindings, size_t n, FILE *out) {
  char text[1024];

  fputs("Environment variables (an empty value counts as unset, so the default applies):\n", out);
  for (size_t b = 0; b < n; b++) {
    const struct ana_config_table *t = bindings[b].table;
    for (size_t i = 0; i < t->n_rows; i++) {
      const struct ana_config_row *v = &t->rows[i];
      if (v->def[0])
        fprintf(out, "  %s (default %s)\n", v->name, v->def);
      else
        fprintf(out, "  %s (unset by default)\n", v->name);
      describe(v, text, sizeof text);
      write_wrapped(out, "      ", text, 79);
    }
  }
}

void ana_config_table_write_env_example(const struct ana_config_binding *bindings, size_t n,
                                        FILE *out) {
  char text[1024];

  fputs("# analyticsd configuration: copy this file to .env and change what you need.\n"
        "# Every variable is optional; an empty value counts as unset, so the default\n"
        "# applies. Generated from the modules' configuration rows (see README.md,\n"
        "# Layout); the unit tests check that the two agree.\n",
        out);
  for (size_t b = 0; b < n; b++) {
    const struct ana_config_table *t = bindings[b].table;
    for (size_t i = 0; i < t->n_rows; i++) {
      const struct ana_config_row *v = &t->rows[i];
      describe(v, text, sizeof text);
      fputc('\n', out);
      write_wrapped(out, "# ", text, 79);
      fprintf(out, "%s=%s\n", v->name, v->def);
    }
  }
}

/* Writes text for a table cell, escaping what Markdown would interpret. */
static void write_markdown_text(FILE *out, const char *text) {
  for (; *text; text++) {
    if (strchr("\\|*_`<[]", *text))
      fputc('\\', out);
    fputc(*text, out);
  }
}

void ana_config_table_write_markdown(const struct ana_config_binding *bindings, size_t n,
                                     FILE *out) {
  char text[1024];

  fputs("| Variable | Default | Description |\n|---|---|---|\n", out);
  for (size_t b = 0; b < n; b++) {
    const struct ana_config_table *t = bindings[b].table;
    for (size_t i = 0; i < t->n_rows; i++) {
      const struct ana_config_row *v = &t->rows[i];
      fprintf(out, "| `%s` | ", v->name);
      if (v->def[0])
        fprintf(out, "`%s`", v->def);
      else
        fputs("unset", out);
      fputs(" | ", out);
      describe(v, text, sizeof text);
      write_markdown_text(out, text);
      fputs(" |\n", out);
    }
  }
}
