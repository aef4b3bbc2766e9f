/* Routing: matches a request path against the generated route table's
 * templates (literal segments, "*", "**", "{field}", "{field=segments}"). The
 * table is sorted most specific first, so the first match wins. The path
 * comes percent-decoded by lws (grpc-gateway's legacy unescaping mode). */
#include "restbridge_internal.h"

#include <stdio.h>
#include <string.h>

#define MAX_SEGS 32

enum seg_kind { SEG_LIT, SEG_STAR, SEG_DSTAR };

struct seg {
  enum seg_kind kind;
  const char *text; /* SEG_LIT: not NUL-terminated */
  size_t len;
  int var; /* index into vars, or -1 */
};

struct tmpl {
  struct seg segs[MAX_SEGS];
  size_t n;
  struct {
    const char *field;
    size_t field_len;
    size_t first, last; /* segment range (inclusive) */
  } vars[RB_MAX_PATH_VARS];
  size_t n_vars;
};

/* Parses "/a/{b}/c/{d=x/y}" (any segments inside braces) into segments. Returns 0 or -1
 * (malformed). */
static int parse_template(const char *p, struct tmpl *t) {
  memset(t, 0, sizeof *t);
  if (*p != '/')
    return -1;
  int cur_var = -1;
  while (*p == '/') {
    p++;
    if (t->n == MAX_SEGS)
      return -1;
    struct seg *s = &t->segs[t->n];
    s->var = cur_var;
    if (*p == '{') {
      if (t->n_vars == RB_MAX_PATH_VARS)
        return -1;
      const char *name = ++p;
      while (*p && *p != '=' && *p != '}')
        p++;
      cur_var = (int)t->n_vars++;
      t->vars[cur_var].field = name;
      t->vars[cur_var].field_len = (size_t)(p - name);
      t->vars[cur_var].first = t->n;
      s->var = cur_var;
      if (*p == '}') { /* {f} means {f=*} */
        s->kind = SEG_STAR;
        t->vars[cur_var].last = t->n;
        cur_var = -1;
        p++;
        t->n++;
        continue;
      }
      if (*p != '=')
        return -1;
      p++;
    }
    const char *start = p;
    while (*p && *p != '/' && *p != '}')
      p++;
    s->text = start;
    s->len = (size_t)(p - start);
    s->kind = (s->len == 1 && *start == '*')              ? SEG_STAR
              : (s->len == 2 && !strncmp(start, "**", 2)) ? SEG_DSTAR
                                                          : SEG_LIT;
    if (*p == '}') {
      if (cur_var < 0)
        return -1;
      t->vars[cur_var].last = t->n;
      cur_var = -1;
      p++;
    }
    t->n++;
  }
  return *p || cur_var >= 0 ? -1 : 0;
}

struct path {
  const char *segs[MAX_SEGS];
  size_t lens[MAX_SEGS];
  size_t n;
};

static int split_path(const char *p, struct path *out) {
  out->n = 0;
  if (*p != '/')
    return -1;
  while (*p == '/') {
    p++;
    if (out->n == MAX_SEGS)
      return -1;
    const char *start = p;
    while (*p && *p != '/')
      p++;
    out->segs[out->n] = start;
    out->lens[out->n] = (size_t)(p - start);
    out->n++;
  }
  return 0;
}

/* Matches template segments from ti against path segments from pi; records
 * for each template segment the path range it consumed. */
static bool match_from(const struct tmpl *t, size_t ti, const struct path *pa, size_t pi,
                       size_t *from, size_t *to) {
  if (ti == t->n)
    return pi == pa->n;
  const struct seg *s = &t->segs[ti];
  from[ti] = pi;
  switch (s->kind) {
  case SEG_LIT:
    if (pi < pa->n && pa->lens[pi] == s->len && !memcmp(pa->segs[pi], s->text, s->len)) {
      to[ti] = pi + 1;
      return match_from(t, ti + 1, pa, pi + 1, from, to);
    }
    return false;
  case SEG_STAR:
    if (pi < pa->n && pa->lens[pi] > 0) {
      to[ti] = pi + 1;
      return match_from(t, ti + 1, pa, pi + 1, from, to);
    }
    return false;
  case SEG_DSTAR:
    for (size_t end = pa->n + 1; end-- > pi;) {
      to[ti] = end;
      if (match_from(t, ti + 1, pa, end, from, to))
        return true;
    }
    return false;
  }
  return false;
}

static bool match_route(const char *pattern, const struct path *pa, struct ana_arena *arena,
                        struct rb_match *m) {
  struct tmpl t;
  size_t from[MAX_SEGS], to[MAX_SEGS];
  if (parse_template(pattern, &t) < 0 || !match_from(&t, 0, pa, 0, from, to))
    return false;
  if (!arena)
    return true;
  m->n_vars = 0;
  for (size_t v = 0; v < t.n_vars; v++) {
    size_t a = from[t.vars[v].first], z = to[t.vars[v].last];
    const char *start = pa->segs[a];
    const char *end = z > a ? pa->segs[z - 1] + pa->lens[z - 1] : start;
    struct rb_path_var *pv = &m->vars[m->n_vars++];
    pv->field = ana_arena_strndup(arena, t.vars[v].field, t.vars[v].field_len);
    pv->value = ana_arena_strndup(arena, start, (size_t)(end - start));
    if (!pv->field || !pv->value)
      return false;
  }
  return true;
}

static void allow_add(char *allow, size_t size, const char *verb) {
  if (strstr(allow, verb))
    return;
  size_t n = strlen(allow);
  snprintf(allow + n, size - n, "%s%s", n ? ", " : "", verb);
}

int rb_route_match(const char *path, const char *method, bool websocket, struct ana_arena *arena,
                   struct rb_match *m) {
  struct path pa;
  memset(m, 0, sizeof *m);
  if (split_path(path, &pa) < 0)
    return ANA_ERR_NOT_FOUND;
  for (size_t i = 0; i < ana_route_count; i++) {
    const struct ana_route *r = &ana_routes[i];
    if (!match_route(r->pattern, &pa, NULL, NULL))
      continue;
    m->path_known = true;
    allow_add(m->allow, sizeof m->allow, r->verb);
    if (m->route || strcmp(r->verb, method) != 0)
      continue;
    if (r->websocket != websocket) {
      m->other_kind = true;
      continue;
    }
    if (!match_route(r->pattern, &pa, arena, m))
      return ANA_ERR_NOMEM;
    m->route = r;
  }
  return m->route ? 0 : ANA_ERR_NOT_FOUND;
}
