/* ClickHouse's HTTP interface over the shared libcurl client: statements in the body, inserts
 * gzip-compressed (unless CLICKHOUSE_GZIP is false), basic authentication, the database and a
 * query_id as URL parameters. */
#include "ana_alloc.h"
#include "ana_http.h"
#include "ana_store_config.h"
#include "clickhouse_backend.h"

#include <curl/curl.h>
#include <libdeflate.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

/* Answers longer than this are refused (the longest is a batch's list of sequence numbers). */
#define MAX_ANSWER (64u << 20)

struct ana_clickhouse {
  struct ana_http_client *http;
  char base[1024]; /* scheme://[userinfo@]host:port/path?  (ends with '?' or '&') */
  char auth[768];  /* "Authorization: Basic ..." or "" when the URL carries credentials */
  char db[80];     /* CLICKHOUSE_DATABASE */
  char host[256];  /* for messages, without credentials */
  int timeout_ms;
  bool gzip;      /* CLICKHOUSE_GZIP */
  int gzip_level; /* CLICKHOUSE_GZIP_LEVEL */
};

const char *ana_clickhouse_database(const struct ana_clickhouse *ch) {
  return ch->db;
}

/* The URL's authority without credentials, for messages. */
static void host_for_messages(const char *url, char *out, size_t cap) {
  const char *a = strstr(url, "://");
  a = a ? a + 3 : url;
  size_t n = strcspn(a, "/?#");
  const char *at = memchr(a, '@', n);
  if (at) {
    n -= (size_t)(at + 1 - a);
    a = at + 1;
  }
  snprintf(out, cap, "%.*s", (int)(n < 255 ? n : 255), a);
}

struct ana_clickhouse *ana_clickhouse_open(const struct ana_store_settings *cfg,
                                           struct ana_error *err) {
  struct ana_clickhouse *ch = ana_calloc(1, sizeof *ch);
  if (!ch) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  const char *h = cfg->clickhouse_host;
  bool has_scheme = strstr(h, "://") != NULL;
  const char *authority = has_scheme ? strstr(h, "://") + 3 : h;
  size_t alen = strcspn(authority, "/?#");
  bool has_port = false;
  for (size_t i = alen; i > 0; i--) { /* a ':' after the last ']' or '@' */
    char c = authority[i - 1];
    if (c == ':') {
      has_port = true;
      break;
    }
    if (c == ']' || c == '@')
      break;
  }
  bool creds = memchr(authority, '@', alen) != NULL;
  bool has_query = strchr(h, '?') != NULL;
  size_t hl = strlen(h);
  int n = snprintf(ch->base, sizeof ch->base, "%s%s%s%s%s", has_scheme ? "" : "http://", h,
                   has_port || has_scheme ? "" : ":8123",
                   has_query || (hl && h[hl - 1] == '/') || authority[alen] ? "" : "/",
                   has_query ? "&" : "?");
  if (n < 0 || (size_t)n >= sizeof ch->base) {
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "CLICKHOUSE_HOST: too long");
    goto fail;
  }
  host_for_messages(ch->base, ch->host, sizeof ch->host);
  snprintf(ch->db, sizeof ch->db, "%s",
           cfg->clickhouse_database && cfg->clickhouse_database[0] ? cfg->clickhouse_database
                                                                   : "analytics");
  if (!creds) {
    char userpass[512];
    int m =
        snprintf(userpass, sizeof userpass, "%s:%s",
                 cfg->clickhouse_user && cfg->clickhouse_user[0] ? cfg->clickhouse_user : "default",
                 cfg->clickhouse_password ? cfg->clickhouse_password : "");
    if (m < 0 || (size_t)m >= sizeof userpass) {
      ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                    "CLICKHOUSE_USER, CLICKHOUSE_PASSWORD: too long");
      goto fail;
    }
    unsigned char b64[700];
    EVP_EncodeBlock(b64, (const unsigned char *)userpass, m);
    snprintf(ch->auth, sizeof ch->auth, "Authorization: Basic %s", (const char *)b64);
  }
  ch->timeout_ms = cfg->clickhouse_timeout_ms > 0 ? cfg->clickhouse_timeout_ms : 30000;
  ch->gzip = cfg->clickhouse_gzip;
  ch->gzip_level = cfg->clickhouse_gzip_level > 0 ? cfg->clickhouse_gzip_level : 1;
  struct ana_http_options o = {
      .connect_timeout_ms = ch->timeout_ms < 5000 ? ch->timeout_ms : 5000,
      .max_response_bytes = MAX_ANSWER,
      .pool_size = 4,
      .ca_file = cfg->clickhouse_ca_file,
  };
  if (!(ch->http = ana_http_client_create(&o, err)))
    goto fail;
  return ch;
fail:
  ana_free(ch);
  return NULL;
}

void ana_clickhouse_close(struct ana_clickhouse *ch) {
  if (!ch)
    return;
  ana_http_client_destroy(ch->http);
  ana_free(ch);
}

/* POSTs body to the base URL with params (already escaped) appended. */
static int post(struct ana_clickhouse *ch, const char *params, const void *body, size_t len,
                bool gzip, char **out, size_t *out_len, struct ana_error *err) {
  size_t ul = strlen(ch->base) + strlen(params) + 1;
  char *url = ana_malloc(ul);
  if (!url)
    return ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory"), ANA_ERR_NOMEM;
  snprintf(url, ul, "%s%s", ch->base, params);
  const char *headers[3];
  size_t nh = 0;
  if (ch->auth[0])
    headers[nh++] = ch->auth;
  if (gzip)
    headers[nh++] = "Content-Encoding: gzip";
  struct ana_http_request req = {
      .method = "POST",
      .url = url,
      .headers = headers,
      .n_headers = nh,
      .body = body,
      .body_len = len,
      .timeout_ms = ch->timeout_ms,
      .field = "CLICKHOUSE_HOST",
  };
  struct ana_http_response resp;
  int rc = ana_http_perform(ch->http, &req, &resp, err);
  ana_free(url);
  if (rc == 0 && (resp.status != 200 || resp.truncated)) {
    size_t n = resp.body_len;
    while (n > 0 && (resp.body[n - 1] == '\n' || resp.body[n - 1] == ' '))
      n--;
    if (resp.status == 200) { /* truncated */
      ana_error_set(err, ANA_STATUS_UNAVAILABLE, "ClickHouse at %s: the answer exceeds %u bytes",
                    ch->host, MAX_ANSWER);
      rc = ANA_ERR_FULL;
    } else {
      ana_error_set(err, ANA_STATUS_UNAVAILABLE, "ClickHouse at %s answered %ld: %.*s", ch->host,
                    resp.status, (int)(n > 300 ? 300 : n), resp.body ? resp.body : "");
      rc = ANA_ERR_IO;
    }
  } else if (rc == ANA_ERR_TIMEOUT) {
    ana_error_set(err, ANA_STATUS_DEADLINE_EXCEEDED,
                  "ClickHouse at %s did not answer within CLICKHOUSE_TIMEOUT (%d ms)", ch->host,
                  ch->timeout_ms);
  } else if (rc < 0) {
    char detail[sizeof err->message];
    memcpy(detail, err->message, sizeof detail);
    ana_error_set(err, ANA_STATUS_UNAVAILABLE, "ClickHouse: %s", detail);
    rc = rc == ANA_ERR_NOMEM ? rc : ANA_ERR_IO;
  }
  if (rc == 0 && out) {
    if (out_len)
      *out_len = resp.body ? resp.body_len : 0;
    *out = resp.body ? resp.body : NULL;
    resp.body = NULL;
    if (!*out && !(*out = ana_calloc(1, 1)))
      rc = (ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory"), ANA_ERR_NOMEM);
  }
  ana_http_response_fini(&resp);
  return rc;
}

/* "database=...&query_id=...&" parameters, escaped. */
static int params_for(struct ana_clickhouse *ch, bool with_db, const char *query_id,
                      const char *query, char *out, size_t cap) {
  out[0] = '\0';
  size_t len = 0;
  if (with_db)
    len += (size_t)snprintf(out + len, cap - len, "database=%s&", ch->db);
  if (query_id && len < cap)
    len += (size_t)snprintf(out + len, cap - len, "query_id=%s&", query_id);
  if (query && len < cap) {
    char *q = curl_easy_escape(NULL, query, 0);
    if (!q)
      return -1;
    len += (size_t)snprintf(out + len, cap - len, "query=%s", q);
    curl_free(q);
  }
  return len < cap ? 0 : -1;
}

int ana_clickhouse_query(struct ana_clickhouse *ch, const char *sql, bool with_db,
                         const char *query_id, char **out, struct ana_error *err) {
  char params[512];
  if (out)
    *out = NULL;
  if (params_for(ch, with_db, query_id, NULL, params, sizeof params) < 0)
    return ana_error_set(err, ANA_STATUS_INTERNAL, "ClickHouse: parameters too long"),
           ANA_ERR_INTERNAL;
  return post(ch, params, sql, strlen(sql), false, out, NULL, err);
}

int ana_clickhouse_query_bin(struct ana_clickhouse *ch, const char *sql, char **out,
                             size_t *out_len, struct ana_error *err) {
  char params[512];
  *out = NULL;
  *out_len = 0;
  if (params_for(ch, true, NULL, NULL, params, sizeof params) < 0)
    return ana_error_set(err, ANA_STATUS_INTERNAL, "ClickHouse: parameters too long"),
           ANA_ERR_INTERNAL;
  return post(ch, params, sql, strlen(sql), false, out, out_len, err);
}

struct ana_clickhouse_gz {
  struct libdeflate_compressor *c; /* NULL: not compressed, the data only appended */
  unsigned char *out;
  size_t len, cap;
  bool ended, any; /* finished; a member was written */
};

int ana_clickhouse_gzip_level(const struct ana_clickhouse *ch) {
  return ch->gzip ? ch->gzip_level : 0;
}

struct ana_clickhouse_gz *ana_clickhouse_gz_new(int level) {
  struct ana_clickhouse_gz *g = ana_calloc(1, sizeof *g);
  if (!g)
    return NULL;
  if (level > 0 && !(g->c = libdeflate_alloc_compressor(level))) {
    ana_free(g);
    g = NULL;
  }
  return g;
}

/* Room for n more bytes in g->out. */
static int reserve(struct ana_clickhouse_gz *g, size_t n) {
  if (g->cap - g->len >= n)
    return 0;
  size_t cap = g->cap ? g->cap : 256 * 1024;
  while (cap - g->len < n)
    cap *= 2;
  unsigned char *out = ana_realloc(g->out, cap);
  if (!out)
    return ANA_ERR_NOMEM;
  g->out = out;
  g->cap = cap;
  return 0;
}

int ana_clickhouse_gz_add(struct ana_clickhouse_gz *g, const void *data, size_t len, bool finish) {
  if (g->ended)
    return ANA_ERR_INTERNAL;
  g->ended = finish;
  if (!g->c) {
    if (reserve(g, len) < 0)
      return ANA_ERR_NOMEM;
    if (len)
      memcpy(g->out + g->len, data, len);
    g->len += len;
    return 0;
  }
  if (len == 0 && (g->any || !finish))
    return 0;
  /* One gzip member (RFC 1952: a stream is one or more; ClickHouse reads them all). */
  size_t bound = libdeflate_gzip_compress_bound(g->c, len);
  if (reserve(g, bound) < 0)
    return ANA_ERR_NOMEM;
  size_t n = libdeflate_gzip_compress(g->c, data, len, g->out + g->len, bound);
  if (n == 0)
    return ANA_ERR_INTERNAL;
  g->len += n;
  g->any = true;
  return 0;
}

unsigned char *ana_clickhouse_gz_take(struct ana_clickhouse_gz *g, size_t *len) {
  unsigned char *out = g->out;
  *len = g->len;
  g->out = NULL;
  g->cap = g->len = 0;
  return out;
}

void ana_clickhouse_gz_free(struct ana_clickhouse_gz *g) {
  if (!g)
    return;
  libdeflate_free_compressor(g->c);
  ana_free(g->out);
  ana_free(g);
}

int ana_clickhouse_insert_gzipped(struct ana_clickhouse *ch, const char *insert_sql,
                                  const void *body, size_t len, const char *query_id,
                                  struct ana_error *err) {
  char params[1024];
  if (params_for(ch, true, query_id, insert_sql, params, sizeof params) < 0)
    return ana_error_set(err, ANA_STATUS_INTERNAL, "ClickHouse: parameters too long"),
           ANA_ERR_INTERNAL;
  return post(ch, params, body, len, ch->gzip, NULL, NULL, err);
}
