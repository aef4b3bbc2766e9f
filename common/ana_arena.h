/* Region allocator: a call's (or one stream message's) memory, freed at once.
 * Also usable as protobuf-c's allocator, so unpacked requests live in it. */
#ifndef ANA_ARENA_H
#define ANA_ARENA_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

struct ana_arena_chunk;

/* Caller owns the struct (ana_arena_init/_fini); the arena owns its chunks. */
struct ana_arena {
  struct ana_arena_chunk *head; /* newest chunk first */
  size_t chunk_size;            /* size of ordinary chunks */
  size_t limit;                 /* 0 = unlimited; otherwise total bytes allowed */
  size_t used;                  /* bytes handed out so far, for limits and stats */
  ProtobufCAllocator pb;        /* protobuf-c view of this arena */
};

/* Prepares an empty arena. chunk_size 0 picks a default (4 KiB); limit 0 means
 * no limit. Never allocates. */
void ana_arena_init(struct ana_arena *arena, size_t chunk_size, size_t limit);

/* Heap-allocated arena (for memory handed between threads); NULL when out of
 * memory. _destroy(NULL) does nothing. */
struct ana_arena *ana_arena_create(size_t chunk_size, size_t limit);
void ana_arena_destroy(struct ana_arena *arena);

/* Frees every chunk; the arena may be reused after another _init. */
void ana_arena_fini(struct ana_arena *arena);

/* Frees every chunk but keeps the arena ready for reuse (same settings). */
void ana_arena_reset(struct ana_arena *arena);

/* Moves every chunk of `from` into arena: what was allocated in `from`
 * lives until arena's _fini/_reset; `from` is left empty (same settings).
 * Neither arena's limit is checked. */
void ana_arena_adopt(struct ana_arena *arena, struct ana_arena *from);

/* Bytes of the chunks arena holds (allocated or not yet). */
size_t ana_arena_capacity(const struct ana_arena *arena);

/* Returns size bytes aligned for any type, or NULL when out of memory or over
 * the limit. The memory lives until _fini/_reset. */
void *ana_arena_alloc(struct ana_arena *arena, size_t size);

/* Like ana_arena_alloc, zero-filled. */
void *ana_arena_calloc(struct ana_arena *arena, size_t count, size_t size);

/* Copies a NUL-terminated string (or n bytes plus a NUL) into the arena. */
char *ana_arena_strdup(struct ana_arena *arena, const char *s);
char *ana_arena_strndup(struct ana_arena *arena, const char *s, size_t n);

#endif
