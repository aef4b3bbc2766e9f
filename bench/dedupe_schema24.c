/* The deduplication keys of schema 24 for dedupe_claim_bench: one row per
 * key in a WITHOUT ROWID table, as the store kept them before its runs. */
#include "dedupe_schema24.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>

struct schema24 {
  sqlite3 *db;
  sqlite3_stmt *ins;
};

struct schema24 *schema24_open(const char *path) {
  struct schema24 *s = calloc(1, sizeof *s);
  if (!s)
    return NULL;
  if (sqlite3_open(path, &s->db) != SQLITE_OK ||
      sqlite3_exec(s->db,
                   "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA cache_size=-65536;"
                   "CREATE TABLE dedupe_keys (account INTEGER NOT NULL, event_id BLOB NOT NULL,"
                   " expires INTEGER NOT NULL, PRIMARY KEY (account, event_id)) WITHOUT ROWID;",
                   NULL, NULL, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(s->db, "INSERT INTO dedupe_keys VALUES (1, ?, ?) ON CONFLICT DO NOTHING",
                         -1, &s->ins, NULL) != SQLITE_OK) {
    fprintf(stderr, "schema 24 table: %s\n", sqlite3_errmsg(s->db));
    schema24_close(s);
    return NULL;
  }
  return s;
}

void schema24_close(struct schema24 *s) {
  if (!s)
    return;
  sqlite3_finalize(s->ins);
  sqlite3_close(s->db);
  free(s);
}

void schema24_begin(struct schema24 *s) {
  sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
}

void schema24_commit(struct schema24 *s) {
  sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
}

void schema24_claim(struct schema24 *s, const char *uuid, int64_t day) {
  uint8_t packed[16];
  for (int j = 0, h = 0; j < 16; j++) { /* the 16 bytes, as event_ids.c packs them */
    while (uuid[h] == '-')
      h++;
    unsigned v = 0;
    sscanf(uuid + h, "%2x", &v);
    packed[j] = (uint8_t)v;
    h += 2;
  }
  sqlite3_reset(s->ins);
  sqlite3_bind_blob(s->ins, 1, packed, 16, SQLITE_TRANSIENT);
  sqlite3_bind_int64(s->ins, 2, day);
  sqlite3_step(s->ins);
}

long long schema24_db_bytes(const char *path, const char *like) {
  sqlite3 *c = NULL;
  sqlite3_stmt *st = NULL;
  long long n = -1;
  char *sql = sqlite3_mprintf("SELECT SUM(pgsize) FROM dbstat WHERE name LIKE %Q", like);
  if (sql && sqlite3_open_v2(path, &c, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
      sqlite3_prepare_v2(c, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
    n = sqlite3_column_int64(st, 0);
  sqlite3_free(sql);
  sqlite3_finalize(st);
  sqlite3_close(c);
  return n;
}
