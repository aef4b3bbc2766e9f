/* Event ids as the local database stores them (events.event_id and the
 * deduplication keys): a canonical lower-case UUID as its 16 bytes, any
 * other id as its text. */
#include "local_db_sql.h"

#include <string.h>

static int hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1; /* upper case too: such an id is kept as text, exactly */
}

bool ana_event_id_pack(const char *id, size_t len, uint8_t out[ANA_EVENT_ID_PACKED]) {
  if (len != ANA_EVENT_ID_UUID_LEN)
    return false;
  size_t j = 0;
  for (size_t i = 0; i < len;) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (id[i++] != '-')
        return false;
      continue;
    }
    int hi = hex_value(id[i]), lo = hex_value(id[i + 1]);
    if (hi < 0 || lo < 0)
      return false;
    out[j++] = (uint8_t)(hi << 4 | lo);
    i += 2;
  }
  return j == ANA_EVENT_ID_PACKED;
}

void ana_event_id_unpack(const uint8_t in[ANA_EVENT_ID_PACKED],
                         char out[ANA_EVENT_ID_UUID_LEN + 1]) {
  static const char digits[] = "0123456789abcdef";
  size_t j = 0;
  for (size_t i = 0; i < ANA_EVENT_ID_PACKED; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10)
      out[j++] = '-';
    out[j++] = digits[in[i] >> 4];
    out[j++] = digits[in[i] & 15];
  }
  out[j] = '\0';
}

int ana_event_id_bind(sqlite3_stmt *st, int i, const char *id, int len) {
  size_t n = len < 0 ? strlen(id) : (size_t)len;
  uint8_t packed[ANA_EVENT_ID_PACKED];
  if (ana_event_id_pack(id, n, packed))
    return sqlite3_bind_blob(st, i, packed, sizeof packed, SQLITE_TRANSIENT);
  return sqlite3_bind_text(st, i, id, (int)n, SQLITE_STATIC);
}

const char *ana_event_id_text(sqlite3_value *v, char buf[ANA_EVENT_ID_UUID_LEN + 1]) {
  if (sqlite3_value_type(v) == SQLITE_BLOB && sqlite3_value_bytes(v) == ANA_EVENT_ID_PACKED) {
    ana_event_id_unpack(sqlite3_value_blob(v), buf);
    return buf;
  }
  const char *t = (const char *)sqlite3_value_text(v);
  return t ? t : "";
}

const char *ana_event_id_column(sqlite3_stmt *st, int col, char buf[ANA_EVENT_ID_UUID_LEN + 1]) {
  return ana_event_id_text(sqlite3_column_value(st, col), buf);
}

/* ana_event_id_pack(id): the stored form of an id (for migrations). */
static void fn_pack(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  if (sqlite3_value_type(argv[0]) == SQLITE_BLOB) {
    sqlite3_result_value(ctx, argv[0]);
    return;
  }
  const char *id = (const char *)sqlite3_value_text(argv[0]);
  size_t n = (size_t)sqlite3_value_bytes(argv[0]);
  uint8_t packed[ANA_EVENT_ID_PACKED];
  if (id && ana_event_id_pack(id, n, packed))
    sqlite3_result_blob(ctx, packed, sizeof packed, SQLITE_TRANSIENT);
  else
    sqlite3_result_value(ctx, argv[0]);
}

/* ana_event_id(stored): the id as the client sent it. */
static void fn_text(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  char buf[ANA_EVENT_ID_UUID_LEN + 1];
  sqlite3_result_text(ctx, ana_event_id_text(argv[0], buf), -1, SQLITE_TRANSIENT);
}

int ana_event_id_register(sqlite3 *conn) {
  int flags = SQLITE_UTF8 | SQLITE_DETERMINISTIC;
  if (sqlite3_create_function_v2(conn, "ana_event_id_pack", 1, flags, NULL, fn_pack, NULL, NULL,
                                 NULL) != SQLITE_OK ||
      sqlite3_create_function_v2(conn, "ana_event_id", 1, flags, NULL, fn_text, NULL, NULL, NULL) !=
          SQLITE_OK)
    return ANA_ERR_INTERNAL;
  return 0;
}
