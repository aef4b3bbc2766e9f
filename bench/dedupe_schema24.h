/* The deduplication keys of schema 24 (one row per key in a WITHOUT ROWID
 * table), the baseline of dedupe_claim_bench, and dbstat's bytes of a
 * database's tables: bench/'s raw SQLite for it (tests/unit/
 * test_store_layering.py lists it). */
#ifndef DEDUPE_SCHEMA24_H
#define DEDUPE_SCHEMA24_H

#include <stdint.h>

struct schema24;
/* A new database at path (WAL, synchronous=FULL); NULL on an error (printed). */
struct schema24 *schema24_open(const char *path);
void schema24_close(struct schema24 *s);
void schema24_begin(struct schema24 *s);
/* Claims a canonical UUID for account 1 (INSERT ... ON CONFLICT DO NOTHING). */
void schema24_claim(struct schema24 *s, const char *uuid, int64_t day);
void schema24_commit(struct schema24 *s);
/* SUM(pgsize) of dbstat's rows whose name is LIKE like, or -1. */
long long schema24_db_bytes(const char *path, const char *like);

#endif
