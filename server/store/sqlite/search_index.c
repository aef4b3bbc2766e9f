/* The embedded search index: the FTS5 index of text_index.c, kept beside the
 * local database and filled after commit by its own thread; its searches join
 * it with the events in the local database. */
#include "ana_local_db.h"
#include "sqlite_backends.h"
#include "text_index.h"

#include "ana_alloc.h"

struct sqlite_search_index {
  struct ana_local_db *db;
  struct ana_text_index *text;
  char *path; /* the index file, attached to readers for searches */
};

static void index_close(void *p) {
  struct sqlite_search_index *si = p;
  if (!si)
    return;
  if (si->text)
    ana_local_db_follow_moves(si->db, NULL, NULL);
  ana_text_index_close(si->text);
  ana_free(si->path);
  ana_free(si);
}

static void *index_open(struct ana_local_db *db, struct ana_error *err) {
  struct sqlite_search_index *si = ana_calloc(1, sizeof *si);
  if (!si || !(si->path = ana_text_index_path(ana_local_db_path(db)))) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    index_close(si);
    return NULL;
  }
  si->db = db;
  si->text = ana_text_index_open(ana_local_db_path(db), err);
  if (!si->text) {
    index_close(si);
    return NULL;
  }
  ana_local_db_follow_moves(db, ana_text_index_follow, si->text);
  return si;
}

static uint64_t index_indexed_seq(void *p) {
  struct sqlite_search_index *si = p;
  return ana_text_index_indexed_seq(si->text);
}

static int index_wait(void *p, uint64_t seq, int timeout_ms, struct ana_error *err) {
  struct sqlite_search_index *si = p;
  /* The index follows the events table: the staged events get there first
   * (staging.c). */
  if (ana_local_staging_wait(si->db, seq, err) < 0)
    return ANA_ERR_IO;
  return ana_text_index_wait(si->text, seq, timeout_ms, err) < 0 ? ANA_ERR_IO : 0;
}

static int index_search(void *p, const struct ana_event_query *q, ana_event_hit_fn hit, void *ctx,
                        struct ana_error *err) {
  struct sqlite_search_index *si = p;
  return ana_sqlite_query_events(si->db, si->path, q, hit, ctx, err);
}

static int index_remove(void *p, const int64_t *refs, size_t n, struct ana_error *err) {
  struct sqlite_search_index *si = p;
  return ana_text_index_remove(si->text, refs, n, err);
}

static int index_reindex(void *p, const int64_t *refs, size_t n, struct ana_error *err) {
  struct sqlite_search_index *si = p;
  return ana_text_index_reindex(si->text, refs, n, err);
}

static int index_compact(void *p, struct ana_error *err) {
  struct sqlite_search_index *si = p;
  return ana_text_index_compact(si->text, err);
}

const struct ana_search_index_ops ana_sqlite_search_index = {
    .version = ANA_SEARCH_INDEX_VERSION,
    .name = "sqlite",
    .open = index_open,
    .committed = NULL, /* the index thread reads the committed events itself */
    .indexed_seq = index_indexed_seq,
    .wait = index_wait,
    .search = index_search,
    .remove = index_remove,
    .close = index_close,
    .reindex = index_reindex,
    .compact = index_compact,
};
