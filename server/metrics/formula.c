/* Metric formula language: a recursive-descent parser into a small tree,
 * with variables and other metrics expanded inline and aggregate terms
 * collected into a deduplicated table; evaluation walks the tree.
 *
 * The tree stays shallow whatever the input: a run of '+'/'-' (or '*'/'/')
 * is one node with a list of operands, and only '(', unary '-' and each
 * expanded variable or metric nest, at most ANA_FORMULA_MAX_DEPTH deep. So
 * the recursive parse, evaluation and printing need little stack.
 *
 * Numbers go through strtod and snprintf("%g"), which follow LC_NUMERIC; the
 * server never calls setlocale, so that is "C". */
#include "ana_formula.h"

#include "ana_alloc.h"
#include "ana_arena.h"
#include "ana_text.h"

#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum node_kind { N_NUM, N_TERM, N_NEG, N_SUM, N_PRODUCT };

struct node {
  enum node_kind kind;
  union {
    double num;           /* N_NUM */
    size_t term;          /* N_TERM: index into the term table */
    struct node *operand; /* N_NEG */
    struct {
      struct node **items;
      char *ops; /* ops[i] applies items[i] (i >= 1): '+' '-' for N_SUM, '*' '/' for N_PRODUCT */
      size_t n;  /* >= 2 */
    } chain;
  } u;
};

struct ana_formula {
  struct ana_arena arena; /* nodes, term strings, scratch of the parse */
  struct node *root;
  size_t n_terms;
  struct ana_agg_term terms[ANA_FORMULA_MAX_TERMS];
};

static const char *const fn_names[] = {
    [ANA_AGG_COUNT] = "count", [ANA_AGG_SUM] = "sum", [ANA_AGG_AVG] = "avg",
    [ANA_AGG_MIN] = "min",     [ANA_AGG_MAX] = "max", [ANA_AGG_UNIQ] = "uniq",
    [ANA_AGG_P50] = "p50",     [ANA_AGG_P90] = "p90", [ANA_AGG_P95] = "p95",
    [ANA_AGG_P99] = "p99",
};
#define N_FNS (sizeof fn_names / sizeof fn_names[0])

/* Top-level event fields, as segment paths; any other path is a property. */
static const char *const event_fields[][2] = {
    {"sessionId", NULL}, {"eventType", NULL},      {"eventName", NULL},   {"eventId", NULL},
    {"context", "ip"},   {"context", "userAgent"}, {"context", "locale"},
};
#define N_EVENT_FIELDS (sizeof event_fields / sizeof event_fields[0])

/* ---- parser state ---- */

/* The variables bare identifiers see: the metric's, or another metric's. */
struct scope {
  const char *const *names;
  const char *const *formulas;
  size_t n;
  bool *used; /* the parsed metric's scope only: variables reached so far */
};

/* One variable or metric being expanded, for cycles and error messages. */
struct frame {
  bool metric;
  const char *name;
  const struct scope *scope; /* the scope the name was looked up in */
};

enum tok_kind {
  T_END,
  T_NUM,
  T_IDENT,
  T_STRING,
  T_LPAREN,
  T_RPAREN,
  T_PLUS,
  T_MINUS,
  T_STAR,
  T_SLASH,
  T_DOT
};

struct token {
  enum tok_kind kind;
  size_t start, end; /* byte offsets in the text */
  double num;        /* T_NUM */
  char *str;         /* T_STRING: the decoded text (arena) */
};

/* One text being parsed: the formula, a variable's or another metric's. */
struct src {
  const char *text;
  size_t len;
  const struct scope *scope;
  size_t pos; /* next byte to read */
  struct token tok;
};

struct parser {
  struct ana_formula *f;
  const struct ana_formula_env *env;
  struct ana_error *err;
  int *error_pos;
  bool failed;
  int depth;       /* current nesting, across expansions */
  size_t expanded; /* bytes of text parsed so far, expansions included */
  struct frame frames[ANA_FORMULA_MAX_DEPTH + 1];
  size_t n_frames;
};

/* ---- error reporting ---- */

/* Appends name to buf in quotes, cut at a character boundary when long. */
static void append_name(char *buf, size_t cap, const char *name) {
  const size_t max = 64;
  size_t n = strlen(name), len = strlen(buf);
  bool cut = n > max;
  if (cut) {
    n = max;
    while (n > 0 && ((unsigned char)name[n] & 0xc0) == 0x80)
      n--;
  }
  snprintf(buf + len, cap - len, "'%.*s%s'", (int)n, name, cut ? "..." : "");
}

static void append(char *buf, size_t cap, const char *s) {
  size_t len = strlen(buf);
  snprintf(buf + len, cap - len, "%s", s);
}

/* "in variable 'a', metric 'm': " for frames [0, n); a long chain keeps its
 * two ends, so that the message itself still fits. */
static void frames_prefix(const struct parser *p, size_t n, char *buf, size_t cap) {
  buf[0] = '\0';
  for (size_t i = 0; i < n; i++) {
    if (n > 4 && i >= 2 && i < n - 2) {
      if (i == 2)
        append(buf, cap, ", ...");
      continue;
    }
    append(buf, cap, i == 0 ? "in " : ", ");
    append(buf, cap, p->frames[i].metric ? "metric " : "variable ");
    append_name(buf, cap, p->frames[i].name);
  }
  if (n > 0)
    append(buf, cap, ": ");
}

/* 1-based column of byte offset off, in characters (UTF-8 lead bytes). */
static int column(const char *text, size_t off) {
  int col = 1;
  for (size_t i = 0; i < off && text[i]; i++)
    if (((unsigned char)text[i] & 0xc0) != 0x80)
      col++;
  return col;
}

static void set_error(struct parser *p, int pos, const char *prefix, const char *msg) {
  if (p->failed)
    return;
  p->failed = true;
  if (p->error_pos)
    *p->error_pos = p->n_frames == 0 ? pos : 0;
  if (pos > 0)
    ana_error_set(p->err, ANA_STATUS_INVALID_ARGUMENT, "formula: %s%s at character %d", prefix, msg,
                  pos);
  else
    ana_error_set(p->err, ANA_STATUS_INVALID_ARGUMENT, "formula: %s%s", prefix, msg);
}

/* An error at byte offset off of the text being parsed. */
static void fail_at(struct parser *p, const struct src *s, size_t off, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fail_at(struct parser *p, const struct src *s, size_t off, const char *fmt, ...) {
  char msg[ANA_ERROR_MESSAGE_MAX], prefix[ANA_ERROR_MESSAGE_MAX];
  va_list ap;
  if (p->failed)
    return;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  frames_prefix(p, p->n_frames, prefix, sizeof prefix);
  set_error(p, column(s->text, off), prefix, msg);
}

/* An error about the expansion itself (a cycle, too many metrics): no
 * position; the context is the frames before the first one involved. */
static void fail_chain(struct parser *p, size_t first, const char *msg) {
  char prefix[ANA_ERROR_MESSAGE_MAX];
  if (p->failed)
    return;
  frames_prefix(p, first, prefix, sizeof prefix);
  set_error(p, 0, prefix, msg);
}

static void fail_nomem(struct parser *p) {
  if (p->failed)
    return;
  p->failed = true;
  if (p->error_pos)
    *p->error_pos = 0;
  ana_error_set(p->err, ANA_STATUS_RESOURCE_EXHAUSTED, "formula: out of memory");
}

/* What the current token is, for "unexpected ..." (truncated when long). */
static void describe_token(const struct src *s, char *buf, size_t cap) {
  const struct token *t = &s->tok;
  size_t n = t->end - t->start;
  const char *text = s->text + t->start;
  if (t->kind == T_END) {
    snprintf(buf, cap, "end of formula");
    return;
  }
  bool cut = n > 40;
  if (cut) {
    n = 40;
    while (n > 0 && ((unsigned char)text[n] & 0xc0) == 0x80)
      n--;
  }
  if (t->kind == T_STRING)
    snprintf(buf, cap, "string %.*s%s", (int)n, text, cut ? "...\"" : "");
  else
    snprintf(buf, cap, "'%.*s%s'", (int)n, text, cut ? "..." : "");
}

static void fail_unexpected(struct parser *p, const struct src *s) {
  char what[128];
  describe_token(s, what, sizeof what);
  fail_at(p, s, s->tok.start, "unexpected %s", what);
}

/* ---- lexer ---- */

static bool ident_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool ident_char(char c) {
  return ident_start(c) || (c >= '0' && c <= '9');
}

static bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

static bool is_ident(const char *s) {
  if (!ident_start(s[0]))
    return false;
  for (s++; *s; s++)
    if (!ident_char(*s))
      return false;
  return true;
}

/* A double-quoted string at s->pos: decodes \" and \\ into the arena. */
static bool lex_string(struct parser *p, struct src *s) {
  size_t open = s->pos, i = s->pos + 1, n = 0;
  /* First pass: find the end, check the escapes, measure. */
  for (;; i++, n++) {
    if (i >= s->len) {
      fail_at(p, s, open, "unterminated string");
      return false;
    }
    char c = s->text[i];
    if (c == '"')
      break;
    if (c == '\\') {
      char e = i + 1 < s->len ? s->text[i + 1] : '\0';
      if (e == '\0') {
        fail_at(p, s, open, "unterminated string");
        return false;
      }
      if (e != '"' && e != '\\') {
        if (e > ' ' && e < 0x7f)
          fail_at(p, s, i, "invalid escape '\\%c' (only \\\" and \\\\ are allowed)", e);
        else
          fail_at(p, s, i, "invalid escape (only \\\" and \\\\ are allowed)");
        return false;
      }
      i++;
    }
  }
  size_t close = i;
  char *out = ana_arena_alloc(&p->f->arena, n + 1);
  if (!out) {
    fail_nomem(p);
    return false;
  }
  n = 0;
  for (i = open + 1; i < close; i++) {
    if (s->text[i] == '\\')
      i++;
    out[n++] = s->text[i];
  }
  out[n] = '\0';
  if (!ana_utf8_valid(out, NULL)) {
    fail_at(p, s, open, "string is not valid UTF-8");
    return false;
  }
  s->tok.kind = T_STRING;
  s->tok.str = out;
  s->pos = close + 1;
  return true;
}

/* A number at s->pos: digits ['.' digits] [('e'|'E') ['+'|'-'] digits]. */
static bool lex_number(struct parser *p, struct src *s) {
  const char *t = s->text;
  size_t i = s->pos;
  while (i < s->len && is_digit(t[i]))
    i++;
  if (i + 1 < s->len && t[i] == '.' && is_digit(t[i + 1])) {
    i++;
    while (i < s->len && is_digit(t[i]))
      i++;
  }
  if (i < s->len && (t[i] == 'e' || t[i] == 'E')) {
    size_t j = i + 1;
    if (j < s->len && (t[j] == '+' || t[j] == '-'))
      j++;
    if (j < s->len && is_digit(t[j])) {
      i = j;
      while (i < s->len && is_digit(t[i]))
        i++;
    }
  }
  /* A private copy: strtod on the text itself could read on ("0x1p3"). */
  char *copy = ana_arena_strndup(&p->f->arena, t + s->pos, i - s->pos);
  if (!copy) {
    fail_nomem(p);
    return false;
  }
  double v = strtod(copy, NULL);
  if (!isfinite(v)) {
    fail_at(p, s, s->pos, "number '%.40s' is out of range", copy);
    return false;
  }
  s->tok.kind = T_NUM;
  s->tok.num = v;
  s->pos = i;
  return true;
}

/* Reads the next token into s->tok; false (error set) on a lexical error. */
static bool next(struct parser *p, struct src *s) {
  const char *t = s->text;
  while (s->pos < s->len &&
         (t[s->pos] == ' ' || t[s->pos] == '\t' || t[s->pos] == '\n' || t[s->pos] == '\r'))
    s->pos++;
  s->tok.start = s->pos;
  s->tok.str = NULL;
  if (s->pos >= s->len) {
    s->tok.kind = T_END;
    s->tok.end = s->pos;
    return true;
  }
  char c = t[s->pos];
  bool ok = true;
  switch (c) {
  case '(': s->tok.kind = T_LPAREN, s->pos++; break;
  case ')': s->tok.kind = T_RPAREN, s->pos++; break;
  case '+': s->tok.kind = T_PLUS, s->pos++; break;
  case '-': s->tok.kind = T_MINUS, s->pos++; break;
  case '*': s->tok.kind = T_STAR, s->pos++; break;
  case '/': s->tok.kind = T_SLASH, s->pos++; break;
  case '.': s->tok.kind = T_DOT, s->pos++; break;
  case '"': ok = lex_string(p, s); break;
  default:
    if (is_digit(c)) {
      ok = lex_number(p, s);
    } else if (ident_start(c)) {
      while (s->pos < s->len && ident_char(t[s->pos]))
        s->pos++;
      s->tok.kind = T_IDENT;
    } else {
      size_t n = ana_utf8_seq_len(t + s->pos, s->len - s->pos);
      if (n > 0 && (unsigned char)c >= 0x80)
        fail_at(p, s, s->pos, "unexpected '%.*s'", (int)n, t + s->pos);
      else if ((unsigned char)c > ' ' && (unsigned char)c < 0x7f)
        fail_at(p, s, s->pos, "unexpected '%c'", c);
      else
        fail_at(p, s, s->pos, "unexpected byte 0x%02X", (unsigned char)c);
      ok = false;
    }
  }
  s->tok.end = s->pos;
  return ok;
}

/* ---- tree building ---- */

static struct node *new_node(struct parser *p, enum node_kind kind) {
  struct node *n = ana_arena_calloc(&p->f->arena, 1, sizeof *n);
  if (!n)
    fail_nomem(p);
  else
    n->kind = kind;
  return n;
}

/* Entering one more level of nesting at byte offset off. */
static bool enter(struct parser *p, const struct src *s, size_t off) {
  if (p->depth >= ANA_FORMULA_MAX_DEPTH) {
    fail_at(p, s, off, "nesting deeper than %d", ANA_FORMULA_MAX_DEPTH);
    return false;
  }
  p->depth++;
  return true;
}

static bool same_term(const struct ana_agg_term *a, const struct ana_agg_term *b) {
  if (a->fn != b->fn || a->field_kind != b->field_kind ||
      a->n_field_segments != b->n_field_segments)
    return false;
  if ((a->event_name == NULL) != (b->event_name == NULL) ||
      (a->event_name && strcmp(a->event_name, b->event_name) != 0))
    return false;
  for (size_t i = 0; i < a->n_field_segments; i++)
    if (strcmp(a->field_segments[i], b->field_segments[i]) != 0)
      return false;
  return true;
}

/* The index of term t (its strings in the arena), adding it when new. */
static bool intern_term(struct parser *p, const struct src *s, size_t off,
                        const struct ana_agg_term *t, size_t *index) {
  struct ana_formula *f = p->f;
  for (size_t i = 0; i < f->n_terms; i++) {
    if (same_term(&f->terms[i], t)) {
      *index = i;
      return true;
    }
  }
  if (f->n_terms >= ANA_FORMULA_MAX_TERMS) {
    fail_at(p, s, off, "more than %d distinct terms", ANA_FORMULA_MAX_TERMS);
    return false;
  }
  f->terms[f->n_terms] = *t;
  *index = f->n_terms++;
  return true;
}

static struct node *term_node(struct parser *p, const struct src *s, size_t off,
                              const struct ana_agg_term *t) {
  size_t index;
  if (!intern_term(p, s, off, t, &index))
    return NULL;
  struct node *n = new_node(p, N_TERM);
  if (n)
    n->u.term = index;
  return n;
}

/* Sets the term's field from the path segments (arena strings). */
static bool classify_field(struct parser *p, const struct src *s, size_t off,
                           struct ana_agg_term *t, const char **segs, size_t n) {
  t->field_kind = ANA_FIELD_NONE;
  t->field = NULL;
  t->field_segments = NULL;
  t->n_field_segments = 0;
  if (n == 0)
    return true;
  t->field_kind = ANA_FIELD_PROPERTY;
  if (strcmp(segs[0], "properties") == 0) {
    if (n == 1) {
      fail_at(p, s, off,
              "'properties' needs a property name after it, e.g. "
              "properties.charactersCount,");
      return false;
    }
    segs++, n--;
  } else {
    for (size_t i = 0; i < N_EVENT_FIELDS; i++) {
      size_t len = event_fields[i][1] ? 2 : 1;
      if (len == n && strcmp(event_fields[i][0], segs[0]) == 0 &&
          (len == 1 || strcmp(event_fields[i][1], segs[1]) == 0))
        t->field_kind = ANA_FIELD_EVENT;
    }
  }
  size_t total = 0;
  for (size_t i = 0; i < n; i++)
    total += strlen(segs[i]) + 1;
  char *joined = ana_arena_alloc(&p->f->arena, total);
  if (!joined) {
    fail_nomem(p);
    return false;
  }
  joined[0] = '\0';
  for (size_t i = 0, len = 0; i < n; i++) {
    size_t k = strlen(segs[i]);
    if (i > 0)
      joined[len++] = '.';
    memcpy(joined + len, segs[i], k + 1);
    len += k;
  }
  t->field = joined;
  t->field_segments = segs;
  t->n_field_segments = n;
  return true;
}

/* A name inside a call: an identifier or a string (non-empty), in the arena. */
static const char *call_name(struct parser *p, struct src *s, const char *what) {
  const struct token *t = &s->tok;
  if (t->kind == T_IDENT) {
    char *name = ana_arena_strndup(&p->f->arena, s->text + t->start, t->end - t->start);
    if (!name)
      fail_nomem(p);
    return name;
  }
  if (t->kind == T_STRING) {
    if (t->str[0] == '\0') {
      fail_at(p, s, t->start, "empty %s", what);
      return NULL;
    }
    return t->str;
  }
  fail_unexpected(p, s);
  return NULL;
}

/* fn '(' (name | '*') ('.' segment)* ')', the current token being '('. */
static struct node *parse_call(struct parser *p, struct src *s, enum ana_agg_fn fn, size_t fn_off) {
  struct ana_agg_term t = {.fn = fn};
  const char **segs = NULL;
  size_t n = 0, cap = 0;
  if (!next(p, s))
    return NULL;
  if (s->tok.kind == T_STAR) {
    t.event_name = NULL;
  } else if (!(t.event_name = call_name(p, s, "event name"))) {
    return NULL;
  }
  if (!next(p, s))
    return NULL;
  while (s->tok.kind == T_DOT) {
    if (!next(p, s))
      return NULL;
    const char *seg = call_name(p, s, "field name");
    if (!seg)
      return NULL;
    if (n == cap) {
      const char **bigger = ana_arena_alloc(&p->f->arena, (cap ? cap * 2 : 4) * sizeof *segs);
      if (!bigger) {
        fail_nomem(p);
        return NULL;
      }
      if (n)
        memcpy(bigger, segs, n * sizeof *segs);
      segs = bigger;
      cap = cap ? cap * 2 : 4;
    }
    segs[n++] = seg;
    if (!next(p, s))
      return NULL;
  }
  if (s->tok.kind != T_RPAREN) {
    fail_unexpected(p, s);
    return NULL;
  }
  if (n == 0 && fn != ANA_AGG_COUNT) {
    fail_at(p, s, fn_off, "'%s' needs a field, e.g. %s(%s),", fn_names[fn], fn_names[fn],
            fn == ANA_AGG_UNIQ ? "*.sessionId" : "message_sent.charactersCount");
    return NULL;
  }
  if (!classify_field(p, s, fn_off, &t, segs, n))
    return NULL;
  if (!next(p, s))
    return NULL;
  return term_node(p, s, fn_off, &t);
}

static struct node *parse_text(struct parser *p, const char *text, const struct scope *scope);

static const struct scope empty_scope = {NULL, NULL, 0, NULL};

/* Expands a variable or metric found for a bare identifier at off. */
static struct node *expand(struct parser *p, const struct src *s, size_t off, struct frame fr,
                           const char *text, const struct scope *inner) {
  char msg[ANA_ERROR_MESSAGE_MAX];
  size_t metrics = 0, first_metric = p->n_frames;
  for (size_t i = 0; i < p->n_frames; i++) {
    const struct frame *g = &p->frames[i];
    bool same = g->metric == fr.metric && strcmp(g->name, fr.name) == 0 &&
                (fr.metric || g->scope == fr.scope);
    if (same) {
      snprintf(msg, sizeof msg, "cycle in %s: ", fr.metric ? "metrics" : "variables");
      for (size_t j = i; j < p->n_frames; j++) {
        if (p->frames[j].metric == fr.metric && (fr.metric || p->frames[j].scope == fr.scope)) {
          append(msg, sizeof msg, p->frames[j].name);
          append(msg, sizeof msg, " -> ");
        }
      }
      append(msg, sizeof msg, fr.name);
      fail_chain(p, i, msg);
      return NULL;
    }
    if (g->metric) {
      if (metrics == 0)
        first_metric = i;
      metrics++;
    }
  }
  if (fr.metric && metrics >= ANA_FORMULA_MAX_METRIC_DEPTH) {
    snprintf(msg, sizeof msg, "metrics nested deeper than %d: ", ANA_FORMULA_MAX_METRIC_DEPTH);
    for (size_t j = first_metric; j < p->n_frames; j++) {
      if (p->frames[j].metric) {
        append(msg, sizeof msg, p->frames[j].name);
        append(msg, sizeof msg, " -> ");
      }
    }
    append(msg, sizeof msg, fr.name);
    fail_chain(p, first_metric, msg);
    return NULL;
  }
  /* Bounds the work and memory of a parse: variables that use each other
   * twice would otherwise double the formula at each level. */
  if (!text)
    text = "";
  if (p->expanded + strnlen(text, ANA_FORMULA_MAX_TEXT + 1) > ANA_FORMULA_MAX_EXPANDED) {
    fail_at(p, s, off, "longer than %d bytes after expanding variables and metrics",
            ANA_FORMULA_MAX_EXPANDED);
    return NULL;
  }
  if (!enter(p, s, off))
    return NULL;
  assert(p->n_frames < sizeof p->frames / sizeof p->frames[0]);
  p->frames[p->n_frames++] = fr;
  struct node *n = parse_text(p, text, inner);
  p->n_frames--;
  p->depth--;
  return n;
}

/* A bare identifier: a variable, another metric, or count(name). */
static struct node *parse_name(struct parser *p, struct src *s, size_t off, const char *name) {
  const struct scope *sc = s->scope;
  for (size_t i = 0; i < sc->n; i++) {
    if (sc->names[i] && strcmp(sc->names[i], name) == 0) {
      if (sc->used)
        sc->used[i] = true;
      struct frame fr = {false, sc->names[i], sc};
      return expand(p, s, off, fr, sc->formulas[i], sc);
    }
  }
  const struct ana_formula_env *env = p->env;
  const char *formula = NULL;
  struct scope inner = {NULL, NULL, 0, NULL};
  if (env && env->lookup_metric &&
      env->lookup_metric(env->ctx, name, &formula, &inner.names, &inner.formulas, &inner.n) == 0) {
    if (!inner.names || !inner.formulas)
      inner.n = 0;
    struct frame fr = {true, name, NULL};
    return expand(p, s, off, fr, formula, &inner);
  }
  /* Not a variable nor a metric: the count of an event name, the one the
   * environment resolves it to (see ana_formula_match_event_name). */
  const char *event = name;
  if (env && env->resolve_event) {
    const char *r = env->resolve_event(env->ctx, name);
    if (r && strcmp(r, name) != 0) {
      event = ana_arena_strdup(&p->f->arena, r);
      if (!event) {
        fail_nomem(p);
        return NULL;
      }
    }
  }
  struct ana_agg_term t = {.fn = ANA_AGG_COUNT, .event_name = event};
  return term_node(p, s, off, &t);
}

static struct node *parse_expr(struct parser *p, struct src *s);

static struct node *parse_primary(struct parser *p, struct src *s) {
  struct token t = s->tok;
  if (t.kind == T_NUM) {
    struct node *n = new_node(p, N_NUM);
    if (!n || !next(p, s))
      return NULL;
    n->u.num = t.num;
    return n;
  }
  if (t.kind == T_LPAREN) {
    if (!enter(p, s, t.start) || !next(p, s))
      return NULL;
    struct node *n = parse_expr(p, s);
    if (!n)
      return NULL;
    if (s->tok.kind != T_RPAREN) {
      fail_unexpected(p, s);
      return NULL;
    }
    p->depth--;
    return next(p, s) ? n : NULL;
  }
  if (t.kind == T_IDENT) {
    size_t len = t.end - t.start;
    char *name = ana_arena_strndup(&p->f->arena, s->text + t.start, len);
    if (!name) {
      fail_nomem(p);
      return NULL;
    }
    if (!next(p, s))
      return NULL;
    if (s->tok.kind == T_LPAREN) {
      for (size_t i = 0; i < N_FNS; i++)
        if (strcasecmp(name, fn_names[i]) == 0)
          return parse_call(p, s, (enum ana_agg_fn)i, t.start);
      fail_at(p, s, t.start, "unknown function '%.40s%s'", name, len > 40 ? "..." : "");
      return NULL;
    }
    return parse_name(p, s, t.start, name);
  }
  fail_unexpected(p, s);
  return NULL;
}

static struct node *parse_unary(struct parser *p, struct src *s) {
  if (s->tok.kind != T_MINUS)
    return parse_primary(p, s);
  size_t off = s->tok.start;
  if (!enter(p, s, off) || !next(p, s))
    return NULL;
  struct node *operand = parse_unary(p, s);
  if (!operand)
    return NULL;
  p->depth--;
  struct node *n = new_node(p, N_NEG);
  if (n)
    n->u.operand = operand;
  return n;
}

typedef struct node *(*parse_fn)(struct parser *, struct src *);

/* operand (op operand)*: one chain node when there is an operator. */
static struct node *parse_chain(struct parser *p, struct src *s, enum node_kind kind,
                                enum tok_kind op1, enum tok_kind op2, parse_fn operand) {
  struct node *first = operand(p, s);
  if (!first)
    return NULL;
  if (s->tok.kind != op1 && s->tok.kind != op2)
    return first;
  struct node *n = new_node(p, kind);
  if (!n)
    return NULL;
  struct node **items = NULL;
  char *ops = NULL;
  size_t count = 0, cap = 0;
  struct node *item = first;
  char op = 0;
  for (;;) {
    if (count == cap) {
      size_t bigger = cap ? cap * 2 : 4;
      struct node **ni = ana_arena_alloc(&p->f->arena, bigger * sizeof *ni);
      char *no = ana_arena_alloc(&p->f->arena, bigger);
      if (!ni || !no) {
        fail_nomem(p);
        return NULL;
      }
      if (count) {
        memcpy(ni, items, count * sizeof *ni);
        memcpy(no, ops, count);
      }
      items = ni, ops = no, cap = bigger;
    }
    items[count] = item;
    ops[count] = op;
    count++;
    if (s->tok.kind != op1 && s->tok.kind != op2)
      break;
    op = s->text[s->tok.start];
    if (!next(p, s) || !(item = operand(p, s)))
      return NULL;
  }
  n->u.chain.items = items;
  n->u.chain.ops = ops;
  n->u.chain.n = count;
  return n;
}

static struct node *parse_product(struct parser *p, struct src *s) {
  return parse_chain(p, s, N_PRODUCT, T_STAR, T_SLASH, parse_unary);
}

static struct node *parse_expr(struct parser *p, struct src *s) {
  return parse_chain(p, s, N_SUM, T_PLUS, T_MINUS, parse_product);
}

/* A whole text: an expression and nothing after it. */
static struct node *parse_text(struct parser *p, const char *text, const struct scope *scope) {
  struct src s = {.text = text, .scope = scope};
  s.len = strnlen(text, ANA_FORMULA_MAX_TEXT + 1);
  if (s.len > ANA_FORMULA_MAX_TEXT) {
    fail_at(p, &s, ANA_FORMULA_MAX_TEXT, "longer than %d bytes", ANA_FORMULA_MAX_TEXT);
    return NULL;
  }
  p->expanded += s.len;
  if (!next(p, &s))
    return NULL;
  struct node *n = parse_expr(p, &s);
  if (n && s.tok.kind != T_END) {
    fail_unexpected(p, &s);
    return NULL;
  }
  return n;
}

/* ---- public API ---- */

static struct ana_formula *formula_new(void) {
  struct ana_formula *f = ana_calloc(1, sizeof *f);
  if (f)
    ana_arena_init(&f->arena, 0, 0);
  return f;
}

void ana_formula_free(struct ana_formula *f) {
  if (!f)
    return;
  ana_arena_fini(&f->arena);
  ana_free(f);
}

/* Checks the declared variable names: identifiers, distinct, not too many. */
static bool check_var_names(struct parser *p, const struct scope *sc) {
  char msg[ANA_ERROR_MESSAGE_MAX] = "";
  if (sc->n > ANA_FORMULA_MAX_VARS) {
    snprintf(msg, sizeof msg, "more than %d variables", ANA_FORMULA_MAX_VARS);
  } else {
    for (size_t i = 0; i < sc->n && !msg[0]; i++) {
      if (!sc->names[i] || !sc->formulas[i]) {
        snprintf(msg, sizeof msg, "variable %zu has no %s", i + 1,
                 sc->names[i] ? "formula" : "name");
        break;
      }
      if (!is_ident(sc->names[i])) {
        append(msg, sizeof msg, "variable name ");
        append_name(msg, sizeof msg, sc->names[i]);
        append(msg, sizeof msg,
               " is not an identifier (letters, digits and '_', "
               "not starting with a digit)");
        break;
      }
      for (size_t j = 0; j < i; j++) {
        if (strcmp(sc->names[i], sc->names[j]) == 0) {
          append(msg, sizeof msg, "variable ");
          append_name(msg, sizeof msg, sc->names[i]);
          append(msg, sizeof msg, " is declared twice");
          break;
        }
      }
    }
  }
  if (!msg[0])
    return true;
  fail_chain(p, 0, msg);
  return false;
}

/* Parses text (or, when var >= 0, variable var on its own) into f. */
static struct node *parse_root(struct ana_formula *f, const struct ana_formula_env *env,
                               const struct scope *top, const char *text, long var,
                               struct ana_error *err, int *error_pos) {
  struct parser p = {.f = f, .env = env, .err = err, .error_pos = error_pos};
  if (var < 0)
    return parse_text(&p, text, top);
  struct frame fr = {false, top->names[var], top};
  p.frames[p.n_frames++] = fr;
  p.depth = 1;
  return parse_text(&p, top->formulas[var], top);
}

struct ana_formula *ana_formula_parse(const char *text, const struct ana_formula_env *env,
                                      struct ana_error *err, int *error_pos) {
  struct ana_formula *f = NULL, *scratch = NULL;
  struct scope top = empty_scope;
  struct parser p0 = {.err = err, .error_pos = error_pos};
  bool ok = false;

  assert(text);
  if (error_pos)
    *error_pos = 0;
  f = formula_new();
  if (!f) {
    fail_nomem(&p0);
    goto out;
  }
  if (env && env->n_vars > 0) {
    top.names = env->var_names;
    top.formulas = env->var_formulas;
    top.n = env->n_vars;
    if (!check_var_names(&p0, &top))
      goto out;
    top.used = ana_arena_calloc(&f->arena, top.n, sizeof *top.used);
    if (!top.used) {
      fail_nomem(&p0);
      goto out;
    }
  }
  f->root = parse_root(f, env, &top, text, -1, err, error_pos);
  if (!f->root)
    goto out;
  /* Variables the formula does not use must still be valid. */
  for (size_t i = 0; i < top.n; i++) {
    if (top.used[i])
      continue;
    top.used[i] = true;
    scratch = formula_new();
    if (!scratch) {
      fail_nomem(&p0);
      goto out;
    }
    if (!parse_root(scratch, env, &top, NULL, (long)i, err, error_pos))
      goto out;
    ana_formula_free(scratch);
    scratch = NULL;
  }
  ok = true;
out:
  ana_formula_free(scratch);
  if (!ok) {
    ana_formula_free(f);
    return NULL;
  }
  return f;
}

size_t ana_formula_term_count(const struct ana_formula *f) {
  return f->n_terms;
}

const struct ana_agg_term *ana_formula_term(const struct ana_formula *f, size_t i) {
  return i < f->n_terms ? &f->terms[i] : NULL;
}

/* ---- evaluation ---- */

static bool eval_node(const struct node *n, const double *values, double *out) {
  double acc, v;
  switch (n->kind) {
  case N_NUM: *out = n->u.num; return true;
  case N_TERM: *out = values[n->u.term]; return isfinite(*out);
  case N_NEG:
    if (!eval_node(n->u.operand, values, &v))
      return false;
    *out = -v;
    return true;
  case N_SUM:
  case N_PRODUCT:
    if (!eval_node(n->u.chain.items[0], values, &acc))
      return false;
    for (size_t i = 1; i < n->u.chain.n; i++) {
      if (!eval_node(n->u.chain.items[i], values, &v))
        return false;
      switch (n->u.chain.ops[i]) {
      case '+': acc += v; break;
      case '-': acc -= v; break;
      case '*': acc *= v; break;
      default:
        if (v == 0)
          return false;
        acc /= v;
      }
      if (!isfinite(acc))
        return false;
    }
    *out = acc;
    return true;
  }
  return false;
}

bool ana_formula_eval(const struct ana_formula *f, const double *values, double *out) {
  double v;
  if (!eval_node(f->root, values, &v) || !isfinite(v))
    return false;
  *out = v == 0 ? 0.0 : v; /* no "-0" */
  return true;
}

/* ---- canonical text ---- */

struct buf {
  char *data;
  size_t len, cap;
  bool failed;
};

static void put(struct buf *b, const char *s, size_t n) {
  if (b->failed)
    return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + n + 1)
      cap *= 2;
    char *d = ana_realloc(b->data, cap);
    if (!d) {
      b->failed = true;
      return;
    }
    b->data = d, b->cap = cap;
  }
  memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = '\0';
}

static void puts_(struct buf *b, const char *s) {
  put(b, s, strlen(s));
}

/* An identifier as is; anything else quoted with \" and \\ escaped. */
static void put_name(struct buf *b, const char *s) {
  if (is_ident(s)) {
    puts_(b, s);
    return;
  }
  puts_(b, "\"");
  for (; *s; s++) {
    if (*s == '"' || *s == '\\')
      puts_(b, "\\");
    put(b, s, 1);
  }
  puts_(b, "\"");
}

/* Whether a property path would read as something else without "properties.". */
static bool property_needs_prefix(const struct ana_agg_term *t) {
  const char *const *seg = t->field_segments;
  if (strcmp(seg[0], "properties") == 0)
    return true;
  for (size_t i = 0; i < N_EVENT_FIELDS; i++) {
    size_t len = event_fields[i][1] ? 2 : 1;
    if (len == t->n_field_segments && strcmp(event_fields[i][0], seg[0]) == 0 &&
        (len == 1 || strcmp(event_fields[i][1], seg[1]) == 0))
      return true;
  }
  return false;
}

static void put_term(struct buf *b, const struct ana_agg_term *t) {
  puts_(b, fn_names[t->fn]);
  puts_(b, "(");
  if (t->event_name)
    put_name(b, t->event_name);
  else
    puts_(b, "*");
  if (t->field_kind == ANA_FIELD_EVENT) {
    puts_(b, ".");
    puts_(b, t->field);
  } else if (t->field_kind == ANA_FIELD_PROPERTY) {
    if (property_needs_prefix(t))
      puts_(b, ".properties");
    for (size_t i = 0; i < t->n_field_segments; i++) {
      puts_(b, ".");
      put_name(b, t->field_segments[i]);
    }
  }
  puts_(b, ")");
}

/* The shortest of %.15g, %.16g, %.17g that reads back as v. */
static void put_number(struct buf *b, double v) {
  char s[40];
  for (int prec = 15; prec <= 17; prec++) {
    snprintf(s, sizeof s, "%.*g", prec, v);
    if (strtod(s, NULL) == v)
      break;
  }
  puts_(b, s);
}

/* Higher binds tighter; a chain inside a chain of the same or a tighter
 * kind, or under unary minus, is parenthesised so the tree reads back the
 * same (floating point is not associative). */
static int prec(const struct node *n) {
  return n->kind == N_SUM ? 1 : n->kind == N_PRODUCT ? 2 : 3;
}

static void put_node(struct buf *b, const struct ana_formula *f, const struct node *n);

static void put_operand(struct buf *b, const struct ana_formula *f, const struct node *n,
                        int parent) {
  bool paren = prec(n) <= parent;
  if (paren)
    puts_(b, "(");
  put_node(b, f, n);
  if (paren)
    puts_(b, ")");
}

static void put_node(struct buf *b, const struct ana_formula *f, const struct node *n) {
  switch (n->kind) {
  case N_NUM: put_number(b, n->u.num); break;
  case N_TERM: put_term(b, &f->terms[n->u.term]); break;
  case N_NEG:
    puts_(b, "-");
    put_operand(b, f, n->u.operand, 2);
    break;
  case N_SUM:
  case N_PRODUCT:
    for (size_t i = 0; i < n->u.chain.n; i++) {
      if (i > 0) {
        char op[4] = {' ', n->u.chain.ops[i], ' ', '\0'};
        puts_(b, op);
      }
      put_operand(b, f, n->u.chain.items[i], prec(n));
    }
    break;
  }
}

char *ana_formula_to_string(const struct ana_formula *f) {
  struct buf b = {0};
  put_node(&b, f, f->root);
  if (b.failed) {
    ana_free(b.data);
    return NULL;
  }
  return b.data;
}

/* ---- bare names and the event names seen ---- */

#define MATCH_NAME_MAX 256

/* Levenshtein distance of a and b (bytes), or SIZE_MAX when either is
 * longer than MATCH_NAME_MAX. */
static size_t edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > MATCH_NAME_MAX || lb > MATCH_NAME_MAX)
    return SIZE_MAX;
  size_t row[MATCH_NAME_MAX + 1];
  for (size_t j = 0; j <= lb; j++)
    row[j] = j;
  for (size_t i = 1; i <= la; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t up = row[j];
      size_t best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best)
        best = up + 1;
      if (row[j - 1] + 1 < best)
        best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[lb];
}

/* How far a seen name is from a bare name: the distance to the whole name
 * or to any of its parts after a '_' (delivred ~ message_delivered). */
static size_t closeness(const char *name, const char *seen) {
  size_t d = edit_distance(name, seen);
  for (const char *tail = strchr(seen, '_'); tail && d > 0; tail = strchr(tail + 1, '_')) {
    size_t t = tail[1] ? edit_distance(name, tail + 1) : SIZE_MAX;
    if (t < d)
      d = t;
  }
  return d;
}

static bool ends_with_part(const char *seen, const char *name, size_t name_len) {
  size_t n = strlen(seen);
  return n > name_len + 1 && seen[n - name_len - 1] == '_' &&
         memcmp(seen + n - name_len, name, name_len) == 0;
}

/* Keeps the max closest candidates in suggest[] (by distance, then name). */
static void suggest_add(const char **suggest, size_t *dist, size_t max, size_t *n, const char *cand,
                        size_t d) {
  for (size_t i = 0; i < *n; i++)
    if (strcmp(suggest[i], cand) == 0)
      return;
  size_t at = *n;
  while (at > 0 && (dist[at - 1] > d || (dist[at - 1] == d && strcmp(suggest[at - 1], cand) > 0)))
    at--;
  if (at >= max)
    return;
  size_t end = *n < max ? *n : max - 1;
  for (size_t i = end; i > at; i--) {
    suggest[i] = suggest[i - 1];
    dist[i] = dist[i - 1];
  }
  suggest[at] = cand;
  dist[at] = d;
  if (*n < max)
    (*n)++;
}

enum ana_name_match ana_formula_match_event_name(const char *name, const char *const *seen,
                                                 size_t n_seen, const char **match,
                                                 const char **suggest, size_t max_suggest,
                                                 size_t *n_suggest) {
  size_t len = strlen(name), found = 0;
  size_t dist[ANA_FORMULA_MAX_SUGGEST];
  size_t n_sug = 0;
  if (max_suggest > ANA_FORMULA_MAX_SUGGEST)
    max_suggest = ANA_FORMULA_MAX_SUGGEST;
  *match = NULL;
  for (size_t i = 0; i < n_seen; i++) {
    if (strcmp(seen[i], name) == 0) {
      *match = seen[i];
      if (n_suggest)
        *n_suggest = 0;
      return ANA_NAME_EXACT;
    }
  }
  for (size_t i = 0; i < n_seen; i++) {
    if (!ends_with_part(seen[i], name, len))
      continue;
    if (found == 0 || strcmp(seen[i], *match) != 0)
      found++;
    if (found == 1)
      *match = seen[i];
    if (suggest && max_suggest)
      suggest_add(suggest, dist, max_suggest, &n_sug, seen[i], 0);
  }
  if (found == 1) {
    if (n_suggest)
      *n_suggest = 0;
    return ANA_NAME_SUFFIX;
  }
  *match = NULL;
  /* Several names end in _<name>: they are the suggestions (closest
   * first); otherwise the seen names closest to it, if any is close. */
  if (found == 0 && suggest && max_suggest) {
    size_t limit = len / 3 > 2 ? len / 3 : 2;
    for (size_t i = 0; i < n_seen; i++) {
      size_t d = closeness(name, seen[i]);
      if (d <= limit)
        suggest_add(suggest, dist, max_suggest, &n_sug, seen[i], d);
    }
  }
  if (n_suggest)
    *n_suggest = n_sug;
  return found ? ANA_NAME_AMBIGUOUS : ANA_NAME_NONE;
}
