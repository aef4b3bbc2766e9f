/* Progress beats: a static table of per-thread monotonic timestamps, written lock-free. */
#include "ana_heartbeat.h"
#include "ana_clock.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <time.h>

struct ana_heartbeat {
  bool used; /* guarded by table_lock */
  char name[32];
  _Atomic int64_t last_ms;
};

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ana_heartbeat table[ANA_HEARTBEAT_MAX];

int64_t ana_heartbeat_now_ms(void) {
  return ana_clock_mono_ms();
}

struct ana_heartbeat *ana_heartbeat_register(const char *name) {
  struct ana_heartbeat *hb = NULL;
  pthread_mutex_lock(&table_lock);
  for (size_t i = 0; i < ANA_HEARTBEAT_MAX; i++) {
    if (!table[i].used) {
      hb = &table[i];
      hb->used = true;
      snprintf(hb->name, sizeof hb->name, "%s", name ? name : "thread");
      atomic_store_explicit(&hb->last_ms, ana_heartbeat_now_ms(), memory_order_relaxed);
      break;
    }
  }
  pthread_mutex_unlock(&table_lock);
  return hb;
}

void ana_heartbeat_beat(struct ana_heartbeat *hb) {
  if (hb)
    atomic_store_explicit(&hb->last_ms, ana_heartbeat_now_ms(), memory_order_relaxed);
}

void ana_heartbeat_unregister(struct ana_heartbeat *hb) {
  if (!hb)
    return;
  pthread_mutex_lock(&table_lock);
  hb->used = false;
  pthread_mutex_unlock(&table_lock);
}

int64_t ana_heartbeat_oldest_ms(char *name, size_t size) {
  int64_t now = ana_heartbeat_now_ms(), oldest = 0;
  if (name && size)
    name[0] = '\0';
  pthread_mutex_lock(&table_lock);
  for (size_t i = 0; i < ANA_HEARTBEAT_MAX; i++) {
    if (!table[i].used)
      continue;
    int64_t age = now - atomic_load_explicit(&table[i].last_ms, memory_order_relaxed);
    if (age > oldest || (name && size && !name[0])) {
      if (age > oldest)
        oldest = age;
      if (name && size)
        snprintf(name, size, "%s", table[i].name);
    }
  }
  pthread_mutex_unlock(&table_lock);
  return oldest;
}
