/* analyticsctl's argument helpers: a command's options by its own table, and
 * the values users type (times, numbers, KEY=VALUE / KEY:=JSON). */
#include "cli.h"
#include "ana_clock.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Index of name in the command's options, or -1. */
static int opt_index(const struct cli_command *cmd, const char *name) {
  for (int i = 0; cmd->options && cmd->options[i].name; i++)
    if (!strcmp(cmd->options[i].name, name))
      return i;
  return -1;
}

/* getopt_long's values: the option's index + OPT_BASE; 'h' and 'o' are the
 * options of every command. */
#define OPT_BASE 256

int cli_args_parse(const struct cli_command *cmd, int argc, char **argv, struct cli_args *a) {
  struct option longs[CLI_MAX_OPTS + 3];
  int n = 0, c;

  memset(a, 0, sizeof *a);
  a->cmd = cmd;
  for (; cmd->options && cmd->options[n].name; n++) {
    if (n == CLI_MAX_OPTS) {
      fprintf(stderr, "analyticsctl: %s declares more than %d options\n", cmd->name, CLI_MAX_OPTS);
      abort(); /* a programmer error, caught by any run of the command */
    }
    longs[n] = (struct option){cmd->options[n].name,
                               cmd->options[n].flags ? required_argument : no_argument, NULL,
                               OPT_BASE + n};
  }
  longs[n++] = (struct option){"help", no_argument, NULL, 'h'};
  longs[n++] = (struct option){"output", required_argument, NULL, 'o'};
  longs[n] = (struct option){NULL, 0, NULL, 0};
  optind = 1;
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":ho:", longs, NULL)) != -1) {
    if (c == 'h') {
      fputs(cmd->help, stdout);
      return -1;
    }
    if (c == 'o') {
      if (cli_format_set(optarg) < 0)
        return cli_usage(a, "-o/--output takes json or table, not \"%s\"", optarg);
      continue;
    }
    if (c == '?')
      return cli_usage(a, "unknown option %s", argv[optind - 1]);
    if (c == ':')
      return cli_usage(a, "option %s needs a value", argv[optind - 1]);
    int i = c - OPT_BASE;
    if (cmd->options[i].flags == CLI_LIST) {
      if (a->list[i].n == CLI_MAX_LIST)
        return cli_usage(a, "too many --%s", cmd->options[i].name);
      a->list[i].v[a->list[i].n++] = optarg;
    } else {
      a->val[i] = optarg ? optarg : "1";
    }
  }
  a->pos = argv + optind;
  a->n_pos = argc - optind;
  return 0;
}

static int must_index(const struct cli_args *a, const char *name) {
  int i = opt_index(a->cmd, name);

  if (i < 0) {
    fprintf(stderr, "analyticsctl: %s has no option --%s\n", a->cmd->name, name);
    abort(); /* a programmer error */
  }
  return i;
}

const char *cli_opt(const struct cli_args *a, const char *name) {
  return a->val[must_index(a, name)];
}

const struct cli_list *cli_list(const struct cli_args *a, const char *name) {
  return &a->list[must_index(a, name)];
}

int cli_only(const struct cli_args *a, const char *what, const char *const *allowed) {
  for (int i = 0; a->cmd->options && a->cmd->options[i].name; i++) {
    const char *name = a->cmd->options[i].name;
    const char *const *p = allowed;
    if (!a->val[i] && !a->list[i].n)
      continue;
    while (*p && strcmp(*p, name))
      p++;
    if (!*p)
      return cli_usage(a, "%s does not take --%s", what, name);
  }
  return 0;
}

int cli_no_more(const struct cli_args *a, int n) {
  if (a->n_pos > n)
    return cli_usage(a, "unexpected argument \"%s\"", a->pos[n]);
  return 0;
}

const char *cli_need_id(const struct cli_args *a, const char *verb, int *status) {
  if (a->n_pos < 2) {
    *status = cli_usage(a, "%s %s needs an ID", a->cmd->name, verb);
    return NULL;
  }
  if ((*status = cli_no_more(a, 2)) != 0)
    return NULL;
  return a->pos[1];
}

int cli_limit(const struct cli_args *a, long *out) {
  const char *v = cli_opt(a, "limit");

  *out = 0;
  if (v && cli_parse_long(v, 1, 1000000, out) < 0)
    return cli_usage(a, "--limit takes a number from 1 to 1000000");
  return 0;
}

int cli_parse_long(const char *s, long min, long max, long *out) {
  char *end;
  long v;

  errno = 0;
  v = strtol(s, &end, 10);
  if (errno || !*s || *end || v < min || v > max)
    return -1;
  *out = v;
  return 0;
}

int cli_parse_time(const char *s, int64_t *ms) {
  size_t len = strlen(s);
  char *end;

  if (!strcmp(s, "now")) {
    *ms = ana_clock_wall_ms();
    return 0;
  }
  if (s[0] == '-') {
    double v = strtod(s + 1, &end);
    long unit = !strcmp(end, "s")   ? 1000
                : !strcmp(end, "m") ? 60000
                : !strcmp(end, "h") ? 3600000
                : !strcmp(end, "d") ? 86400000
                                    : 0;
    if (end == s + 1 || !unit || !isfinite(v) || v < 0 || strspn(s + 1, "0123456789.") == 0)
      return -1;
    *ms = ana_clock_wall_ms() - (int64_t)(v * (double)unit);
    return 0;
  }
  if (len > 0 && len < 16 && strspn(s, "0123456789") == len) {
    *ms = strtoll(s, NULL, 10);
    return 0;
  }
  /* A date alone is that day's UTC midnight; everything else is the
   * server's RFC 3339 (so what is accepted here is what it accepts). */
  if (len == 10) {
    char full[32];
    snprintf(full, sizeof full, "%sT00:00:00Z", s);
    return analytics_parse_timestamp(full, ms, NULL) == 0 ? 0 : -1;
  }
  return analytics_parse_timestamp(s, ms, NULL) == 0 ? 0 : -1;
}

json_t *cli_time_json(int64_t ms) {
  char buf[40];
  time_t t = (time_t)(ms / 1000);
  struct tm tm;

  gmtime_r(&t, &tm);
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + strlen(buf), sizeof buf - strlen(buf), ".%03dZ", (int)(ms % 1000));
  return json_string(buf);
}

int cli_kv(const char *item, char *key, size_t keymax, json_t **value) {
  const char *eq = strchr(item, '=');
  bool is_json = eq && eq > item && eq[-1] == ':';
  size_t klen = eq ? (size_t)(eq - item) - is_json : 0;

  *value = NULL;
  if (!eq || klen == 0 || klen >= keymax)
    return -1;
  memcpy(key, item, klen);
  key[klen] = '\0';
  *value = is_json ? json_loads(eq + 1, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL)
                   : json_string(eq + 1);
  return *value ? 0 : -1;
}

int cli_kv_object(const struct cli_args *a, const char *opt, bool json, json_t **out) {
  const struct cli_list *l = cli_list(a, opt);
  char key[256];
  json_t *v;

  *out = json_object();
  for (size_t i = 0; i < l->n; i++) {
    const char *eq = strchr(l->v[i], '=');
    bool is_json = eq && eq > l->v[i] && eq[-1] == ':';
    if ((is_json && !json) || cli_kv(l->v[i], key, sizeof key, &v) < 0) {
      json_decref(*out);
      *out = NULL;
      return cli_usage(a, "--%s takes KEY=VALUE%s, not \"%s\"", opt, json ? " or KEY:=JSON" : "",
                       l->v[i]);
    }
    json_object_set_new(*out, key, v);
  }
  return 0;
}
