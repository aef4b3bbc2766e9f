/* Fuzzes the metric formula language: the input up to its first NUL byte is
 * the formula, the parts after each NUL the formulas of variables x, y and z
 * (besides fixed ones, and one other metric). Whatever parses must evaluate
 * without inf or NaN, and its canonical text must parse again to the same
 * terms, values and text. Nothing may crash, leak or read out of bounds. */
#include "ana_formula.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond))                                                                                   \
      __builtin_trap();                                                                            \
  } while (0)

static const char *const rate_names[] = {"sent", "delivered"};
static const char *const rate_formulas[] = {"count(message_sent)", "count(message_delivered)"};

static int lookup(void *ctx, const char *name, const char **formula, const char *const **var_names,
                  const char *const **var_formulas, size_t *n_vars) {
  (void)ctx;
  if (strcmp(name, "rate") == 0) {
    *formula = "(delivered / sent) * 100";
    *var_names = rate_names, *var_formulas = rate_formulas, *n_vars = 2;
    return 0;
  }
  if (strcmp(name, "loop") == 0) { /* refers to itself through a variable */
    *formula = "x + loop";
    *var_names = NULL, *var_formulas = NULL, *n_vars = 0;
    return 0;
  }
  return -1;
}

static uint64_t next_random(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static double random_value(uint64_t *s) {
  uint64_t r = next_random(s);
  switch (r % 8) {
  case 0: return 0;
  case 1: return NAN;
  case 2: return (double)(r >> 40);
  case 3: return -(double)(r >> 20) / 3;
  case 4: return 1e300;
  default: return (double)(r >> 11) / 1e6;
  }
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

static void check_parsed(struct ana_formula *f, uint64_t seed) {
  size_t n = ana_formula_term_count(f);
  CHECK(n <= ANA_FORMULA_MAX_TERMS);
  CHECK(ana_formula_term(f, n) == NULL);
  char *text = ana_formula_to_string(f);
  CHECK(text != NULL);
  struct ana_formula *g = NULL;
  /* A canonical text may outgrow the limit once variables are expanded. */
  if (strlen(text) <= ANA_FORMULA_MAX_TEXT) {
    struct ana_error err;
    g = ana_formula_parse(text, NULL, &err, NULL);
    CHECK(g != NULL);
    CHECK(ana_formula_term_count(g) == n);
    for (size_t i = 0; i < n; i++)
      CHECK(same_term(ana_formula_term(f, i), ana_formula_term(g, i)));
    char *again = ana_formula_to_string(g);
    CHECK(again && strcmp(again, text) == 0);
    free(again);
  }
  double values[ANA_FORMULA_MAX_TERMS];
  for (int round = 0; round < 4; round++) {
    for (size_t i = 0; i < n; i++)
      values[i] = random_value(&seed);
    double a = NAN, b = NAN;
    bool ok = ana_formula_eval(f, n ? values : NULL, &a);
    CHECK(!ok || isfinite(a));
    if (g) {
      CHECK(ana_formula_eval(g, n ? values : NULL, &b) == ok);
      CHECK(!ok || memcmp(&a, &b, sizeof a) == 0);
    }
  }
  ana_formula_free(g);
  free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *buf = malloc(size + 1);
  if (!buf)
    return 0;
  memcpy(buf, data, size);
  buf[size] = '\0';

  /* Parts: formula \0 x \0 y \0 z. */
  const char *parts[4] = {buf, NULL, NULL, NULL};
  size_t n_parts = 1;
  for (size_t i = 0; i < size && n_parts < 4; i++)
    if (buf[i] == '\0')
      parts[n_parts++] = buf + i + 1;

  const char *names[6] = {"sent", "delivered", "ratio"};
  const char *formulas[6] = {"count(message_sent)", "count(message_delivered) - bounced",
                             "delivered / sent"};
  size_t n_vars = 3;
  static const char *const extra[] = {"x", "y", "z"};
  for (size_t i = 1; i < n_parts; i++) {
    names[n_vars] = extra[i - 1];
    formulas[n_vars++] = parts[i];
  }
  struct ana_formula_env env = {names, formulas, n_vars, lookup, NULL};

  uint64_t seed = 0x9e3779b97f4a7c15ULL;
  for (size_t i = 0; i < size; i++)
    seed = (seed ^ data[i]) * 0x100000001b3ULL;
  if (seed == 0)
    seed = 1;

  struct ana_error err = {0};
  int pos = -1;
  struct ana_formula *f = ana_formula_parse(parts[0], &env, &err, &pos);
  if (f) {
    check_parsed(f, seed);
    ana_formula_free(f);
  } else {
    CHECK(strncmp(err.message, "formula: ", 9) == 0);
    CHECK(pos >= 0 && (size_t)pos <= strlen(parts[0]) + 1);
  }
  free(buf);
  return 0;
}
