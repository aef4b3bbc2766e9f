/* analyticsctl's calls shared by the object commands (metrics, reports,
 * alerts, and those to come): paging, create, read-modify-replace, delete. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_all_pages(analytics_client_t *c, const struct cli_args *a, const char *key, long limit,
                  cli_page_fn page, const struct cli_view *view) {
  json_t *items = json_array(), *doc = json_object();
  const char *first = cli_opt(a, "page");
  char *token = first ? strdup(first) : NULL;
  analytics_error_t err;
  int status = 0;

  for (;;) {
    long want = limit ? limit - (long)json_array_size(items) : 500;
    char *json = NULL;
    int rc = page(c, a, (int32_t)(want > 500 ? 500 : want), token, &json, &err);
    json_t *v, *arr, *next;

    if (rc < 0) {
      status = cli_failed(rc, &err);
      goto out;
    }
    v = json_loads(json, 0, NULL);
    analytics_free(json);
    arr = json_object_get(v, key);
    next = json_object_get(v, "nextPageToken");
    if (json_is_array(arr))
      json_array_extend(items, arr);
    free(token);
    token =
        json_is_string(next) && json_string_length(next) ? strdup(json_string_value(next)) : NULL;
    json_decref(v);
    if (!token || (limit && (long)json_array_size(items) >= limit))
      break;
  }
  json_object_set(doc, key, items);
  if (token)
    json_object_set_new(doc, "nextPageToken", json_string(token));
  cli_print(doc, view);
out:
  free(token);
  json_decref(items);
  json_decref(doc);
  return status;
}

int cli_list_verb(analytics_client_t *c, const struct cli_args *a, const char *key,
                  cli_page_fn page, const struct cli_view *view) {
  static const char *const ok[] = {"limit", "page", "all", NULL};
  analytics_error_t err;
  char *json = NULL;
  long limit;
  int status;

  if ((status = cli_only(a, "list", ok)) != 0 || (status = cli_limit(a, &limit)) != 0 ||
      (status = cli_no_more(a, 1)) != 0)
    return status;
  if (cli_opt(a, "all"))
    return cli_all_pages(c, a, key, limit, page, view);
  status = page(c, a, (int32_t)limit, cli_opt(a, "page"), &json, &err);
  return cli_finish(status, json, &err, view);
}

int cli_call_json(analytics_client_t *c, const char *method, json_t *req,
                  const struct cli_view *view) {
  char *text = json_dumps(req, JSON_COMPACT), *json = NULL;
  analytics_error_t err;
  int rc;

  json_decref(req);
  rc = analytics_call(c, method, text, &json, &err);
  free(text);
  return cli_finish(rc, json, &err, view);
}

int cli_deleted(int rc, const char *id_field, const char *id, const analytics_error_t *err) {
  json_t *v;

  if (rc < 0)
    return cli_failed(rc, err);
  v = json_pack("{sssb}", id_field, id, "deleted", 1);
  cli_print(v, NULL);
  json_decref(v);
  return 0;
}

void cli_set_str(json_t *o, const char *key, const char *v) {
  if (v)
    json_object_set_new(o, key, json_string(v));
}

void cli_set_list(json_t *o, const char *key, const struct cli_list *l) {
  json_t *arr;

  if (!l->n)
    return;
  arr = json_array();
  for (size_t i = 0; i < l->n; i++)
    json_array_append_new(arr, json_string(l->v[i]));
  json_object_set_new(o, key, arr);
}

int cli_create(analytics_client_t *c, const struct cli_args *a, const struct cli_resource *r,
               json_t *obj) {
  int status = r->apply(a, obj);

  if (status != 0) {
    json_decref(obj);
    return status;
  }
  return cli_call_json(c, r->create, json_pack("{so}", r->body_field, obj), NULL);
}

/* The object as get answers it, output-only fields removed, or NULL after
 * printing the error. */
static json_t *current(analytics_client_t *c, const struct cli_resource *r, const char *id,
                       int *status) {
  json_t *req = json_pack("{ss}", r->id_field, id), *obj;
  char *text = json_dumps(req, JSON_COMPACT), *json = NULL;
  analytics_error_t err;
  int rc = analytics_call(c, r->get, text, &json, &err);

  json_decref(req);
  free(text);
  if (rc < 0) {
    *status = cli_failed(rc, &err);
    return NULL;
  }
  obj = json_loads(json, 0, NULL);
  analytics_free(json);
  if (!json_is_object(obj)) {
    json_decref(obj);
    fprintf(stderr, "analyticsctl: the server's answer is not a JSON object\n");
    *status = CLI_EXIT_FAIL;
    return NULL;
  }
  json_object_del(obj, r->id_field);
  json_object_del(obj, "accountId");
  json_object_del(obj, "createdAt");
  json_object_del(obj, "updatedAt");
  *status = 0;
  return obj;
}

int cli_update(analytics_client_t *c, const struct cli_args *a, const struct cli_resource *r,
               const char *const *allowed) {
  char what[64];
  const char *id;
  json_t *obj;
  int status;

  snprintf(what, sizeof what, "%s update", a->cmd->name);
  if ((status = cli_only(a, what, allowed)) != 0 || !(id = cli_need_id(a, "update", &status)))
    return status;
  if (!(obj = current(c, r, id, &status)))
    return status;
  if ((status = r->apply(a, obj)) != 0) {
    json_decref(obj);
    return status;
  }
  return cli_call_json(c, r->update, json_pack("{ssso}", r->id_field, id, r->body_field, obj),
                       NULL);
}
