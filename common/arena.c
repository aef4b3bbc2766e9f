/* Region allocator with a chunk list; large requests get their own chunk. */
#include "ana_arena.h"

#include "ana_alloc.h"

#include <stdalign.h>
#include <stdint.h>
#include <string.h>

struct ana_arena_chunk {
  struct ana_arena_chunk *next;
  size_t size; /* usable bytes in data */
  size_t used;
  alignas(max_align_t) unsigned char data[];
};

#define DEFAULT_CHUNK 4096
#define ALIGN_UP(n) (((n) + (alignof(max_align_t) - 1)) & ~(alignof(max_align_t) - 1))

static void *pb_alloc(void *data, size_t size) {
  return ana_arena_alloc(data, size);
}

/* Arena memory is freed all at once, so protobuf-c's free is a no-op. */
static void pb_free(void *data, void *ptr) {
  (void)data;
  (void)ptr;
}

void ana_arena_init(struct ana_arena *arena, size_t chunk_size, size_t limit) {
  arena->head = NULL;
  arena->chunk_size = chunk_size ? chunk_size : DEFAULT_CHUNK;
  arena->limit = limit;
  arena->used = 0;
  arena->pb.alloc = pb_alloc;
  arena->pb.free = pb_free;
  arena->pb.allocator_data = arena;
}

struct ana_arena *ana_arena_create(size_t chunk_size, size_t limit) {
  struct ana_arena *arena = ana_malloc(sizeof *arena);
  if (arena)
    ana_arena_init(arena, chunk_size, limit);
  return arena;
}

void ana_arena_destroy(struct ana_arena *arena) {
  if (arena) {
    ana_arena_reset(arena);
    ana_free(arena);
  }
}

void ana_arena_reset(struct ana_arena *arena) {
  struct ana_arena_chunk *c = arena->head;
  while (c) {
    struct ana_arena_chunk *next = c->next;
    ana_free(c);
    c = next;
  }
  arena->head = NULL;
  arena->used = 0;
}

void ana_arena_fini(struct ana_arena *arena) {
  if (arena)
    ana_arena_reset(arena);
}

void *ana_arena_alloc(struct ana_arena *arena, size_t size) {
  size_t need = ALIGN_UP(size ? size : 1);
  if (need < size)
    return NULL; /* overflow */
  if (arena->limit && (need > arena->limit || arena->used > arena->limit - need))
    return NULL;
  struct ana_arena_chunk *c = arena->head;
  if (!c || c->size - c->used < need) {
    size_t csize = need > arena->chunk_size / 2 ? need : arena->chunk_size;
    c = ana_malloc(sizeof *c + csize);
    if (!c)
      return NULL;
    c->size = csize;
    c->used = 0;
    if (csize == need && arena->head) {
      /* A big one-off chunk goes behind the current one so the current
       * chunk's free space stays usable. */
      c->next = arena->head->next;
      arena->head->next = c;
    } else {
      c->next = arena->head;
      arena->head = c;
    }
  }
  void *p = c->data + c->used;
  c->used += need;
  arena->used += need;
  return p;
}

void *ana_arena_calloc(struct ana_arena *arena, size_t count, size_t size) {
  if (size && count > SIZE_MAX / size)
    return NULL;
  void *p = ana_arena_alloc(arena, count * size);
  if (p)
    memset(p, 0, count * size);
  return p;
}

char *ana_arena_strndup(struct ana_arena *arena, const char *s, size_t n) {
  char *p = ana_arena_alloc(arena, n + 1);
  if (p) {
    memcpy(p, s, n);
    p[n] = '\0';
  }
  return p;
}

char *ana_arena_strdup(struct ana_arena *arena, const char *s) {
  return ana_arena_strndup(arena, s, strlen(s));
}

void ana_arena_adopt(struct ana_arena *arena, struct ana_arena *from) {
  struct ana_arena_chunk *c = from->head;
  if (!c)
    return;
  struct ana_arena_chunk *last = c;
  while (last->next)
    last = last->next;
  if (arena->head) {
    /* behind the current chunk, whose free space stays usable */
    last->next = arena->head->next;
    arena->head->next = c;
  } else {
    last->next = NULL;
    arena->head = c;
  }
  arena->used += from->used;
  from->head = NULL;
  from->used = 0;
}

size_t ana_arena_capacity(const struct ana_arena *arena) {
  size_t n = 0;
  for (const struct ana_arena_chunk *c = arena->head; c; c = c->next)
    n += c->size;
  return n;
}
