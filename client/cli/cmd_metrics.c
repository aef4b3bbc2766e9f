/* analyticsctl metrics: the metric catalog (list, get, create, update,
 * delete) and a metric's data. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char help[] =
    "usage: analyticsctl metrics list [--limit N] [--page TOKEN] [--all]\n"
    "       analyticsctl metrics get ID\n"
    "       analyticsctl metrics create --name N --formula F [--type T] [--unit U]\n"
    "                                   [--aggregation A] [--description D]\n"
    "                                   [--dimension D]... [--filter FIELD:OP[:VALUE]]...\n"
    "                                   [--variable NAME=EXPR]...\n"
    "       analyticsctl metrics update ID [the options of create]\n"
    "       analyticsctl metrics delete ID\n"
    "       analyticsctl metrics data ID [--from TIME] [--to TIME] [--interval I]\n"
    "                                    [--time-zone TZ] [--top-n N]\n"
    "                                    [--dimension-filter KEY=VALUE]...\n"
    "\n"
    "  --type           counter, gauge (default) or histogram\n"
    "  --aggregation    avg (default), sum, min, max, last or count\n"
    "  --filter         e.g. campaignId:eq:123, amount:gt:10, tier:in:gold,silver,\n"
    "                   sessionId:exists (numbers for gt/gte/lt/lte, a list for in)\n"
    "  --variable       a name the formula may use, e.g. sent=count(message_sent)\n"
    "  update           reads the metric, applies the options given (a repeated option\n"
    "                   replaces its whole list) and replaces the definition\n"
    "  --interval       1m, 5m, 1h, 1d or auto;  --time-zone  an IANA name\n"
    "  TIME             RFC 3339 (2024-05-01T10:00:00Z), a date alone, Unix ms, now,\n"
    "                   or relative to now (-1h, -7d)\n";

static const struct cli_option options[] = {{"name", CLI_VALUE},
                                            {"type", CLI_VALUE},
                                            {"formula", CLI_VALUE},
                                            {"unit", CLI_VALUE},
                                            {"aggregation", CLI_VALUE},
                                            {"description", CLI_VALUE},
                                            {"dimension", CLI_LIST},
                                            {"filter", CLI_LIST},
                                            {"variable", CLI_LIST},
                                            {"from", CLI_VALUE},
                                            {"to", CLI_VALUE},
                                            {"interval", CLI_VALUE},
                                            {"time-zone", CLI_VALUE},
                                            {"top-n", CLI_VALUE},
                                            {"dimension-filter", CLI_LIST},
                                            {"limit", CLI_VALUE},
                                            {"page", CLI_VALUE},
                                            {"all", CLI_FLAG},
                                            {NULL, 0}};

static const char *const def_opts[] = {"name",        "type",        "formula",   "unit",
                                       "aggregation", "description", "dimension", "filter",
                                       "variable",    NULL};

static const char *const columns[] = {"metricId", "name",        "type", "formula",
                                      "unit",     "aggregation", NULL};
static const struct cli_view list_view = {"metrics", columns};

/* "field:op[:value]" as a MetricFilter. */
static json_t *metric_filter(const char *spec) {
  const char *c1 = strchr(spec, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL, *v;
  char field[256], op[32];
  size_t oplen;
  json_t *f;

  if (!c1 || c1 == spec || (size_t)(c1 - spec) >= sizeof field)
    return NULL;
  memcpy(field, spec, (size_t)(c1 - spec));
  field[c1 - spec] = '\0';
  oplen = c2 ? (size_t)(c2 - c1 - 1) : strlen(c1 + 1);
  if (!oplen || oplen >= sizeof op)
    return NULL;
  memcpy(op, c1 + 1, oplen);
  op[oplen] = '\0';
  f = json_pack("{ssss}", "field", field, "op", op);
  if (!c2)
    return f; /* exists */
  v = c2 + 1;
  if (!strcmp(op, "in")) {
    json_t *arr = json_array();
    char *copy = strdup(v), *save = NULL;
    for (char *t = copy ? strtok_r(copy, ",", &save) : NULL; t; t = strtok_r(NULL, ",", &save))
      json_array_append_new(arr, json_string(t));
    free(copy);
    json_object_set_new(f, "value", arr);
  } else if (!strcmp(op, "gt") || !strcmp(op, "gte") || !strcmp(op, "lt") || !strcmp(op, "lte")) {
    /* A number the formula compares with; anything else stays a string
     * for the server to refuse by name. */
    json_t *n = json_loads(v, JSON_DECODE_ANY, NULL);
    json_object_set_new(f, "value", json_is_number(n) ? n : json_string(v));
    if (!json_is_number(n))
      json_decref(n);
  } else {
    json_object_set_new(f, "value", json_string(v));
  }
  return f;
}

/* Applies create/update options to the metric object m. */
static int apply(const struct cli_args *a, json_t *m) {
  const struct cli_list *filters = cli_list(a, "filter");
  json_t *vars = NULL;
  int status;

  cli_set_str(m, "name", cli_opt(a, "name"));
  cli_set_str(m, "type", cli_opt(a, "type"));
  cli_set_str(m, "formula", cli_opt(a, "formula"));
  cli_set_str(m, "unit", cli_opt(a, "unit"));
  cli_set_str(m, "aggregation", cli_opt(a, "aggregation"));
  cli_set_str(m, "description", cli_opt(a, "description"));
  cli_set_list(m, "dimensions", cli_list(a, "dimension"));
  if (filters->n) {
    json_t *arr = json_array();
    for (size_t i = 0; i < filters->n; i++) {
      json_t *f = metric_filter(filters->v[i]);
      if (!f) {
        json_decref(arr);
        return cli_usage(a, "--filter takes FIELD:OP[:VALUE], not \"%s\"", filters->v[i]);
      }
      json_array_append_new(arr, f);
    }
    json_object_set_new(m, "filters", arr);
  }
  if (cli_list(a, "variable")->n) {
    if ((status = cli_kv_object(a, "variable", false, &vars)) != 0)
      return status;
    json_object_set_new(m, "variables", vars);
  }
  return 0;
}

static const struct cli_resource resource = {
    .create = "/analytics.v1.MetricService/CreateMetric",
    .get = "/analytics.v1.MetricService/GetMetric",
    .update = "/analytics.v1.MetricService/UpdateMetric",
    .id_field = "metricId",
    .body_field = "metric",
    .apply = apply,
};

static int metrics_page(analytics_client_t *c, const struct cli_args *a, int32_t page_size,
                        const char *token, char **json, analytics_error_t *err) {
  (void)a;
  return analytics_list_metrics(c, page_size, token, json, err);
}

/* "k=v,k2=v2" of a series' dimensions (a new string; "" for none). */
static json_t *dims_label(const json_t *dims) {
  char buf[512] = "";
  size_t len = 0;
  const char *k;
  json_t *v;

  json_object_foreach((json_t *)dims, k, v) {
    int n = snprintf(buf + len, sizeof buf - len, "%s%s=%s", len ? "," : "", k,
                     json_is_string(v) ? json_string_value(v) : "?");
    if (n < 0 || (size_t)n >= sizeof buf - len)
      break;
    len += (size_t)n;
  }
  return json_string(buf);
}

/* GetMetricData with req (stolen). As a table: one row per bucket (series,
 * start, value, rate), then one per series (summary, total, change). */
static int data_call(analytics_client_t *c, json_t *req) {
  static const char *const point_cols[] = {"series", "start", "value", "rate", NULL};
  static const char *const series_cols[] = {"series", "summary", "total", "change", NULL};
  static const struct cli_view points_view = {"buckets", point_cols};
  static const struct cli_view series_view = {"series", series_cols};
  char *text = json_dumps(req, JSON_COMPACT), *json = NULL;
  json_t *doc, *points, *series, *s, *b, *row;
  analytics_error_t err;
  size_t i, j;
  int rc;

  json_decref(req);
  rc = analytics_call(c, "/analytics.v1.MetricService/GetMetricData", text, &json, &err);
  free(text);
  if (rc < 0 || cli_format == CLI_FORMAT_JSON || !(doc = json_loads(json, 0, NULL)))
    return cli_finish(rc, json, &err, NULL);
  analytics_free(json);
  points = json_pack("{s[]}", "buckets");
  series = json_pack("{s[]}", "series");
  json_array_foreach(json_object_get(doc, "series"), i, s) {
    json_t *label = dims_label(json_object_get(s, "dimensions"));
    json_array_foreach(json_object_get(s, "buckets"), j, b) {
      row = json_deep_copy(b);
      json_object_set(row, "series", label);
      json_array_append_new(json_object_get(points, "buckets"), row);
    }
    row = json_deep_copy(s);
    json_object_set(row, "series", label);
    json_array_append_new(json_object_get(series, "series"), row);
    json_decref(label);
  }
  json_object_del(doc, "series");
  cli_print(points, &points_view);
  putchar('\n');
  cli_print(series, &series_view);
  putchar('\n');
  cli_print(doc, NULL);
  json_decref(points);
  json_decref(series);
  json_decref(doc);
  return 0;
}

static int data(analytics_client_t *c, const struct cli_args *a) {
  static const char *const ok[] = {
      "from", "to", "interval", "time-zone", "top-n", "dimension-filter", NULL};
  static const char *const ends[] = {"from", "to"};
  const char *id, *v;
  json_t *req, *dimf = NULL;
  int64_t ms;
  long topn;
  int status;

  if ((status = cli_only(a, "metrics data", ok)) != 0 || !(id = cli_need_id(a, "data", &status)))
    return status;
  req = json_pack("{ss}", "metricId", id);
  for (int t = 0; t < 2; t++) {
    if (!(v = cli_opt(a, ends[t])))
      continue;
    if (cli_parse_time(v, &ms) < 0) {
      json_decref(req);
      return cli_usage(a,
                       "--%s: RFC 3339 (2024-05-01T10:00:00Z), a date, Unix ms, now or "
                       "-15m/-2h/-7d",
                       ends[t]);
    }
    json_object_set_new(req, ends[t], cli_time_json(ms));
  }
  cli_set_str(req, "interval", cli_opt(a, "interval"));
  cli_set_str(req, "timeZone", cli_opt(a, "time-zone"));
  if ((v = cli_opt(a, "top-n"))) {
    if (cli_parse_long(v, 1, 100000, &topn) < 0) {
      json_decref(req);
      return cli_usage(a, "--top-n takes a number from 1 to 100000");
    }
    json_object_set_new(req, "topN", json_integer(topn));
  }
  if (cli_list(a, "dimension-filter")->n) {
    if ((status = cli_kv_object(a, "dimension-filter", false, &dimf)) != 0) {
      json_decref(req);
      return status;
    }
    json_object_set_new(req, "dimensionFilter", dimf);
  }
  return data_call(c, req);
}

static int run(analytics_client_t *c, const struct cli_args *a) {
  static const char *const none[] = {NULL};
  const char *verb = a->n_pos ? a->pos[0] : NULL, *id;
  analytics_error_t err;
  char *json = NULL;
  int status;

  if (!verb)
    return cli_usage(a, "metrics needs a verb: list, get, create, update, delete, data");
  if (!strcmp(verb, "list"))
    return cli_list_verb(c, a, "metrics", metrics_page, &list_view);
  if (!strcmp(verb, "create")) {
    if ((status = cli_only(a, "metrics create", def_opts)) != 0 ||
        (status = cli_no_more(a, 1)) != 0)
      return status;
    if (!cli_opt(a, "name") || !cli_opt(a, "formula"))
      return cli_usage(a, "metrics create needs --name and --formula");
    return cli_create(c, a, &resource, json_object());
  }
  if (!strcmp(verb, "update"))
    return cli_update(c, a, &resource, def_opts);
  if (!strcmp(verb, "get") || !strcmp(verb, "delete")) {
    if ((status = cli_only(a, verb, none)) != 0 || !(id = cli_need_id(a, verb, &status)))
      return status;
    if (verb[0] == 'd')
      return cli_deleted(analytics_delete_metric(c, id, &err), "metricId", id, &err);
    status = analytics_get_metric(c, id, &json, &err);
    return cli_finish(status, json, &err, NULL);
  }
  if (!strcmp(verb, "data"))
    return data(c, a);
  return cli_usage(a, "unknown verb \"%s\": list, get, create, update, delete, data", verb);
}

const struct cli_command cli_cmd_metrics = {
    .name = "metrics",
    .summary = "list, get, create, update, delete metrics; query their data",
    .help = help,
    .options = options,
    .run = run,
};
