/* Files sealed at rest (report files): AES-256-GCM in chunks under the
 * account's data key, so that neither sealing nor reading a range needs more
 * than a chunk or two of memory, and a range is read without the rest.
 *
 * Format: "ANAFILE1", key id (4, big-endian), base nonce (12), chunk size
 * (4), then per chunk its ciphertext and 16-byte tag; every chunk but the
 * last holds chunk-size bytes (an empty file is one empty chunk). Chunk i's
 * nonce is the base nonce with its last 8 bytes XORed with i; its associated
 * data is account, NUL, context, NUL, i (8, big-endian) and whether it is the
 * last (1 byte): a chunk altered, moved, dropped, or a file cut at a chunk
 * boundary does not open. */
#include "ana_crypto.h"
#include "crypto_internal.h"

#include "ana_alloc.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAGIC "ANAFILE1"
#define MAGIC_LEN 8
#define FILE_HEADER (MAGIC_LEN + 4 + 12 + 4)
#define TAG 16
#define ACCOUNT_MAX 256
#define CONTEXT_MAX 128

struct ana_crypto_file {
  int fd; /* borrowed */
  uint8_t key[32];
  uint8_t nonce[12];
  uint32_t chunk;
  int64_t records;  /* chunks in the file */
  int64_t last_len; /* the last chunk's ciphertext bytes */
  int64_t size;     /* clear bytes */
  char aad[ACCOUNT_MAX + CONTEXT_MAX + 2];
  size_t aad_len;
  uint8_t *in, *out; /* a chunk's record and its clear bytes */
  int64_t have;      /* the chunk in out (-1: none) */
  EVP_CIPHER_CTX *ctx;
};

static void put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The account and context part of the associated data; false when too long. */
static bool base_aad(const char *account, const char *context, char *aad, size_t *len) {
  size_t a = strlen(account), c = strlen(context);
  if (a >= ACCOUNT_MAX || c >= CONTEXT_MAX)
    return false;
  memcpy(aad, account, a + 1);
  memcpy(aad + a + 1, context, c + 1);
  *len = a + c + 2;
  return true;
}

/* One chunk through GCM: sealing (enc) n bytes of in into out + tag, or
 * opening (in holds n bytes and the tag). 0 or -1. */
static int chunk_gcm(EVP_CIPHER_CTX *ctx, bool enc, const uint8_t key[32], const uint8_t base[12],
                     const char *aad, size_t aad_len, int64_t index, bool last, const uint8_t *in,
                     size_t n, uint8_t *out) {
  uint8_t nonce[12], tail[9];
  memcpy(nonce, base, 12);
  for (int i = 0; i < 8; i++) {
    uint8_t b = (uint8_t)((uint64_t)index >> (56 - 8 * i));
    nonce[4 + i] ^= b;
    tail[i] = b;
  }
  tail[8] = last;
  int len = 0;
  if ((enc ? EVP_EncryptInit_ex2(ctx, EVP_aes_256_gcm(), key, nonce, NULL)
           : EVP_DecryptInit_ex2(ctx, EVP_aes_256_gcm(), key, nonce, NULL)) != 1 ||
      EVP_CipherUpdate(ctx, NULL, &len, (const uint8_t *)aad, (int)aad_len) != 1 ||
      EVP_CipherUpdate(ctx, NULL, &len, tail, sizeof tail) != 1 ||
      (n && EVP_CipherUpdate(ctx, out, &len, in, (int)n) != 1))
    return -1;
  if (enc)
    return EVP_EncryptFinal_ex(ctx, out + n, &len) == 1 &&
                   EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG, out + n) == 1
               ? 0
               : -1;
  return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG, (void *)(in + n)) == 1 &&
                 EVP_DecryptFinal_ex(ctx, out + n, &len) == 1
             ? 0
             : -1;
}

static int write_all(int fd, const uint8_t *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Reads up to n bytes (fewer only at the end of the file). */
static ssize_t read_full(int fd, uint8_t *p, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, p + got, n - got);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      return -1;
    if (r == 0)
      break;
    got += (size_t)r;
  }
  return (ssize_t)got;
}

int ana_crypto_file_seal(struct ana_crypto *c, const char *account_id, const char *context,
                         const char *in_path, const char *out_path, struct ana_error *err) {
  uint8_t key[32], header[FILE_HEADER];
  uint32_t id = 0;
  char aad[ACCOUNT_MAX + CONTEXT_MAX + 2];
  size_t aad_len = 0;
  if (!base_aad(account_id, context, aad, &aad_len))
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "sealing a file: account too long");
  int rc = ana_crypto_data_key(c, account_id, 0, &id, key, err);
  if (rc < 0)
    return rc;
  size_t chunk = ANA_CRYPTO_FILE_CHUNK;
  uint8_t *a = ana_malloc(chunk), *b = ana_malloc(chunk), *out = ana_malloc(chunk + TAG);
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  int in = open(in_path, O_RDONLY | O_CLOEXEC);
  int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  memcpy(header, MAGIC, MAGIC_LEN);
  put32(header + MAGIC_LEN, id);
  put32(header + MAGIC_LEN + 16, (uint32_t)chunk);
  if (!a || !b || !out || !ctx) {
    rc = ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto out;
  }
  if (in < 0 || fd < 0) {
    rc = ana_error_set(err, ANA_STATUS_UNAVAILABLE, "sealing a file: cannot open %s: %s",
                       in < 0 ? in_path : out_path, strerror(errno));
    goto out;
  }
  if (RAND_bytes(header + MAGIC_LEN + 4, 12) != 1) {
    rc = ana_error_set(err, ANA_STATUS_INTERNAL, "sealing a file: no randomness");
    goto out;
  }
  if (write_all(fd, header, sizeof header) < 0)
    goto io;
  /* One chunk read ahead: a chunk is the last when nothing follows it. */
  ssize_t n = read_full(in, a, chunk);
  for (int64_t i = 0; n >= 0; i++) {
    ssize_t next = (size_t)n == chunk ? read_full(in, b, chunk) : 0;
    if (next < 0)
      break;
    bool last = next == 0;
    if (chunk_gcm(ctx, true, key, header + MAGIC_LEN + 4, aad, aad_len, i, last, a, (size_t)n,
                  out) < 0) {
      rc = ana_error_set(err, ANA_STATUS_INTERNAL, "sealing a file: the cipher failed");
      goto out;
    }
    if (write_all(fd, out, (size_t)n + TAG) < 0)
      goto io;
    if (last)
      break;
    uint8_t *t = a;
    a = b;
    b = t;
    n = next;
  }
  if (n < 0 || fsync(fd) < 0)
    goto io;
  goto out;
io:
  rc = ana_error_set(err, ANA_STATUS_UNAVAILABLE, "sealing a file: %s", strerror(errno));
out:
  if (in >= 0)
    close(in);
  if (fd >= 0 && close(fd) < 0 && rc == 0)
    rc = ana_error_set(err, ANA_STATUS_UNAVAILABLE, "sealing a file: %s", strerror(errno));
  if (rc < 0)
    unlink(out_path);
  EVP_CIPHER_CTX_free(ctx);
  if (a)
    OPENSSL_cleanse(a, chunk);
  if (b)
    OPENSSL_cleanse(b, chunk);
  ana_free(a);
  ana_free(b);
  ana_free(out);
  OPENSSL_cleanse(key, sizeof key);
  return rc;
}

static int load_chunk(struct ana_crypto_file *f, int64_t i, struct ana_error *err);

bool ana_crypto_file_is_sealed(int fd) {
  uint8_t m[MAGIC_LEN];
  return pread(fd, m, sizeof m, 0) == MAGIC_LEN && memcmp(m, MAGIC, MAGIC_LEN) == 0;
}

struct ana_crypto_file *ana_crypto_file_open(struct ana_crypto *c, const char *account_id,
                                             const char *context, int fd, struct ana_error *err) {
  struct ana_crypto_file *f = ana_calloc(1, sizeof *f);
  uint8_t h[FILE_HEADER];
  struct stat st;
  if (!f) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  f->fd = fd;
  f->have = -1;
  if (!base_aad(account_id, context, f->aad, &f->aad_len)) {
    ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "opening a file: account too long");
    goto fail;
  }
  if (fstat(fd, &st) < 0 || pread(fd, h, sizeof h, 0) != (ssize_t)sizeof h ||
      memcmp(h, MAGIC, MAGIC_LEN) != 0) {
    ana_error_set(err, ANA_STATUS_DATA_LOSS, "the file is not a sealed file");
    goto fail;
  }
  uint32_t id = get32(h + MAGIC_LEN);
  memcpy(f->nonce, h + MAGIC_LEN + 4, 12);
  f->chunk = get32(h + MAGIC_LEN + 16);
  int64_t body = (int64_t)st.st_size - FILE_HEADER, rec = (int64_t)f->chunk + TAG;
  if (f->chunk == 0 || f->chunk > (64u << 20) || body < TAG) {
    ana_error_set(err, ANA_STATUS_DATA_LOSS, "the sealed file is malformed");
    goto fail;
  }
  f->records = (body + rec - 1) / rec;
  f->last_len = body - (f->records - 1) * rec;
  if (f->last_len < TAG) {
    ana_error_set(err, ANA_STATUS_DATA_LOSS, "the sealed file is cut short");
    goto fail;
  }
  f->size = body - f->records * TAG;
  if (ana_crypto_data_key(c, account_id, id, &id, f->key, err) < 0)
    goto fail;
  f->in = ana_malloc((size_t)rec);
  f->out = ana_malloc(f->chunk);
  f->ctx = EVP_CIPHER_CTX_new();
  if (!f->in || !f->out || !f->ctx) {
    ana_error_set(err, ANA_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto fail;
  }
  /* The first chunk opens now: a file of another account (or an empty one
   * altered) is refused before anything is sent. */
  if (load_chunk(f, 0, err) < 0)
    goto fail;
  return f;
fail:
  ana_crypto_file_close(f);
  return NULL;
}

int64_t ana_crypto_file_size(const struct ana_crypto_file *f) {
  return f->size;
}

/* Opens chunk i into f->out. */
static int load_chunk(struct ana_crypto_file *f, int64_t i, struct ana_error *err) {
  if (f->have == i)
    return 0;
  int64_t rec = (int64_t)f->chunk + TAG;
  bool last = i == f->records - 1;
  size_t len = (size_t)(last ? f->last_len : rec);
  ssize_t got = pread(f->fd, f->in, len, FILE_HEADER + i * rec);
  if (got != (ssize_t)len)
    return ana_error_set(err, ANA_STATUS_DATA_LOSS, "the sealed file changed while read");
  if (chunk_gcm(f->ctx, false, f->key, f->nonce, f->aad, f->aad_len, i, last, f->in, len - TAG,
                f->out) < 0) {
    f->have = -1;
    return ana_error_set(err, ANA_STATUS_DATA_LOSS,
                         "the sealed file does not authenticate (altered, cut, or sealed for "
                         "another account)");
  }
  f->have = i;
  return 0;
}

int64_t ana_crypto_file_pread(struct ana_crypto_file *f, void *buf, size_t n, int64_t off,
                              struct ana_error *err) {
  size_t done = 0;
  while (done < n && off + (int64_t)done < f->size) {
    int64_t pos = off + (int64_t)done, i = pos / f->chunk;
    int rc = load_chunk(f, i, err);
    if (rc < 0)
      return rc;
    int64_t in_chunk = pos - i * (int64_t)f->chunk;
    int64_t avail = (i == f->records - 1 ? f->last_len - TAG : (int64_t)f->chunk) - in_chunk;
    size_t take = (size_t)avail < n - done ? (size_t)avail : n - done;
    memcpy((uint8_t *)buf + done, f->out + in_chunk, take);
    done += take;
  }
  return (int64_t)done;
}

void ana_crypto_file_close(struct ana_crypto_file *f) {
  if (!f)
    return;
  if (f->out)
    OPENSSL_cleanse(f->out, f->chunk);
  ana_free(f->in);
  ana_free(f->out);
  EVP_CIPHER_CTX_free(f->ctx);
  OPENSSL_cleanse(f->key, sizeof f->key);
  ana_free(f);
}
