/* Encrypted event fields (ENCRYPTED_FIELDS): which fields, sealing them in
 * an event at ingest (with a blind index copy of the properties for filters,
 * dimensions and rollups), and revealing or masking them when read. */
#ifndef ANA_CRYPTO_FIELDS_H
#define ANA_CRYPTO_FIELDS_H

#include "ana_arena.h"
#include "ana_crypto.h"
#include "analytics/v1/events.pb-c.h"

#include <stdbool.h>

struct ana_crypto_fields;

/* Parses a comma-separated list of "context.ip", "context.userAgent",
 * "context.locale" and "properties.<key>[.<key>...]". *out is NULL for an
 * empty list. Returns 0, or INVALID_ARGUMENT naming ENCRYPTED_FIELDS and the
 * entry. */
int ana_crypto_fields_parse(const char *spec, struct ana_crypto_fields **out,
                            struct ana_error *err);
void ana_crypto_fields_free(struct ana_crypto_fields *f);

/* The canonical name ("properties.email") when the property path ("email"
 * or "properties.email") is encrypted, else NULL. f may be NULL. */
const char *ana_crypto_fields_property(const struct ana_crypto_fields *f, const char *path);

/* Seals ev's encrypted fields in place: each becomes a sealed text (numbers
 * and booleans as their text, objects and lists as their JSON). ev->context
 * must be the caller's own (it is written); ev->properties may be shared
 * (copied where written, in arena). *blind receives the properties to index
 * and aggregate: the encrypted values replaced by their blind indexes (the
 * original properties when no property is encrypted). Returns 0, or a
 * negative error with err filled. */
int ana_crypto_event_seal(struct ana_crypto *c, const struct ana_crypto_fields *f,
                          const char *account_id, Analytics__V1__Event *ev, struct ana_arena *arena,
                          Google__Protobuf__Struct **blind, struct ana_error *err);

/* The blind index text of a filter value for the encrypted field `name`
 * (canonical), in arena; NULL when out of memory or no key. */
char *ana_crypto_blind_text(struct ana_crypto *c, const char *account_id, const char *name,
                            const char *value, struct ana_arena *arena);

/* The encrypted fields of ev (an event unpacked in arena, written in
 * place), only those f names (a string that looks sealed elsewhere is the
 * sender's text and stays): when clear, each sealed value is opened (one
 * stored before the field was configured stays as it is); otherwise each
 * value is replaced by ANA_CRYPTO_MASK. Returns how many values it found (0:
 * ev untouched), or a negative error when clear and one does not open (err
 * names the field; DATA_LOSS). */
int ana_crypto_event_reveal(struct ana_crypto *c, const struct ana_crypto_fields *f,
                            const char *account_id, Analytics__V1__Event *ev, bool clear,
                            struct ana_arena *arena, struct ana_error *err);

/* Re-seals a stored event (unpacked in arena, written in place) under f:
 * when one of f's fields holds a value that is not sealed (stored before
 * the field was configured; a text that only looks sealed and does not
 * open counts as not sealed, as at ingest), every value of f's fields that
 * opens is opened and the event sealed anew as ana_crypto_event_seal does,
 * *blind receiving its properties to index. Returns how many values it
 * found not sealed (0: ev untouched and *blind not set), or a negative
 * error. */
int ana_crypto_event_reseal(struct ana_crypto *c, const struct ana_crypto_fields *f,
                            const char *account_id, Analytics__V1__Event *ev,
                            struct ana_arena *arena, Google__Protobuf__Struct **blind,
                            struct ana_error *err);

/* f's fields sorted and comma-separated in out ("" for none; cut at cap). */
void ana_crypto_fields_canonical(const struct ana_crypto_fields *f, char *out, size_t cap);

/* Whether every field of f is in canonical (a list ana_crypto_fields_canonical made). */
bool ana_crypto_fields_covers(const struct ana_crypto_fields *f, const char *canonical);

/* Whether field (a property path with or without "properties.", or a
 * context field) is one of f's. */
bool ana_crypto_fields_reads(const struct ana_crypto_fields *f, const char *field);

#endif
