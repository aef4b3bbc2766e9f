/* analyticsctl audit: list the audit log, and verify its hash chain from the
 * anchor to the head and against the last signed head. */
#include "cli.h"

#include "ana_audit_chain.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char help[] =
    "usage: analyticsctl audit list [--since TIME] [--until TIME] [--subject S]\n"
    "                               [--method PATH] [--outcome CODE] [--limit N]\n"
    "                               [--page TOKEN] [--all]\n"
    "       analyticsctl audit verify [--head-line JSON | --log-file PATH] [--key-file PATH]\n"
    "\n"
    "list: the account's audit records, newest first (permission audit:read).\n"
    "verify: reads the whole chain (other accounts' records redacted) and checks that\n"
    "each record links to the one before (from the anchor retention left) and hashes\n"
    "to its stored hash, reporting the first broken link. With the last signed head\n"
    "(the audit_head line of analyticsd's JSON log, given whole with --head-line or\n"
    "found last in --log-file) it also checks that the head's record is still there\n"
    "with that hash, so removing the newest records shows; --key-file (the master key,\n"
    "ENCRYPTION_KEY_FILE or DATA_DIR/master.key) checks the head's signature.\n"
    "Exit status 0 when intact, 1 when broken or the call failed.\n";

static const struct cli_option options[] = {
    {"since", CLI_VALUE},    {"until", CLI_VALUE},    {"subject", CLI_VALUE},
    {"method", CLI_VALUE},   {"outcome", CLI_VALUE},  {"limit", CLI_VALUE},
    {"page", CLI_VALUE},     {"all", CLI_FLAG},       {"head-line", CLI_VALUE},
    {"log-file", CLI_VALUE}, {"key-file", CLI_VALUE}, {NULL, 0},
};

#define LIST_METHOD "/analytics.v1.AuditService/ListAuditRecords"

static int set_time(json_t *req, const char *key, const char *text) {
  int64_t ms;
  if (!text)
    return 0;
  if (cli_parse_time(text, &ms) < 0)
    return -1;
  json_object_set_new(req, key, cli_time_json(ms));
  return 0;
}

static int audit_page(analytics_client_t *c, const struct cli_args *a, int32_t page_size,
                      const char *token, char **json, analytics_error_t *err) {
  json_t *req = json_object();
  if (page_size)
    json_object_set_new(req, "pageSize", json_integer(page_size));
  cli_set_str(req, "pageToken", token);
  set_time(req, "startTime", cli_opt(a, "since"));
  set_time(req, "endTime", cli_opt(a, "until"));
  cli_set_str(req, "subject", cli_opt(a, "subject"));
  cli_set_str(req, "method", cli_opt(a, "method"));
  cli_set_str(req, "outcome", cli_opt(a, "outcome"));
  char *text = json_dumps(req, JSON_COMPACT);
  json_decref(req);
  int rc = analytics_call(c, LIST_METHOD, text, json, err);
  free(text);
  return rc;
}

static int run_list(analytics_client_t *c, const struct cli_args *a) {
  static const char *const ok[] = {"since", "until", "subject", "method", "outcome",
                                   "limit", "page",  "all",     NULL};
  static const char *const cols[] = {"sequence", "time",    "subject", "method",
                                     "targetId", "outcome", "peer",    NULL};
  static const struct cli_view view = {"records", cols};
  long limit;
  int status;
  int64_t ms;
  if ((status = cli_only(a, "list", ok)) != 0 || (status = cli_limit(a, &limit)) != 0 ||
      (status = cli_no_more(a, 1)) != 0)
    return status;
  if (cli_opt(a, "since") && cli_parse_time(cli_opt(a, "since"), &ms) < 0)
    return cli_usage(a, "--since: not a time");
  if (cli_opt(a, "until") && cli_parse_time(cli_opt(a, "until"), &ms) < 0)
    return cli_usage(a, "--until: not a time");
  if (cli_opt(a, "all"))
    return cli_all_pages(c, a, "records", limit, audit_page, &view);
  char *json = NULL;
  analytics_error_t err;
  status = audit_page(c, a, (int32_t)limit, cli_opt(a, "page"), &json, &err);
  return cli_finish(status, json, &err, &view);
}

/* --- verify --- */

static const char *const code_names[] = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};

static const char *str(const json_t *o, const char *key) {
  const char *s = json_string_value(json_object_get(o, key));
  return s ? s : "";
}

static uint64_t u64(const json_t *o, const char *key) {
  const json_t *v = json_object_get(o, key);
  if (json_is_integer(v))
    return (uint64_t)json_integer_value(v);
  return json_is_string(v) ? strtoull(json_string_value(v), NULL, 10) : 0;
}

struct chain {
  struct ana_audit_record *r;
  size_t n, cap;
  json_t *keep; /* the pages, which own the strings */
  struct ana_audit_anchor anchor;
};

static int add_record(struct chain *ch, const json_t *o) {
  if (ch->n == ch->cap) {
    size_t cap = ch->cap ? 2 * ch->cap : 1024;
    struct ana_audit_record *r = realloc(ch->r, cap * sizeof *r);
    if (!r)
      return -1;
    ch->r = r;
    ch->cap = cap;
  }
  struct ana_audit_record *r = &ch->r[ch->n];
  memset(r, 0, sizeof *r);
  r->seq = u64(o, "sequence");
  r->redacted = json_is_true(json_object_get(o, "redacted"));
  if (ana_audit_unhex(str(o, "prevHash"), r->prev_hash, ANA_AUDIT_HASH_LEN) < 0 ||
      ana_audit_unhex(str(o, "hash"), r->hash, ANA_AUDIT_HASH_LEN) < 0)
    return -2;
  if (!r->redacted) {
    analytics_error_t err;
    const char *t = str(o, "time");
    if (t[0] && analytics_parse_timestamp(t, &r->at_ms, &err) < 0)
      return -2;
    r->kind = str(o, "kind");
    r->account_id = str(o, "accountId");
    r->subject = str(o, "subject");
    r->key_id = str(o, "keyId");
    r->method = str(o, "method");
    r->target_id = str(o, "targetId");
    r->peer = str(o, "peer");
    r->request_id = str(o, "requestId");
    const char *outcome = str(o, "outcome");
    r->code = -1;
    for (int k = 0; k < 17; k++)
      if (strcmp(outcome, code_names[k]) == 0)
        r->code = k;
  }
  ch->n++;
  return 0;
}

/* Reads the whole chain, oldest first, page by page. */
static int read_chain(analytics_client_t *c, struct chain *ch) {
  char token[32] = "";
  ch->keep = json_array();
  for (bool first = true;; first = false) {
    char req[128], *json = NULL;
    analytics_error_t err;
    snprintf(req, sizeof req, "{\"chain\":true,\"pageSize\":1000%s%s%s}",
             token[0] ? ",\"pageToken\":\"" : "", token, token[0] ? "\"" : "");
    int rc = analytics_call(c, LIST_METHOD, req, &json, &err);
    if (rc < 0)
      return cli_failed(rc, &err);
    json_t *doc = json_loads(json, 0, NULL);
    free(json);
    if (!doc) {
      fprintf(stderr, "analyticsctl: the server's answer is not JSON\n");
      return CLI_EXIT_FAIL;
    }
    json_array_append_new(ch->keep, doc);
    if (first) {
      ch->anchor.seq = u64(doc, "anchorSequence");
      const char *h = str(doc, "anchorHash");
      if (h[0] && ana_audit_unhex(h, ch->anchor.hash, ANA_AUDIT_HASH_LEN) < 0) {
        fprintf(stderr, "analyticsctl: anchorHash is not a SHA-256 in hex\n");
        return CLI_EXIT_FAIL;
      }
    }
    size_t i;
    json_t *rec;
    json_array_foreach(json_object_get(doc, "records"), i, rec) {
      int rc2 = add_record(ch, rec);
      if (rc2 < 0) {
        fprintf(stderr, "analyticsctl: record %llu: %s\n", (unsigned long long)u64(rec, "sequence"),
                rc2 == -1 ? "out of memory" : "malformed hash or time");
        return CLI_EXIT_FAIL;
      }
    }
    const char *next = str(doc, "nextPageToken");
    if (!next[0])
      return 0;
    snprintf(token, sizeof token, "%s", next);
  }
}

/* The last audit_head line of a log file, as a new JSON object. */
static json_t *head_from_log(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "analyticsctl: --log-file: cannot read %s: %s\n", path, strerror(errno));
    return NULL;
  }
  json_t *last = NULL;
  char line[16384];
  while (fgets(line, sizeof line, f)) {
    if (!strstr(line, "\"audit_head\""))
      continue;
    json_t *o = json_loads(line, 0, NULL);
    if (o && strcmp(str(o, "msg"), "audit_head") == 0) {
      json_decref(last);
      last = o;
    } else {
      json_decref(o);
    }
  }
  fclose(f);
  if (!last)
    fprintf(stderr, "analyticsctl: --log-file: %s holds no audit_head line\n", path);
  return last;
}

static int check_mac(const char *key_file, uint64_t seq, const uint8_t hash[32],
                     const char *mac_hex) {
  FILE *f = fopen(key_file, "rb");
  if (!f) {
    fprintf(stderr, "analyticsctl: --key-file: cannot read %s: %s\n", key_file, strerror(errno));
    return CLI_EXIT_USAGE;
  }
  uint8_t master[4096], key[32], mac[32], want[32];
  size_t n = fread(master, 1, sizeof master, f);
  fclose(f);
  while (n && strchr(" \t\r\n", master[n - 1]))
    n--;
  int rc = 0;
  if (ana_audit_unhex(mac_hex, want, 32) < 0 || ana_audit_head_key(master, n, key) < 0 ||
      ana_audit_head_mac(key, seq, hash, mac) < 0 || memcmp(mac, want, 32) != 0) {
    printf("BROKEN: the signed head's MAC does not verify with %s: the head line is forged "
           "or the key is not the server's\n",
           key_file);
    rc = CLI_EXIT_FAIL;
  }
  memset(master, 0, sizeof master);
  memset(key, 0, sizeof key);
  return rc;
}

static int run_verify(analytics_client_t *c, const struct cli_args *a) {
  static const char *const ok[] = {"head-line", "log-file", "key-file", NULL};
  int status;
  if ((status = cli_only(a, "verify", ok)) != 0 || (status = cli_no_more(a, 1)) != 0)
    return status;
  if (cli_opt(a, "head-line") && cli_opt(a, "log-file"))
    return cli_usage(a, "give --head-line or --log-file, not both");
  json_t *head = NULL;
  if (cli_opt(a, "head-line")) {
    head = json_loads(cli_opt(a, "head-line"), 0, NULL);
    if (!head || !json_object_get(head, "seq") || !json_object_get(head, "hash")) {
      json_decref(head);
      return cli_usage(a, "--head-line: not an audit_head JSON line (seq, hash, mac)");
    }
  } else if (cli_opt(a, "log-file") && !(head = head_from_log(cli_opt(a, "log-file")))) {
    return CLI_EXIT_USAGE;
  }
  uint64_t head_seq = 0;
  uint8_t head_hash[32];
  if (head) {
    head_seq = u64(head, "seq");
    if (ana_audit_unhex(str(head, "hash"), head_hash, 32) < 0) {
      json_decref(head);
      return cli_usage(a, "--head-line: hash is not a SHA-256 in hex");
    }
  }

  struct chain ch = {0};
  status = read_chain(c, &ch);
  struct ana_audit_verify_result res;
  if (status == 0) {
    if (!ana_audit_verify(&ch.anchor, ch.r, ch.n, &res)) {
      printf("BROKEN at record %llu: %s\n", (unsigned long long)res.broken_seq, res.reason);
      status = CLI_EXIT_FAIL;
    }
  }
  if (status == 0 && head && cli_opt(a, "key-file"))
    status = check_mac(cli_opt(a, "key-file"), head_seq, head_hash, str(head, "mac"));
  if (status == 0 && head &&
      !ana_audit_verify_head(&ch.anchor, ch.r, ch.n, head_seq, head_hash, &res)) {
    printf("BROKEN at record %llu: %s\n", (unsigned long long)res.broken_seq, res.reason);
    status = CLI_EXIT_FAIL;
  }
  if (status == 0) {
    size_t redacted = 0;
    for (size_t i = 0; i < ch.n; i++)
      redacted += ch.r[i].redacted;
    printf("OK: %zu records from the anchor (record %llu) to the head (record %llu) link up", ch.n,
           (unsigned long long)ch.anchor.seq,
           (unsigned long long)(ch.n ? ch.r[ch.n - 1].seq : ch.anchor.seq));
    if (redacted)
      printf(" (%zu of other accounts checked by their links only)", redacted);
    if (head)
      printf("; the signed head (record %llu)%s matches", (unsigned long long)head_seq,
             cli_opt(a, "key-file") ? ", its signature verified," : "");
    else
      printf("; no signed head given: removal of the newest records is not checked");
    printf("\n");
  }
  free(ch.r);
  json_decref(ch.keep);
  json_decref(head);
  return status;
}

static int run(analytics_client_t *c, const struct cli_args *a) {
  if (a->n_pos < 1)
    return cli_usage(a, "audit takes a verb: list or verify");
  if (strcmp(a->pos[0], "list") == 0)
    return run_list(c, a);
  if (strcmp(a->pos[0], "verify") == 0)
    return run_verify(c, a);
  return cli_usage(a, "unknown verb %s (list, verify)", a->pos[0]);
}

const struct cli_command cli_cmd_audit = {
    .name = "audit",
    .summary = "list the audit log or verify its hash chain",
    .help = help,
    .options = options,
    .run = run,
};
