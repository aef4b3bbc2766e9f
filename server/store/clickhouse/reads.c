/* Reads pushed down to ClickHouse: search (filters, property equality, newest first after a
 * cursor) and scans of a time range, as SQL over the events table, merged with this instance's
 * events not yet shipped, read from the spool (read-your-writes). */
#include "ana_alloc.h"
#include "ana_local_db.h"
#include "clickhouse_backend.h"

#include <inttypes.h>
#include <math.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Rows of one scan page: bounded so that a page's answer stays under the client's limit. */
#define SCAN_PAGE 50000
/* Spool rows read per step. */
#define SPOOL_CHUNK 5000

const char *ana_clickhouse_value_text(const json_t *v, char *buf, size_t cap) {
  if (json_is_string(v))
    return json_string_value(v);
  if (json_is_integer(v)) {
    snprintf(buf, cap, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    return buf;
  }
  if (json_is_real(v)) {
    /* As SQLite's CAST of a REAL AS TEXT renders it (15 significant digits, always a point). */
    sqlite3_snprintf((int)cap, buf, "%!.15g", json_real_value(v));
    return buf;
  }
  if (json_is_true(v) || json_is_false(v)) {
    snprintf(buf, cap, "%d", json_is_true(v) ? 1 : 0);
    return buf;
  }
  return NULL; /* null, objects and arrays: the caller renders or leaves them out */
}

/* --- SQL text --- */

struct sql {
  char *p;
  size_t len;
  FILE *f;
};

static int sql_open(struct sql *s, struct ana_error *err) {
  memset(s, 0, sizeof *s);
  if (!(s->f = open_memstream(&s->p, &s->len)))
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory"), ANA_ERR_NOMEM;
  return 0;
}

/* A ClickHouse string literal. */
static void sql_str(struct sql *s, const char *v) {
  fputc('\'', s->f);
  for (const char *c = v ? v : ""; *c; c++) {
    if (*c == '\'' || *c == '\\')
      fputc('\\', s->f);
    fputc(*c, s->f);
  }
  fputc('\'', s->f);
}

static int sql_close(struct sql *s, struct ana_error *err) {
  bool bad = ferror(s->f) != 0;
  if (fclose(s->f) != 0 || bad || !s->p) {
    free(s->p);
    s->p = NULL;
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory"), ANA_ERR_NOMEM;
  }
  return 0;
}

/* The rows of the events table a read sees: this instance's up to the shipped sequence (the
 * later ones are read from the spool), every other instance's; each (instance, seq) once. */
static void sql_visible(struct sql *s, const struct ana_clickhouse_view *v) {
  if (v->other) {
    fputs(" AND instance = ", s->f);
    sql_str(s, v->other);
    fprintf(s->f, " AND seq > %" PRIu64 " AND seq <= %" PRIu64, v->other_after, v->other_upto);
    return;
  }
  fputs(" AND NOT (instance = ", s->f);
  sql_str(s, v->instance);
  fprintf(s->f, " AND seq > %" PRIu64 ")", v->shipped);
}

/* --- RowBinary answers --- */

struct rd {
  const unsigned char *p, *end;
  bool bad;
};

static uint64_t rd_varint(struct rd *r) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (r->p >= r->end) {
      r->bad = true;
      return 0;
    }
    unsigned char c = *r->p++;
    v |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80))
      return v;
  }
  r->bad = true;
  return 0;
}

static uint64_t rd_u64(struct rd *r) {
  if (r->end - r->p < 8) {
    r->bad = true;
    return 0;
  }
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v |= (uint64_t)r->p[i] << (8 * i);
  r->p += 8;
  return v;
}

/* A String: its bytes in place (not NUL-terminated) and length. */
static const unsigned char *rd_bytes(struct rd *r, size_t *n) {
  uint64_t len = rd_varint(r);
  if (r->bad || len > (uint64_t)(r->end - r->p)) {
    r->bad = true;
    *n = 0;
    return NULL;
  }
  const unsigned char *b = r->p;
  r->p += len;
  *n = (size_t)len;
  return b;
}

/* Strings of one row, NUL-terminated, in one growing buffer (offsets until the row is done). */
struct scratch {
  char *p;
  size_t len, cap;
  bool failed;
};

static size_t scratch_put(struct scratch *s, const void *b, size_t n) {
  if (s->len + n + 1 > s->cap) {
    size_t cap = s->cap ? s->cap : 1024;
    while (cap < s->len + n + 1)
      cap *= 2;
    char *p = ana_realloc(s->p, cap);
    if (!p) {
      s->failed = true;
      return 0;
    }
    s->p = p;
    s->cap = cap;
  }
  size_t at = s->len;
  if (n)
    memcpy(s->p + at, b, n);
  s->p[at + n] = '\0';
  s->len += n + 1;
  return at;
}

static size_t rd_str(struct rd *r, struct scratch *s) {
  size_t n;
  const unsigned char *b = rd_bytes(r, &n);
  return scratch_put(s, b ? (const void *)b : "", n);
}

static int bad_answer(struct ana_error *err) {
  return ana_error_set(err, ANA_STATUS_UNAVAILABLE, "ClickHouse: an answer could not be read"),
         ANA_ERR_IO;
}

/* --- matching a spooled event --- */

static bool prop_equals(json_t *props, const char *key, const char *want) {
  json_t *v = json_object_get(props, key);
  char buf[64];
  const char *t = v ? ana_clickhouse_value_text(v, buf, sizeof buf) : NULL;
  if (!t && (json_is_object(v) || json_is_array(v))) {
    char *dump = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    bool eq = dump && strcmp(dump, want) == 0;
    free(dump);
    return eq;
  }
  return t && strcmp(t, want) == 0;
}

static bool eq_or_any(const char *want, const char *have) {
  return !want || !want[0] || (have && strcmp(want, have) == 0);
}

static bool spooled_matches(const struct ana_event_query *q, const struct ana_spooled_event *e) {
  if (strcmp(e->account_id, q->account_id) != 0 || e->timestamp_ms < q->from_ms ||
      e->timestamp_ms >= q->to_ms || !eq_or_any(q->event_type, e->event_type) ||
      !eq_or_any(q->event_name, e->event_name) || !eq_or_any(q->session_id, e->session_id))
    return false;
  if (q->after_cursor && !(e->timestamp_ms < q->cursor_ts ||
                           (e->timestamp_ms == q->cursor_ts &&
                            strcmp(e->event_id, q->cursor_event_id ? q->cursor_event_id : "") < 0)))
    return false;
  if (!q->n_properties)
    return true;
  json_t *props = e->properties_json ? json_loads(e->properties_json, 0, NULL) : NULL;
  bool ok = props != NULL;
  for (size_t i = 0; ok && i < q->n_properties; i++)
    ok = prop_equals(props, q->property_keys[i], q->property_values[i]);
  json_decref(props);
  return ok;
}

/* --- search --- */

struct hit {
  int64_t ts;
  uint64_t seq;
  char *event_id;
  unsigned char *payload;
  size_t payload_len;
};

/* Newest first: timestamp, then event id, descending. */
static int hit_order(const void *a, const void *b) {
  const struct hit *x = a, *y = b;
  if (x->ts != y->ts)
    return x->ts > y->ts ? -1 : 1;
  return -strcmp(x->event_id, y->event_id);
}

struct hits {
  struct hit *v;
  size_t n, cap, keep;
  bool failed;
};

static void hits_free(struct hits *h) {
  for (size_t i = 0; i < h->n; i++) {
    ana_free(h->v[i].event_id);
    ana_free(h->v[i].payload);
  }
  ana_free(h->v);
}

/* Keeps the newest h->keep. */
static void hits_trim(struct hits *h) {
  if (h->n > 1)
    qsort(h->v, h->n, sizeof *h->v, hit_order);
  while (h->n > h->keep) {
    h->n--;
    ana_free(h->v[h->n].event_id);
    ana_free(h->v[h->n].payload);
  }
}

static void hits_add(struct hits *h, int64_t ts, uint64_t seq, const char *id, size_t id_len,
                     const void *payload, size_t len) {
  if (h->failed)
    return;
  if (h->n == h->cap) {
    if (h->n >= 2 * h->keep && h->n >= 64) {
      hits_trim(h);
    } else {
      size_t cap = h->cap ? h->cap * 2 : 32;
      struct hit *v = ana_realloc(h->v, cap * sizeof *v);
      if (!v) {
        h->failed = true;
        return;
      }
      h->v = v;
      h->cap = cap;
    }
  }
  struct hit *x = &h->v[h->n];
  x->ts = ts;
  x->seq = seq;
  x->event_id = ana_malloc(id_len + 1);
  x->payload = ana_malloc(len ? len : 1);
  if (!x->event_id || !x->payload) {
    ana_free(x->event_id);
    ana_free(x->payload);
    h->failed = true;
    return;
  }
  memcpy(x->event_id, id, id_len);
  x->event_id[id_len] = '\0';
  if (len)
    memcpy(x->payload, payload, len);
  x->payload_len = len;
  h->n++;
}

struct spool_search {
  const struct ana_event_query *q;
  struct hits *h;
  uint64_t after;
};

static int spool_hit(void *ctx, const struct ana_spooled_event *e, struct ana_error *err) {
  (void)err;
  struct spool_search *s = ctx;
  s->after = e->seq;
  if (spooled_matches(s->q, e))
    hits_add(s->h, e->timestamp_ms, e->seq, e->event_id, strlen(e->event_id), e->payload,
             e->payload_len);
  return 0;
}

/* The search's SQL: payload, ts, event_id, seq of the newest matches. */
static int search_sql(const struct ana_clickhouse_view *v, const struct ana_event_query *q,
                      struct sql *s, struct ana_error *err) {
  if (sql_open(s, err) < 0)
    return ANA_ERR_NOMEM;
  /* Other instances' sequence numbers are not this one's: 0 (committed before anything here). */
  fputs("SELECT payload, ts, event_id, if(instance = ", s->f);
  sql_str(s, v->instance);
  fputs(", seq, toUInt64(0)) FROM events WHERE account_id = ", s->f);
  sql_str(s, q->account_id);
  if (q->from_ms != INT64_MIN)
    fprintf(s->f, " AND ts >= %" PRId64, q->from_ms);
  if (q->to_ms != INT64_MAX)
    fprintf(s->f, " AND ts < %" PRId64, q->to_ms);
  struct {
    const char *col, *val;
  } eq[] = {
      {"event_type", q->event_type}, {"event_name", q->event_name}, {"session_id", q->session_id}};
  for (size_t i = 0; i < sizeof eq / sizeof eq[0]; i++)
    if (eq[i].val && eq[i].val[0]) {
      fprintf(s->f, " AND %s = ", eq[i].col);
      sql_str(s, eq[i].val);
    }
  if (q->after_cursor) {
    fprintf(s->f, " AND (ts < %" PRId64 " OR (ts = %" PRId64 " AND event_id < ", q->cursor_ts,
            q->cursor_ts);
    sql_str(s, q->cursor_event_id);
    fputs("))", s->f);
  }
  for (size_t i = 0; i < q->n_properties; i++) {
    fputs(" AND has(prop_keys, ", s->f);
    sql_str(s, q->property_keys[i]);
    fputs(") AND prop_values[indexOf(prop_keys, ", s->f);
    sql_str(s, q->property_keys[i]);
    fputs(")] = ", s->f);
    sql_str(s, q->property_values[i]);
  }
  sql_visible(s, v);
  fprintf(s->f,
          " ORDER BY ts DESC, event_id DESC LIMIT 1 BY instance, seq LIMIT %d FORMAT RowBinary",
          q->limit);
  return sql_close(s, err);
}

int ana_clickhouse_search(const struct ana_clickhouse_view *v, const struct ana_event_query *q,
                          ana_event_hit_fn hit, void *ctx, struct ana_error *err) {
  if (q->limit <= 0)
    return 0;
  struct hits h = {.keep = (size_t)q->limit};
  struct sql s = {0};
  char *answer = NULL;
  int rc = 0;
  /* This instance's events not yet shipped, from the spool. */
  struct spool_search ss = {q, &h, v->shipped};
  for (;;) {
    int n = ana_local_spool_each_untexted(v->db, ss.after, SPOOL_CHUNK, spool_hit, &ss, err);
    if (n < 0) {
      rc = n;
      goto out;
    }
    if (n < SPOOL_CHUNK)
      break;
  }
  /* The rest, from ClickHouse. */
  size_t alen = 0;
  if ((rc = search_sql(v, q, &s, err)) < 0 ||
      (rc = ana_clickhouse_query_bin(v->ch, s.p, &answer, &alen, err)) < 0)
    goto out;
  struct rd r = {(const unsigned char *)answer, (const unsigned char *)answer + alen, false};
  while (r.p < r.end && !r.bad) {
    size_t plen, idlen;
    const unsigned char *payload = rd_bytes(&r, &plen);
    int64_t ts = (int64_t)rd_u64(&r);
    const unsigned char *id = rd_bytes(&r, &idlen);
    uint64_t seq = rd_u64(&r);
    if (r.bad)
      break;
    hits_add(&h, ts, seq, (const char *)id, idlen, payload, plen);
  }
  if (r.bad) {
    rc = bad_answer(err);
    goto out;
  }
  if (h.failed) {
    rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto out;
  }
  hits_trim(&h);
  for (size_t i = 0; i < h.n; i++)
    if (hit(ctx, h.v[i].payload, h.v[i].payload_len, h.v[i].ts, h.v[i].event_id, h.v[i].seq))
      break;
out:
  ana_free(answer);
  free(s.p);
  hits_free(&h);
  return rc;
}

/* --- scan --- */

struct spool_scan {
  const char *account;
  int64_t from, to;
  const char *const *names;
  size_t n_names;
  ana_event_scan_fn fn;
  void *ctx;
  uint64_t after;
  bool stopped;
};

static bool name_wanted(const char *name, const char *const *names, size_t n) {
  if (!n)
    return true;
  for (size_t i = 0; i < n; i++)
    if (name && strcmp(name, names[i]) == 0)
      return true;
  return false;
}

static int spool_scanned(void *ctx, const struct ana_spooled_event *e, struct ana_error *err) {
  (void)err;
  struct spool_scan *s = ctx;
  s->after = e->seq;
  if (strcmp(e->account_id, s->account) != 0 || e->timestamp_ms < s->from ||
      e->timestamp_ms >= s->to || !name_wanted(e->event_name, s->names, s->n_names))
    return 0;
  struct ana_scanned_event ev = {
      .timestamp_ms = e->timestamp_ms,
      .event_id = e->event_id,
      .event_type = e->event_type,
      .event_name = e->event_name,
      .session_id = e->session_id,
      .properties_json = e->properties_json,
      .seq = e->seq,
  };
  if (s->fn(s->ctx, &ev)) {
    s->stopped = true;
    return 1;
  }
  return 0;
}

/* Skips an Array(String). */
static void rd_skip_strings(struct rd *r) {
  uint64_t n = rd_varint(r);
  for (uint64_t i = 0; i < n && !r->bad; i++) {
    size_t len;
    rd_bytes(r, &len);
  }
}

/* Properties of a row shipped before the properties column (schema 1): rebuilt from the arrays
 * (at r), every value a string. NULL when out of memory (r is moved past the arrays anyway). */
static char *props_from_arrays(struct rd *r) {
  struct rd keys = *r;
  rd_skip_strings(r);
  uint64_t nk = rd_varint(&keys);
  uint64_t nv = rd_varint(r);
  json_t *o = json_object();
  for (uint64_t i = 0; i < nv && !r->bad; i++) {
    size_t kl = 0, vl;
    const unsigned char *k = i < nk ? rd_bytes(&keys, &kl) : NULL;
    const unsigned char *val = rd_bytes(r, &vl);
    if (o && k && val) {
      char *key = ana_malloc(kl + 1);
      if (key) {
        memcpy(key, k, kl);
        key[kl] = '\0';
        json_object_set_new(o, key, json_stringn((const char *)val, vl));
        ana_free(key);
      }
    }
  }
  char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  return text;
}

/* One page's SQL: the rows after the last one seen (by ts, event_id, instance, seq). */
static int scan_sql(const struct ana_clickhouse_view *v, const char *account_id, int64_t from_ms,
                    int64_t to_ms, const char *const *names, size_t n_names, bool first,
                    int64_t last_ts, const char *last_id, const char *last_inst, uint64_t last_seq,
                    int page, struct sql *s, struct ana_error *err) {
  if (sql_open(s, err) < 0)
    return ANA_ERR_NOMEM;
  /* The arrays only for rows shipped before the properties column (schema 1). */
  fputs("SELECT ts, event_id, event_type, event_name, session_id, properties,"
        " if(properties = '', prop_keys, emptyArrayString()),"
        " if(properties = '', prop_values, emptyArrayString()), instance, seq FROM events"
        " WHERE account_id = ",
        s->f);
  sql_str(s, account_id);
  if (from_ms != INT64_MIN)
    fprintf(s->f, " AND ts >= %" PRId64, from_ms);
  if (to_ms != INT64_MAX)
    fprintf(s->f, " AND ts < %" PRId64, to_ms);
  if (n_names) {
    fputs(" AND event_name IN (", s->f);
    for (size_t i = 0; i < n_names; i++) {
      if (i)
        fputc(',', s->f);
      sql_str(s, names[i]);
    }
    fputc(')', s->f);
  }
  if (!first) {
    fprintf(s->f, " AND (ts > %" PRId64 " OR (ts = %" PRId64 " AND (event_id > ", last_ts, last_ts);
    sql_str(s, last_id);
    fputs(" OR (event_id = ", s->f);
    sql_str(s, last_id);
    fputs(" AND (instance > ", s->f);
    sql_str(s, last_inst);
    fputs(" OR (instance = ", s->f);
    sql_str(s, last_inst);
    fprintf(s->f, " AND seq > %" PRIu64 "))))))", last_seq);
  }
  sql_visible(s, v);
  fprintf(s->f,
          " ORDER BY ts, event_id, instance, seq LIMIT 1 BY instance, seq LIMIT %d"
          " FORMAT RowBinary",
          page);
  return sql_close(s, err);
}

int ana_clickhouse_scan(const struct ana_clickhouse_view *v, const char *account_id,
                        int64_t from_ms, int64_t to_ms, const char *const *names, size_t n_names,
                        ana_event_scan_fn fn, void *ctx, struct ana_error *err) {
  struct spool_scan ss = {account_id, from_ms, to_ms, names, n_names, fn, ctx, v->shipped, false};
  for (; !v->other;) {
    int n = ana_local_spool_each_untexted(v->db, ss.after, SPOOL_CHUNK, spool_scanned, &ss, err);
    if (n < 0)
      return n;
    if (ss.stopped)
      return 0;
    if (n < SPOOL_CHUNK)
      break;
  }
  /* ClickHouse's rows, a page at a time; a page whose answer is too large is asked again
   * smaller. */
  struct scratch sc = {0};
  char *last_id = NULL, *last_inst = NULL;
  int64_t last_ts = 0;
  uint64_t last_seq = 0;
  bool first = true, stopped = false;
  int page = SCAN_PAGE, rc = 0;
  for (;;) {
    struct sql s;
    char *answer = NULL;
    size_t alen = 0;
    if ((rc = scan_sql(v, account_id, from_ms, to_ms, names, n_names, first, last_ts, last_id,
                       last_inst, last_seq, page, &s, err)) < 0)
      break;
    rc = ana_clickhouse_query_bin(v->ch, s.p, &answer, &alen, err);
    free(s.p);
    if (rc == ANA_ERR_FULL && page > 100) {
      page /= 4;
      continue;
    }
    if (rc < 0)
      break;
    struct rd r = {(const unsigned char *)answer, (const unsigned char *)answer + alen, false};
    int rows = 0;
    while (r.p < r.end && !r.bad) {
      sc.len = 0;
      int64_t ts = (int64_t)rd_u64(&r);
      size_t id = rd_str(&r, &sc), type = rd_str(&r, &sc), name = rd_str(&r, &sc),
             session = rd_str(&r, &sc);
      size_t plen;
      const unsigned char *props = rd_bytes(&r, &plen);
      char *rebuilt = NULL;
      size_t po = 0;
      if (plen) {
        po = scratch_put(&sc, props, plen);
        rd_skip_strings(&r);
        rd_skip_strings(&r);
      } else {
        rebuilt = props_from_arrays(&r);
      }
      size_t inst = rd_str(&r, &sc);
      uint64_t seq = rd_u64(&r);
      if (r.bad || sc.failed || (!plen && !rebuilt)) {
        free(rebuilt);
        break;
      }
      struct ana_scanned_event ev = {
          .timestamp_ms = ts,
          .event_id = sc.p + id,
          .event_type = sc.p + type,
          .event_name = sc.p + name,
          .session_id = sc.p + session,
          .properties_json = rebuilt ? rebuilt : sc.p + po,
          /* another instance's sequence is not this one's: 0, committed before anything here */
          .seq = strcmp(sc.p + inst, v->instance) == 0 ? seq : 0,
      };
      stopped = fn(ctx, &ev) != 0;
      free(rebuilt);
      last_ts = ts;
      last_seq = seq;
      ana_free(last_id);
      ana_free(last_inst);
      last_id = ana_strdup(sc.p + id);
      last_inst = ana_strdup(sc.p + inst);
      if (!last_id || !last_inst)
        sc.failed = true;
      rows++;
      if (stopped)
        break;
    }
    ana_free(answer);
    if (stopped && !sc.failed)
      break;
    if (r.bad)
      rc = bad_answer(err);
    else if (sc.failed || r.p < r.end)
      rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    if (rc < 0 || rows < page)
      break;
    first = false;
  }
  ana_free(sc.p);
  ana_free(last_id);
  ana_free(last_inst);
  return rc;
}

/* --- metric aggregation --- */

/* A property name the SQL can name: visitParamExtractRaw looks for "name": verbatim. */
static bool plain_key(const char *k) {
  return k && k[0] && !strpbrk(k, "\"\\");
}

/* The expression of a dimension or term field: an event column, or the property's value. */
static void sql_field(struct sql *s, const char *field) {
  static const char *const cols[][2] = {{"eventType", "event_type"},
                                        {"eventName", "event_name"},
                                        {"sessionId", "session_id"},
                                        {"eventId", "event_id"}};
  for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++)
    if (strcmp(field, cols[i][0]) == 0) {
      fputs(cols[i][1], s->f);
      return;
    }
  fputs("prop_values[indexOf(prop_keys, ", s->f);
  sql_str(s, field);
  fputs(")]", s->f);
}

static bool is_column(const char *field) {
  return strcmp(field, "eventType") == 0 || strcmp(field, "eventName") == 0 ||
         strcmp(field, "sessionId") == 0 || strcmp(field, "eventId") == 0;
}

/* A field present: a non-empty event field, a property that is not null. */
static void sql_present(struct sql *s, const char *field) {
  if (is_column(field)) {
    fputc('(', s->f);
    sql_field(s, field);
    fputs(" != '')", s->f);
  } else {
    fputs("has(prop_keys, ", s->f);
    sql_str(s, field);
    fputc(')', s->f);
  }
}

/* The term's condition: its event name, and its field present. */
static void sql_term_cond(struct sql *s, const struct ana_event_agg_term *t) {
  fputs("(1", s->f);
  if (t->event_name) {
    fputs(" AND event_name = ", s->f);
    sql_str(s, t->event_name);
  }
  if (t->property) {
    fputs(" AND ", s->f);
    sql_present(s, t->property);
  }
  fputc(')', s->f);
}

/* Whether a property's text is its JSON string verbatim (the metric engine reads the string). */
static void sql_clean_string(struct sql *s, const char *prop) {
  fputs("visitParamExtractRaw(properties, ", s->f);
  sql_str(s, prop);
  fputs(") = concat('\"', ", s->f);
  sql_field(s, prop);
  fputs(", '\"')", s->f);
}

/* Whether a property's text is its JSON value verbatim, at most 15 characters, and matches
 * `pattern` (a ClickHouse regular expression in SQL quoting). */
static void sql_verbatim(struct sql *s, const char *prop, const char *pattern) {
  fputs("(length(", s->f);
  sql_field(s, prop);
  fputs(") <= 15 AND match(", s->f);
  sql_field(s, prop);
  fprintf(s->f, ", '%s') AND visitParamExtractRaw(properties, ", pattern);
  sql_str(s, prop);
  fputs(") = ", s->f);
  sql_field(s, prop);
  fputc(')', s->f);
}

/* Whether a property's text is its JSON number verbatim, at most 15 digits (both read it as the
 * same double). */
static void sql_clean_number(struct sql *s, const char *prop) {
  sql_verbatim(s, prop, "^-?[0-9]+(\\\\.[0-9]+)?$");
}

/* Whether a property's text is its JSON integer verbatim, at most 15 digits, without a sign on
 * zero or leading zeros: the metric engine's text of the number ("%.15g") is the same. */
static void sql_clean_integer(struct sql *s, const char *prop) {
  sql_verbatim(s, prop, "^(0|-?[1-9][0-9]*)$");
}

static bool string_op(const char *op) {
  return strcmp(op, "eq") == 0 || strcmp(op, "neq") == 0 || strcmp(op, "in") == 0 ||
         strcmp(op, "contains") == 0;
}

/* Whether the event passes filter f (when its values read as the SQL reads them); false when
 * it cannot be written exactly. */
static bool sql_filter(struct sql *s, const struct ana_event_agg_filter *f) {
  static const char *const cmps[][2] = {{"gt", ">"}, {"gte", ">="}, {"lt", "<"}, {"lte", "<="}};
  fputc('(', s->f);
  sql_present(s, f->field);
  if (strcmp(f->op, "eq") == 0 || strcmp(f->op, "neq") == 0) {
    fputs(" AND ", s->f);
    sql_field(s, f->field);
    fputs(" = ", s->f);
    sql_str(s, f->values[0]);
    if (f->op[0] == 'n')
      fputs(") = 0", s->f); /* absent, or another value */
    else
      fputc(')', s->f);
    return true;
  }
  if (strcmp(f->op, "in") == 0) {
    fputs(" AND ", s->f);
    sql_field(s, f->field);
    fputs(" IN (''", s->f); /* present event fields are never "" */
    for (size_t i = 0; i < f->n_values; i++) {
      if (!f->values[i][0] && !is_column(f->field))
        return false; /* a present property may be "" */
      fputc(',', s->f);
      sql_str(s, f->values[i]);
    }
    fputc(')', s->f);
  } else if (strcmp(f->op, "contains") == 0) {
    fputs(" AND position(", s->f);
    sql_field(s, f->field);
    fputs(", ", s->f);
    sql_str(s, f->values[0]);
    fputs(") > 0", s->f);
  } else if (strcmp(f->op, "exists") != 0) {
    const char *cmp = NULL;
    for (size_t i = 0; i < sizeof cmps / sizeof cmps[0]; i++)
      if (strcmp(f->op, cmps[i][0]) == 0)
        cmp = cmps[i][1];
    if (!cmp || is_column(f->field) || !isfinite(f->number))
      return false;
    fputs(" AND toFloat64OrZero(", s->f);
    sql_field(s, f->field);
    fprintf(s->f, ") %s %.17g", cmp, f->number);
  }
  fputc(')', s->f);
  return true;
}

/* The aggregation's SQL; false when it cannot be written exactly. Per group and bucket: the
 * group key, whether the previous period, the bucket start (seconds), the rows whose values
 * the metric engine might read otherwise than the SQL ("doubtful") and the second copies of
 * rows (a copy has the same group and bucket as its first: rows of a group less its distinct
 * (instance, seq); cheaper than deduplicating every row), and per term count, sum, min, max (with
 * a percentile term's numbers, a uniq term's distinct texts). A
 * value is read the same way when the text ClickHouse holds is the JSON's own: a string dimension's
 * quoted text, a number's decimal digits (at most 15). */
static bool agg_sql(const struct ana_clickhouse_view *v, const struct ana_event_agg_query *q,
                    struct sql *s) {
  static const char *const units[][2] = {{"1m", "toStartOfMinute"},
                                         {"5m", "toStartOfFiveMinute"},
                                         {"1h", "toStartOfHour"},
                                         {"1d", "toStartOfDay"}};
  const char *unit = NULL;
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
    if (q->interval && strcmp(q->interval, units[i][0]) == 0)
      unit = units[i][1];
  /* DateTime holds unsigned 32-bit seconds; a joined key stays under 1,024 bytes. */
  if (!unit || q->from_ms < 0 || q->to_ms > 4294967295000LL || q->n_dimensions > 7)
    return false;
  for (size_t d = 0; d < q->n_dimensions; d++)
    if (!is_column(q->dimensions[d]) && !plain_key(q->dimensions[d]))
      return false;
  for (size_t t = 0; t < q->n_terms; t++)
    if (q->terms[t].property && !plain_key(q->terms[t].property))
      return false;
  for (size_t i = 0; i < q->n_filters; i++)
    if (!is_column(q->filters[i].field) && !plain_key(q->filters[i].field))
      return false;
  /* Outside: per group and bucket, the doubtful rows and each term's aggregates. */
  fputs("SELECT k, prev, b, countIf(d) + (count() - uniqExact(instance, seq))", s->f);
  for (size_t t = 0; t < q->n_terms; t++) {
    if (q->terms[t].numeric)
      fprintf(s->f,
              ", toFloat64(countIf(c%zu)), sumIf(x%zu, c%zu), minIf(x%zu, c%zu), maxIf(x%zu, c%zu)",
              t, t, t, t, t, t, t);
    else
      fprintf(s->f, ", toFloat64(countIf(c%zu)), toFloat64(0), toFloat64(0), toFloat64(0)", t);
    /* percentiles: every number (the nearest rank is taken over the merged buckets and groups,
     * as over rows); uniq: the distinct texts */
    if (q->terms[t].numeric && q->terms[t].numbers)
      fprintf(s->f, ", groupArrayIf(x%zu, c%zu)", t, t);
    else if (!q->terms[t].numeric && q->terms[t].distinct)
      fprintf(s->f, ", groupUniqArrayIf(u%zu, c%zu)", t, t);
  }
  /* Inside: each row read into its group key, bucket, doubt, and per term whether it counts
   * and its number. */
  fputs(" FROM (SELECT instance, seq, ", s->f);
  if (!q->n_dimensions)
    fputs("''", s->f);
  for (size_t d = 0; d < q->n_dimensions; d++) {
    fputs(d ? ", '\\x1f', substring(" : "concat('', substring(", s->f);
    sql_field(s, q->dimensions[d]);
    fputs(", 1, 127)", s->f);
  }
  if (q->n_dimensions)
    fputc(')', s->f);
  fprintf(s->f,
          " AS k, ts < %" PRId64
          " AS prev, if(prev, toUInt32(0), toUInt32(%s(toDateTime(intDiv(ts, 1000)), ",
          q->split_ms, unit);
  sql_str(s, q->time_zone && q->time_zone[0] ? q->time_zone : "UTC");
  fputs("))) AS b, (0", s->f);
  for (size_t d = 0; d < q->n_dimensions; d++)
    if (!is_column(q->dimensions[d])) {
      fputs(" OR (has(prop_keys, ", s->f);
      sql_str(s, q->dimensions[d]);
      fputs(") AND NOT ", s->f);
      sql_clean_string(s, q->dimensions[d]);
      fputc(')', s->f);
    }
  for (size_t t = 0; t < q->n_terms; t++)
    if (q->terms[t].numeric) {
      fprintf(s->f, " OR (c%zu AND NOT ", t);
      sql_clean_number(s, q->terms[t].property);
      fputc(')', s->f);
    } else if (q->terms[t].distinct && q->terms[t].property && !is_column(q->terms[t].property)) {
      /* uniq reads a string as it is, a number as "%.15g", a boolean as true/false */
      fprintf(s->f, " OR (c%zu AND NOT (", t);
      sql_clean_string(s, q->terms[t].property);
      fputs(" OR ", s->f);
      sql_clean_integer(s, q->terms[t].property);
      fputs("))", s->f);
    }
  for (size_t i = 0; i < q->n_filters; i++) {
    const struct ana_event_agg_filter *f = &q->filters[i];
    if (is_column(f->field) || strcmp(f->op, "exists") == 0)
      continue;
    fputs(" OR (has(prop_keys, ", s->f);
    sql_str(s, f->field);
    fputs(") AND NOT ", s->f);
    if (string_op(f->op))
      sql_clean_string(s, f->field);
    else
      sql_clean_number(s, f->field);
    fputc(')', s->f);
  }
  fputs(") AS d, (1", s->f);
  for (size_t i = 0; i < q->n_filters; i++) {
    fputs(" AND ", s->f);
    if (!sql_filter(s, &q->filters[i]))
      return false;
  }
  fputs(") AS fl", s->f);
  for (size_t t = 0; t < q->n_terms; t++) {
    fputs(", ", s->f);
    sql_term_cond(s, &q->terms[t]);
    fprintf(s->f, " AS c%zu", t);
    if (q->terms[t].numeric) {
      fputs(", toFloat64OrZero(", s->f);
      sql_field(s, q->terms[t].property);
      fprintf(s->f, ") AS x%zu", t);
    } else if (q->terms[t].distinct) {
      fputs(", ", s->f);
      if (q->terms[t].property)
        sql_field(s, q->terms[t].property);
      else
        fputs("''", s->f); /* no field: every event reads as "" */
      fprintf(s->f, " AS u%zu", t);
    }
  }
  fputs(" FROM events WHERE account_id = ", s->f);
  sql_str(s, q->account_id);
  fprintf(s->f, " AND ts >= %" PRId64 " AND ts < %" PRId64, q->from_ms, q->to_ms);
  if (q->n_names) {
    fputs(" AND event_name IN (", s->f);
    for (size_t i = 0; i < q->n_names; i++) {
      if (i)
        fputc(',', s->f);
      sql_str(s, q->names[i]);
    }
    fputc(')', s->f);
  }
  sql_visible(s, v);
  /* Groups are made by the events that pass the filters (and the doubtful ones: see d). */
  fputs(") WHERE fl OR d GROUP BY k, prev, b FORMAT RowBinary", s->f);
  return true;
}

static double rd_f64(struct rd *r) {
  uint64_t u = rd_u64(r);
  double d;
  memcpy(&d, &u, sizeof d);
  return d;
}

/* The numbers of one answer row, in one growing buffer. */
struct numbers {
  double *v;
  size_t len, cap;
  bool failed;
};

/* Appends an Array(Float64) at r; its first number's index in *at, its length in *n. */
static void rd_numbers(struct rd *r, struct numbers *nb, size_t *at, size_t *n) {
  uint64_t len = rd_varint(r);
  *at = nb->len;
  *n = 0;
  if (r->bad || len > (uint64_t)(r->end - r->p) / 8) {
    r->bad = true;
    return;
  }
  if (nb->len + len > nb->cap) {
    size_t cap = nb->cap ? nb->cap : 256;
    while (cap < nb->len + len)
      cap *= 2;
    double *v = ana_realloc(nb->v, cap * sizeof *v);
    if (!v) {
      nb->failed = true;
      return;
    }
    nb->v = v;
    nb->cap = cap;
  }
  for (uint64_t i = 0; i < len; i++)
    nb->v[nb->len++] = rd_f64(r);
  *n = (size_t)len;
}

/* Appends an Array(String) at r to sc, each NUL-terminated; the first's offset in *at. */
static void rd_texts(struct rd *r, struct scratch *sc, size_t *at, size_t *n) {
  uint64_t len = rd_varint(r);
  *at = sc->len;
  *n = 0;
  for (uint64_t i = 0; i < len && !r->bad && !sc->failed; i++) {
    rd_str(r, sc);
    (*n)++;
  }
}

int ana_clickhouse_aggregate(const struct ana_clickhouse_view *v,
                             const struct ana_event_agg_query *q, ana_event_agg_fn agg,
                             ana_event_scan_fn rows, void *ctx, struct ana_error *err) {
  struct sql s;
  char *answer = NULL;
  size_t alen = 0;
  double *aggs = NULL;
  struct ana_event_agg_values *vals = NULL;
  size_t *offs = NULL;
  struct scratch sc = {0};
  struct numbers nb = {0};
  int rc = sql_open(&s, err);
  if (rc < 0)
    return rc;
  bool ok = agg_sql(v, q, &s);
  if ((rc = sql_close(&s, err)) < 0 || !ok)
    goto out;
  rc = ana_clickhouse_query_bin(v->ch, s.p, &answer, &alen, err);
  if (rc == ANA_ERR_FULL) { /* too many groups and buckets for one answer: the rows instead */
    rc = 0;
    goto out;
  }
  if (rc < 0)
    goto out;
  size_t nt = q->n_terms;
  aggs = ana_malloc((4 * nt + 1) * sizeof *aggs);
  vals = ana_calloc(nt + 1, sizeof *vals);
  offs = ana_calloc(nt + 1, sizeof *offs);
  if (!aggs || !vals || !offs) {
    rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto out;
  }
  /* Twice: first whether any row is doubtful (then the caller scans), then the aggregates. */
  for (int pass = 0; pass < 2; pass++) {
    struct rd r = {(const unsigned char *)answer, (const unsigned char *)answer + alen, false};
    while (r.p < r.end && !r.bad) {
      sc.len = 0;
      nb.len = 0;
      size_t key = rd_str(&r, &sc);
      bool prev = r.p < r.end && *r.p++ != 0;
      uint32_t b = 0;
      if (r.end - r.p >= 4) {
        b = (uint32_t)r.p[0] | (uint32_t)r.p[1] << 8 | (uint32_t)r.p[2] << 16 |
            (uint32_t)r.p[3] << 24;
        r.p += 4;
      } else {
        r.bad = true;
      }
      uint64_t doubtful = rd_u64(&r);
      for (size_t t = 0; t < nt; t++) {
        for (size_t i = 0; i < 4; i++)
          aggs[4 * t + i] = rd_f64(&r);
        vals[t] = (struct ana_event_agg_values){0};
        offs[t] = 0;
        if (q->terms[t].numeric && q->terms[t].numbers)
          rd_numbers(&r, &nb, &offs[t], &vals[t].n_numbers);
        else if (!q->terms[t].numeric && q->terms[t].distinct)
          rd_texts(&r, &sc, &offs[t], &vals[t].n_texts);
      }
      if (r.bad || sc.failed || nb.failed)
        break;
      if (pass == 0 && doubtful) {
        rc = 0;
        goto out;
      }
      if (pass == 0)
        continue;
      /* the buffers are complete: their addresses hold now */
      for (size_t t = 0; t < nt; t++) {
        if (vals[t].n_numbers)
          vals[t].numbers = nb.v + offs[t];
        if (vals[t].n_texts)
          vals[t].texts = sc.p + offs[t];
      }
      if (agg(ctx, sc.p + key, prev ? INT64_MIN : (int64_t)b * 1000, aggs, vals)) {
        rc = 1;
        goto out;
      }
    }
    if (r.bad) {
      rc = bad_answer(err);
      goto out;
    }
    if (sc.failed || nb.failed) {
      rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      goto out;
    }
  }
  /* This instance's events not yet shipped: the caller aggregates them. */
  struct spool_scan ss = {q->account_id, q->from_ms, q->to_ms,   q->names, q->n_names,
                          rows,          ctx,        v->shipped, false};
  for (;;) {
    int n = ana_local_spool_each_untexted(v->db, ss.after, SPOOL_CHUNK, spool_scanned, &ss, err);
    if (n < 0) {
      rc = n;
      goto out;
    }
    if (ss.stopped || n < SPOOL_CHUNK)
      break;
  }
  rc = 1;
out:
  ana_free(sc.p);
  ana_free(nb.v);
  ana_free(vals);
  ana_free(offs);
  ana_free(aggs);
  ana_free(answer);
  free(s.p);
  return rc;
}
