/* The email channel: an RFC 5322 message through the SMTP relay (SMTP_URL)
 * over libcurl, STARTTLS when offered (required with ?starttls=required),
 * with the idempotency key as Message-ID. */
#include "notify_internal.h"

#include "ana_alloc.h"
#include "ana_arena.h"

#include <curl/curl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_RECIPIENTS 50

static bool address_ok(const char *a) {
  size_t n = strlen(a);
  const char *at = strchr(a, '@');
  if (n < 3 || n > 254 || !at || at == a || !at[1] || strchr(at + 1, '@'))
    return false;
  for (const char *p = a; *p; p++)
    if ((unsigned char)*p <= ' ' || strchr("<>()[]\\,;:\"", *p))
      return false;
  return true;
}

static int validate(const struct ana_notify_env *env, const Analytics__V1__Channel *ch,
                    struct ana_error *err) {
  (void)env;
  if (ch->email->n_to == 0 || ch->email->n_to > MAX_RECIPIENTS)
    return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT, "email.to: must list 1 to %d addresses",
                         MAX_RECIPIENTS);
  for (size_t i = 0; i < ch->email->n_to; i++)
    if (!address_ok(ch->email->to[i]))
      return ana_error_set(err, ANA_STATUS_INVALID_ARGUMENT,
                           "email.to[%zu]: \"%.100s\" is not an email address", i,
                           ch->email->to[i]);
  return 0;
}

/* Appends to a growing buffer; false when out of memory. */
struct buf {
  char *p;
  size_t len, cap;
  bool nomem;
};

static void put(struct buf *b, const char *s, size_t n) {
  if (b->nomem)
    return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 1024;
    while (cap < b->len + n + 1)
      cap *= 2;
    char *p = ana_realloc(b->p, cap);
    if (!p) {
      b->nomem = true;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void puts_(struct buf *b, const char *s) {
  put(b, s, strlen(s));
}

/* Body text with every line ending as CRLF. */
static void put_text(struct buf *b, const char *s) {
  for (; s && *s; s++) {
    if (*s == '\r')
      continue;
    if (*s == '\n')
      put(b, "\r\n", 2);
    else
      put(b, s, 1);
  }
}

/* A header value on one line: CR and LF become spaces (no header injection);
 * non-ASCII text as an RFC 2047 encoded word. */
static void put_header_text(struct buf *b, const char *s) {
  char clean[512];
  size_t n = 0;
  bool ascii = true;
  for (; s && *s && n + 1 < sizeof clean; s++) {
    char c = (*s == '\r' || *s == '\n') ? ' ' : *s;
    ascii = ascii && (unsigned char)c < 0x80;
    clean[n++] = c;
  }
  clean[n] = '\0';
  if (ascii) {
    put(b, clean, n);
    return;
  }
  unsigned char enc[4 * sizeof clean / 3 + 4];
  EVP_EncodeBlock(enc, (const unsigned char *)clean, (int)n);
  puts_(b, "=?UTF-8?B?");
  puts_(b, (const char *)enc);
  puts_(b, "?=");
}

/* The domain of the From address, for Message-ID. */
static const char *domain_of(const char *from) {
  const char *at = from ? strrchr(from, '@') : NULL;
  return at && at[1] ? at + 1 : "analyticsd";
}

char *ana_notify_email_format(const char *from, const char *const *to, size_t n_to,
                              const struct ana_notify_message *m);

/* The whole message (headers, blank line, body), CRLF line ends; caller
 * frees with ana_free. NULL when out of memory. */
char *ana_notify_email_format(const char *from, const char *const *to, size_t n_to,
                              const struct ana_notify_message *m) {
  struct buf b = {0};
  char date[64];
  time_t secs = (time_t)(m->created_ms / 1000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
  puts_(&b, "Date: ");
  puts_(&b, date);
  puts_(&b, "\r\nFrom: ");
  put_header_text(&b, from);
  puts_(&b, "\r\nTo: ");
  for (size_t i = 0; i < n_to; i++) {
    if (i)
      puts_(&b, ", ");
    put_header_text(&b, to[i]);
  }
  puts_(&b, "\r\nSubject: [");
  put_header_text(&b, m->severity ? m->severity : "info");
  puts_(&b, "] ");
  put_header_text(&b, m->title);
  puts_(&b, "\r\nMessage-ID: <");
  put_header_text(&b, m->key);
  puts_(&b, "@");
  put_header_text(&b, domain_of(from));
  puts_(&b, ">\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\nX-Analytics-Source: ");
  put_header_text(&b, m->source ? m->source : "");
  puts_(&b, "\r\nX-Analytics-Severity: ");
  put_header_text(&b, m->severity ? m->severity : "info");
  puts_(&b, "\r\n\r\n");
  put_text(&b, m->text);
  puts_(&b, "\r\n");
  if (m->n_values)
    puts_(&b, "\r\n");
  for (size_t i = 0; i < m->n_values; i++) {
    put_text(&b, m->values[i].name);
    puts_(&b, ": ");
    put_text(&b, m->values[i].value);
    puts_(&b, "\r\n");
  }
  if (m->n_links)
    puts_(&b, "\r\n");
  for (size_t i = 0; i < m->n_links; i++) {
    put_text(&b, m->links[i].label);
    puts_(&b, ": ");
    put_text(&b, m->links[i].url);
    puts_(&b, "\r\n");
  }
  if (b.nomem) {
    ana_free(b.p);
    return NULL;
  }
  return b.p;
}

struct upload {
  const char *p;
  size_t left;
};

static size_t on_read(char *out, size_t size, size_t nmemb, void *arg) {
  struct upload *u = arg;
  size_t n = size * nmemb < u->left ? size * nmemb : u->left;
  memcpy(out, u->p, n);
  u->p += n;
  u->left -= n;
  return n;
}

static int send_one(const struct ana_notify_env *env, const Analytics__V1__Channel *ch,
                    const struct ana_notify_message *m, struct ana_notify_result *res) {
  CURL *h = NULL;
  struct curl_slist *rcpt = NULL;
  char *msg = NULL, url[1024], from[300];
  int rc = -1;
  if (!env->smtp_url || !env->smtp_url[0]) {
    snprintf(res->error, sizeof res->error, "SMTP_URL is not set: email cannot be sent");
    res->permanent = true;
    goto out;
  }
  /* ?starttls=required is ours, not curl's: strip it. */
  snprintf(url, sizeof url, "%s", env->smtp_url);
  bool required = false;
  char *q = strchr(url, '?');
  if (q) {
    required = strstr(q, "starttls=required") != NULL;
    *q = '\0';
  }
  const char *sender = env->smtp_from ? env->smtp_from : "analyticsd@localhost";
  snprintf(from, sizeof from, "<%s>", sender);
  for (size_t i = 0; i < ch->email->n_to; i++) {
    char to[300];
    snprintf(to, sizeof to, "<%s>", ch->email->to[i]);
    struct curl_slist *n = curl_slist_append(rcpt, to);
    if (!n)
      goto nomem;
    rcpt = n;
  }
  if (!(msg = ana_notify_email_format(sender, (const char *const *)ch->email->to, ch->email->n_to,
                                      m)) ||
      !(h = curl_easy_init()))
    goto nomem;
  struct upload up = {msg, strlen(msg)};
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
  curl_easy_setopt(h, CURLOPT_USE_SSL, (long)(required ? CURLUSESSL_ALL : CURLUSESSL_TRY));
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)env->timeout_ms);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)env->timeout_ms);
  if (env->smtp_user && env->smtp_user[0]) {
    curl_easy_setopt(h, CURLOPT_USERNAME, env->smtp_user);
    curl_easy_setopt(h, CURLOPT_PASSWORD, env->smtp_password ? env->smtp_password : "");
  }
  curl_easy_setopt(h, CURLOPT_MAIL_FROM, from);
  curl_easy_setopt(h, CURLOPT_MAIL_RCPT, rcpt);
  curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
  curl_easy_setopt(h, CURLOPT_READDATA, &up);
  curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
  CURLcode cc = curl_easy_perform(h);
  long code = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
  res->status = (int)code;
  if (cc == CURLE_OK) {
    rc = 0;
  } else {
    snprintf(res->error, sizeof res->error, "SMTP: %s%s", curl_easy_strerror(cc),
             code ? " (reply code shown in status)" : "");
    /* 5xx replies are permanent (bad recipient, refused sender). */
    res->permanent = code >= 500 && code < 600;
  }
  goto out;
nomem:
  snprintf(res->error, sizeof res->error, "out of memory");
out:
  if (h)
    curl_easy_cleanup(h);
  curl_slist_free_all(rcpt);
  ana_free(msg);
  return rc;
}

const struct ana_notifier_ops ana_notifier_email = {
    .type = "email",
    .validate = validate,
    .send = send_one,
};
