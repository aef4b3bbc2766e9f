/* The roles together: a search goes to the event store or, with free text,
 * to the search index once it has caught up; retention deletes an event only
 * after its search-index entry. */
#include "ana_store.h"

#include <stdint.h>

/* Whether q has free text: a word, not only blanks. */
static bool has_text(const struct ana_event_query *q) {
  for (const char *t = q->text; t && *t; t++)
    if (*t != ' ' && *t != '\t' && *t != '\n')
      return true;
  return false;
}

int ana_store_search(const struct ana_store_roles *r, const struct ana_event_query *q,
                     ana_event_hit_fn hit, void *ctx, struct ana_error *err) {
  if (!has_text(q)) {
    struct ana_event_query plain = *q;
    plain.text = NULL;
    return r->events->search(r->event_store, &plain, hit, ctx, err);
  }
  if (!r->search)
    return ana_error_set(err, ANA_STATUS_UNIMPLEMENTED, "text: no search index is configured");
  /* Wait (holding no reader) until the index has every event committed so
   * far: the search then finds every acknowledged event. The index is
   * normally a fraction of a second behind; only a first build over a large
   * store (an upgrade, a lost index) takes longer, and searches say so. */
  uint64_t last;
  int rc = r->events->last_seq(r->event_store, &last, err);
  if (rc < 0)
    return rc;
  if ((rc = r->search->wait(r->search_index, last, r->search_wait_ms, err)) < 0)
    return rc;
  return r->search->search(r->search_index, q, hit, ctx, err);
}

struct expire_ctx {
  const struct ana_store_roles *r;
};

static int remove_entries(void *ctx, const int64_t *refs, size_t n, struct ana_error *err) {
  const struct ana_store_roles *r = ((struct expire_ctx *)ctx)->r;
  return r->search->remove(r->search_index, refs, n, err);
}

int ana_store_expire(const struct ana_store_roles *r, int64_t cutoff_ms, int max_rows,
                     struct ana_error *err) {
  if (!r->search)
    return r->events->expire(r->event_store, cutoff_ms, UINT64_MAX, max_rows, NULL, NULL, err);
  /* Only indexed events: the index can then never add an entry for an event
   * deleted here. */
  struct expire_ctx c = {r};
  return r->events->expire(r->event_store, cutoff_ms, r->search->indexed_seq(r->search_index),
                           max_rows, remove_entries, &c, err);
}
