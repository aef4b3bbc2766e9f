/* UUIDv7 generation: 48-bit Unix ms, then a 12-bit counter seeded randomly
 * each millisecond (RFC 9562 method 1), then 62 random bits. */
#include "ana_id.h"

#include "ana_error.h"
#include "ana_clock.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t last_ms;
static uint32_t last_counter;

static uint64_t now_ms(void) {
  return (uint64_t)ana_clock_wall_ms();
}

static int fill_random(void *buf, size_t n) {
  unsigned char *p = buf;
  while (n > 0) {
    ssize_t got = getrandom(p, n, 0);
    if (got < 0)
      return ANA_ERR_IO;
    p += got;
    n -= (size_t)got;
  }
  return 0;
}

int ana_uuid7_generate_at(uint64_t ms, char out[ANA_UUID_STR_LEN + 1]) {
  unsigned char rnd[10];
  if (fill_random(rnd, sizeof rnd) < 0)
    return ANA_ERR_IO;

  pthread_mutex_lock(&lock);
  uint32_t counter;
  if (ms > last_ms) {
    counter = ((uint32_t)rnd[0] << 8 | rnd[1]) & 0x7ff; /* top bit clear leaves room */
  } else {
    /* Same (or earlier: clock stepped back) millisecond: stay monotonic. */
    ms = last_ms;
    counter = last_counter + 1;
    if (counter > 0xfff) {
      ms++;
      counter = 0;
    }
  }
  last_ms = ms;
  last_counter = counter;
  pthread_mutex_unlock(&lock);

  unsigned char b[16];
  for (int i = 0; i < 6; i++)
    b[i] = (unsigned char)(ms >> (40 - 8 * i));
  b[6] = (unsigned char)(0x70 | (counter >> 8));
  b[7] = (unsigned char)(counter & 0xff);
  b[8] = (unsigned char)(0x80 | (rnd[2] & 0x3f));
  memcpy(b + 9, rnd + 3, 7);

  snprintf(out, ANA_UUID_STR_LEN + 1,
           "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
           b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
  return 0;
}

int ana_uuid7_generate(char out[ANA_UUID_STR_LEN + 1]) {
  return ana_uuid7_generate_at(now_ms(), out);
}

bool ana_uuid_is_valid(const char *s) {
  if (!s || strlen(s) != ANA_UUID_STR_LEN)
    return false;
  for (int i = 0; i < ANA_UUID_STR_LEN; i++) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (s[i] != '-')
        return false;
    } else if (!isxdigit((unsigned char)s[i])) {
      return false;
    }
  }
  return true;
}

uint64_t ana_uuid7_unix_ms(const char *s) {
  if (!ana_uuid_is_valid(s) || s[14] != '7')
    return 0;
  uint64_t ms = 0;
  for (int i = 0; i < 13; i++) {
    if (s[i] == '-')
      continue;
    char c = s[i];
    ms = ms << 4 | (uint64_t)(isdigit((unsigned char)c) ? c - '0' : (tolower(c) - 'a' + 10));
  }
  return ms;
}
