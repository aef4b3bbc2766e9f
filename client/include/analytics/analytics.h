/* libanalytics: the C client library of analyticsd (gRPC).
 *
 * Conventions of every function in this header:
 * - Functions that can fail return 0 (ANALYTICS_OK) or a negative
 *   analytics_code_t, and fill the optional analytics_error_t *err (NULL: the
 *   caller only wants the return code). err->code is a gRPC status code
 *   (analytics_status_t): the server's when the server answered, otherwise
 *   the closest local one (INVALID_ARGUMENT for a bad argument, UNAVAILABLE
 *   for a server that cannot be reached, ...); err->message the server's
 *   message or a local explanation. Success clears err.
 *   Constructors return NULL on failure.
 * - Pointer parameters are borrowed for the duration of the call unless said
 *   otherwise; the library copies what it keeps. Results the library
 *   allocates are owned by the caller and freed with the function named in
 *   their documentation (analytics_free for strings and buffers).
 * - Everything except analytics_track is synchronous: it blocks the calling
 *   thread until the server answers or the client's call timeout passes.
 *   A client may be used from any number of threads at once.
 * - Objects are returned as JSON text: the canonical proto3 JSON of the
 *   contracts (proto/analytics/v1/), the same bodies the REST API returns
 *   (lowerCamelCase names, 64-bit integers as strings, timestamps in RFC 3339).
 *   New fields in the contracts therefore never change this ABI.
 * - _destroy(NULL) and analytics_free(NULL) do nothing. */
#ifndef ANALYTICS_H
#define ANALYTICS_H

#include <stdbool.h>
#include <stdio.h> /* FILE (analytics_download_report_to_file) */
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ANALYTICS_VERSION_MAJOR 0
#define ANALYTICS_VERSION_MINOR 1
#define ANALYTICS_VERSION_PATCH 0
#define ANALYTICS_VERSION_STRING "0.1.0"

/* --- Errors --- */

/* Results of the library's functions: 0 or one of the negative values. */
typedef enum analytics_code {
  ANALYTICS_OK = 0,
  /* An argument was rejected before anything was sent (err->code
   * INVALID_ARGUMENT). */
  ANALYTICS_ERR_INVALID = -1,
  /* Out of memory (err->code RESOURCE_EXHAUSTED). */
  ANALYTICS_ERR_NOMEM = -2,
  /* analytics_track: the queue is full; the event was dropped and counted in
   * analytics_stats_t.dropped (err->code RESOURCE_EXHAUSTED). */
  ANALYTICS_ERR_QUEUE_FULL = -3,
  /* analytics_flush: the events were not all resolved within the time given
   * (err->code DEADLINE_EXCEEDED). Delivery goes on in the background. */
  ANALYTICS_ERR_TIMEOUT = -4,
  /* The client is being destroyed (err->code CANCELLED). */
  ANALYTICS_ERR_CLOSED = -5,
  /* The server could not be reached, or did not answer in time, or asked to
   * retry later: UNAVAILABLE, DEADLINE_EXCEEDED or RESOURCE_EXHAUSTED in
   * err->code. Worth retrying. analytics_flush also returns it when events
   * it waited for were given up (analytics_stats_t.failed). */
  ANALYTICS_ERR_UNAVAILABLE = -6,
  /* The server does not implement the operation (yet): err->code
   * UNIMPLEMENTED and err->message the server's explanation, e.g. "metrics
   * are not implemented yet". */
  ANALYTICS_ERR_UNIMPLEMENTED = -7,
  /* The server answered with another error status (INVALID_ARGUMENT,
   * NOT_FOUND, FAILED_PRECONDITION, ...): see err->code and err->message. */
  ANALYTICS_ERR_SERVER = -8,
  /* The answer could not be decoded, or the library failed internally
   * (err->code INTERNAL). */
  ANALYTICS_ERR_INTERNAL = -9,
  /* The server did not accept the credentials (err->code UNAUTHENTICATED):
   * none were sent and the server requires some, or the token expired, is
   * malformed or signed with another key, or the API key is unknown or
   * revoked. Not retried; after a token refresh
   * (analytics_client_set_token) the next call may succeed. */
  ANALYTICS_ERR_UNAUTHENTICATED = -10,
  /* The credentials are valid but do not allow the call (err->code
   * PERMISSION_DENIED): the role lacks the method's permission, or
   * account_id names an account the principal does not hold. */
  ANALYTICS_ERR_PERMISSION_DENIED = -11,
} analytics_code_t;

/* gRPC status codes, as found in analytics_error_t.code. */
typedef enum analytics_status {
  ANALYTICS_STATUS_OK = 0,
  ANALYTICS_STATUS_CANCELLED = 1,
  ANALYTICS_STATUS_UNKNOWN = 2,
  ANALYTICS_STATUS_INVALID_ARGUMENT = 3,
  ANALYTICS_STATUS_DEADLINE_EXCEEDED = 4,
  ANALYTICS_STATUS_NOT_FOUND = 5,
  ANALYTICS_STATUS_ALREADY_EXISTS = 6,
  ANALYTICS_STATUS_PERMISSION_DENIED = 7,
  ANALYTICS_STATUS_RESOURCE_EXHAUSTED = 8,
  ANALYTICS_STATUS_FAILED_PRECONDITION = 9,
  ANALYTICS_STATUS_ABORTED = 10,
  ANALYTICS_STATUS_OUT_OF_RANGE = 11,
  ANALYTICS_STATUS_UNIMPLEMENTED = 12,
  ANALYTICS_STATUS_INTERNAL = 13,
  ANALYTICS_STATUS_UNAVAILABLE = 14,
  ANALYTICS_STATUS_DATA_LOSS = 15,
  ANALYTICS_STATUS_UNAUTHENTICATED = 16,
} analytics_status_t;

#define ANALYTICS_ERROR_MESSAGE_MAX 512

/* Details of a failure. Owned by the caller (usually on the stack). */
typedef struct analytics_error {
  int code; /* analytics_status_t; 0 after success */
  char message[ANALYTICS_ERROR_MESSAGE_MAX];
} analytics_error_t;

/* Short description of an analytics_code_t ("queue full"). Never NULL; the
 * string is static. */
const char *analytics_strerror(int code);

/* Name of a gRPC status code as gRPC spells it ("UNIMPLEMENTED"). Never NULL;
 * the string is static. */
const char *analytics_status_name(int status);

/* Frees a string or buffer returned by the library. NULL does nothing. */
void analytics_free(void *ptr);

/* --- Events --- */

/* An event being built: type, name, properties, session, time, context.
 * Not thread-safe; owned by whoever created it. */
typedef struct analytics_event analytics_event_t;

/* Creates an event with the given type and name (both copied; the server
 * requires 1 to 128 printable characters). Returns NULL when out of memory
 * or when either is NULL. Destroy with analytics_event_destroy. */
analytics_event_t *analytics_event_new(const char *event_type, const char *event_name);

/* Creates an event from the Event JSON of the API (the body of
 * POST /api/events: eventType, eventName, properties, sessionId, eventId,
 * timestamp, sentAt, context, ...; both JSON and proto field names). The
 * names and types of the fields are checked now, and eventType and eventName
 * must be present; the server's validation (lengths, limits) still applies
 * when it is delivered. A timestamp in the JSON is kept. Returns NULL with
 * err filled (ANALYTICS_ERR_INVALID naming the field, or
 * ANALYTICS_ERR_NOMEM). Destroy with analytics_event_destroy. */
analytics_event_t *analytics_event_new_from_json(const char *json, analytics_error_t *err);

/* Destroys an event. An event may be destroyed right after analytics_track:
 * the queue holds its own copy. */
void analytics_event_destroy(analytics_event_t *ev);

/* Sets property key (copied) to a string (copied), a number or a boolean.
 * Setting a key again replaces its value. Returns 0, ANALYTICS_ERR_INVALID
 * (NULL argument, or a non-finite number, which the server rejects) or
 * ANALYTICS_ERR_NOMEM. */
int analytics_event_set_string(analytics_event_t *ev, const char *key, const char *value);
int analytics_event_set_number(analytics_event_t *ev, const char *key, double value);
int analytics_event_set_bool(analytics_event_t *ev, const char *key, bool value);

/* Sets the properties from a JSON object (text, copied), merged over the
 * properties set so far: nested objects and arrays are kept as they are.
 * Returns 0, ANALYTICS_ERR_INVALID (not a JSON object; err says why) or
 * ANALYTICS_ERR_NOMEM. */
int analytics_event_set_properties_json(analytics_event_t *ev, const char *json,
                                        analytics_error_t *err);

/* Sets the session id (copied; NULL clears it). Returns 0 or
 * ANALYTICS_ERR_NOMEM. */
int analytics_event_set_session(analytics_event_t *ev, const char *session_id);

/* Sets when the event happened, in Unix milliseconds (client clock). When
 * never set, analytics_track uses the time of the call. Returns 0, or
 * ANALYTICS_ERR_INVALID for a negative time. */
int analytics_event_set_timestamp_ms(analytics_event_t *ev, int64_t unix_ms);

/* Reads an RFC 3339 timestamp ("2024-05-01T10:00:00Z", "...T12:00:00.250+02:00")
 * with the server's own strict parser: uppercase T and Z, any offset, up to 9
 * fractional digits (kept to the millisecond), years 0001-9999, real dates
 * only. Returns 0 with *unix_ms, or ANALYTICS_ERR_INVALID (err says why). */
int analytics_parse_timestamp(const char *text, int64_t *unix_ms, analytics_error_t *err);

/* Sets the event id (copied; NULL clears it): up to 128 characters of
 * A-Z a-z 0-9 _ . : -. When none is set, analytics_track assigns a UUIDv7.
 * Returns 0, ANALYTICS_ERR_INVALID or ANALYTICS_ERR_NOMEM. */
int analytics_event_set_id(analytics_event_t *ev, const char *event_id);

/* Sets the context's user agent and locale (copied; NULL leaves one
 * unchanged). The server fills the IP address itself. Returns 0 or
 * ANALYTICS_ERR_NOMEM. */
int analytics_event_set_context(analytics_event_t *ev, const char *user_agent, const char *locale);

/* --- Client --- */

/* A connection to one analyticsd with its delivery queue and background
 * thread. Thread-safe. */
typedef struct analytics_client analytics_client_t;

/* Why an event could not be delivered. */
typedef enum analytics_failure_kind {
  /* The server refused the event (validation): it will never be stored.
   * Counted in analytics_stats_t.rejected. */
  ANALYTICS_FAILURE_REJECTED = 1,
  /* The event could not be delivered: retries exhausted, a non-retryable
   * error, or the client was destroyed before delivery. Counted in
   * analytics_stats_t.failed. */
  ANALYTICS_FAILURE_UNDELIVERED = 2,
} analytics_failure_kind_t;

/* One field the server found wrong, e.g. {"events[0].eventName",
 * "is required"}. */
typedef struct analytics_violation {
  const char *field;
  const char *description;
} analytics_violation_t;

/* An event that was not delivered, as handed to the delivery-failure
 * callback. Everything in it is borrowed: valid only during the callback. */
typedef struct analytics_delivery_failure {
  analytics_failure_kind_t kind;
  const char *event_id;
  const char *event_type;
  const char *event_name;
  /* The gRPC status of the last attempt (UNDELIVERED), or INVALID_ARGUMENT
   * (REJECTED). */
  int status;
  /* A readable reason: the first violation or the last error message. */
  const char *message;
  const analytics_violation_t *violations; /* REJECTED: each violation */
  size_t violation_count;
} analytics_delivery_failure_t;

/* Called on the client's background thread for each event that could not be
 * delivered (and from analytics_client_destroy for events still queued at
 * its deadline). It must return quickly and must not call
 * analytics_client_destroy or analytics_flush; analytics_track and
 * analytics_stats are allowed. */
typedef void (*analytics_delivery_fn)(const analytics_delivery_failure_t *failure, void *ctx);

/* Settings of a client. Fields left 0 (or NULL) take the default given.
 * Start from analytics_options_init, or from a zeroed struct. */
typedef struct analytics_options {
  const char *target; /* "127.0.0.1:50051"; also "dns:///host:port", "unix:/path" */
  /* A bearer token (a JWT), sent on every call as the metadata
   * "authorization: Bearer <token>"; NULL: none. Copied; change it later
   * with analytics_client_set_token. */
  const char *token;
  int64_t timeout_ms;        /* deadline of each call: 10000 */
  size_t queue_capacity;     /* events analytics_track may hold: 10000 */
  size_t batch_size;         /* most events per TrackEvents request: 100 (server max 1000) */
  int64_t flush_interval_ms; /* longest time an event waits for its batch to fill: 1000 */
  int max_retries;           /* retries of a batch after the first attempt: 5; -1 = none */
  int64_t backoff_base_ms;   /* first retry delay before jitter: 100 */
  int64_t backoff_max_ms;    /* cap of the retry delay: 10000 */
  int64_t close_timeout_ms;  /* how long destroy tries to deliver what is queued: 5000 */
  analytics_delivery_fn on_delivery_failure; /* NULL: failures are only counted */
  void *delivery_ctx;                        /* passed to on_delivery_failure */
  /* Deepest nesting of messages accepted in the server's replies, checked
   * before they are decoded (a deeper reply is an error, not a crash): 100,
   * as the server's PROTO_MAX_DEPTH; 1 to 1000. */
  int proto_max_depth;
  /* An API key ("ana_<id>_<secret>", what trackers use instead of a JWT),
   * sent on every call as the metadata "x-api-key: <key>"; NULL: none.
   * Copied. A client has one credential: token and api_key together are
   * refused (ANALYTICS_ERR_INVALID). */
  const char *api_key;
  /* The account the calls act on, sent as the metadata "x-account-id" on
   * every call; NULL: none (the credential's only account). Needed when a
   * token holds several accounts. Copied. */
  const char *account_id;
  /* TLS to the server (GRPC_TLS_* on analyticsd). false: plaintext, unless
   * one of the files below is set, which turns TLS on too. The files are
   * read by analytics_client_new (an unreadable one, one without PEM data,
   * or a certificate without its key is ANALYTICS_ERR_INVALID naming the
   * path); a server whose certificate does not verify fails the calls with
   * UNAVAILABLE. */
  bool tls;
  const char *tls_ca_file;     /* PEM roots to trust; NULL: the system's */
  const char *tls_cert_file;   /* PEM client certificate (mutual TLS), with tls_key_file */
  const char *tls_key_file;    /* PEM private key of tls_cert_file (unencrypted) */
  const char *tls_server_name; /* name the server's certificate must carry (and SNI);
                                  NULL: the host of target */
} analytics_options_t;

/* Fills opts with the defaults listed above (target included). */
void analytics_options_init(analytics_options_t *opts);

/* Creates a client: copies opts (NULL: all defaults) and starts the
 * background delivery thread. Credentials (token or api_key, and
 * account_id) are checked here: printable ASCII, 1 to 8192 characters. Does not connect: the first
 * call does, and a server that cannot be reached is only noticed then. Returns NULL with err filled
 * on failure (ANALYTICS_ERR_INVALID for bad options). Destroy with analytics_client_destroy. */
analytics_client_t *analytics_client_new(const analytics_options_t *opts, analytics_error_t *err);

/* Replaces the client's bearer token (copied; NULL removes it), for token
 * refresh: calls and batches started after it returns send the new token;
 * calls in flight keep the one they started with. Thread-safe: any thread,
 * any time, beside calls on other threads (the token is swapped under a
 * mutex held for a few instructions). The token must be 1 to 8192 printable
 * ASCII characters. Returns 0 or ANALYTICS_ERR_INVALID (NULL client, a bad
 * token, or a client created with an api_key), ANALYTICS_ERR_NOMEM. */
int analytics_client_set_token(analytics_client_t *client, const char *token,
                               analytics_error_t *err);

/* Delivers what is queued (waiting at most close_timeout_ms, retries
 * included), reports what is left through the callback as UNDELIVERED, stops
 * the background thread and frees the client. Blocks for at most about
 * close_timeout_ms plus one call timeout. No other thread may use the client
 * once this is called. */
void analytics_client_destroy(analytics_client_t *client);

/* Tracks an event without blocking: assigns its event id (a UUIDv7 unless
 * the event has one, see analytics_event_set_id) and timestamp (now, unless
 * set), copies it into the queue and returns. The background thread sends it
 * in a batch within flush_interval_ms (or sooner when batch_size events are
 * waiting), retrying UNAVAILABLE, RESOURCE_EXHAUSTED and DEADLINE_EXCEEDED
 * with exponential backoff and jitter; retries keep the event id, so the
 * server stores each event once (a retry of a stored event is answered
 * DUPLICATE and counted as delivered). ev is borrowed and may be destroyed or
 * reused right after the call. Never blocks beyond a mutex held for a few
 * instructions. Returns 0, ANALYTICS_ERR_QUEUE_FULL (dropped and counted),
 * ANALYTICS_ERR_INVALID (NULL client or event, or an event the protobuf
 * encoding refuses), ANALYTICS_ERR_NOMEM or ANALYTICS_ERR_CLOSED. */
int analytics_track(analytics_client_t *client, const analytics_event_t *ev,
                    analytics_error_t *err);

/* Writes a new UUIDv7 (time-ordered, unique) into out, NUL-terminated: what
 * analytics_track assigns. Use it with analytics_event_set_id to know an
 * event's id before tracking it. Returns 0, or ANALYTICS_ERR_INTERNAL when
 * the system has no randomness. */
#define ANALYTICS_EVENT_ID_SIZE 37
int analytics_generate_event_id(char out[ANALYTICS_EVENT_ID_SIZE]);

/* Waits until every event tracked before the call has been resolved
 * (delivered, rejected, or given up), sending queued events at once instead
 * of waiting for the flush interval. Blocks at most timeout_ms (0 or negative:
 * without limit). Returns 0 when all were delivered or rejected;
 * ANALYTICS_ERR_UNAVAILABLE when some were given up (see the callback and
 * the failed counter); ANALYTICS_ERR_TIMEOUT when time ran out. */
int analytics_flush(analytics_client_t *client, int64_t timeout_ms, analytics_error_t *err);

/* Counters of a client since it was created. Snapshots: each field is exact,
 * fields are read together under one lock. */
typedef struct analytics_stats {
  uint64_t tracked;    /* events analytics_track took into the queue */
  uint64_t queued;     /* events in the queue or in flight now */
  uint64_t sent;       /* events the server answered for (accepted + duplicates + rejected) */
  uint64_t accepted;   /* stored by the server (ACCEPTED or CORRECTED) */
  uint64_t duplicates; /* already stored before (a retry or a repeated id): delivered */
  uint64_t rejected;   /* refused by the server's validation */
  uint64_t dropped;    /* refused by analytics_track because the queue was full */
  uint64_t retries;    /* batch attempts repeated after a retryable failure */
  uint64_t failed;     /* given up: retries exhausted, non-retryable error, or closed */
  uint64_t batches;    /* TrackEvents requests the server answered */
} analytics_stats_t;

/* Copies the client's counters into *out. Never blocks beyond a mutex.
 * Returns 0, or ANALYTICS_ERR_INVALID for NULL arguments. */
int analytics_stats(analytics_client_t *client, analytics_stats_t *out);

/* --- Synchronous calls ---
 * Each blocks until the answer or the call timeout. *json_out (when the
 * pointer is not NULL) receives the answer as JSON text, owned by the caller,
 * freed with analytics_free; it is NULL after a failure. Ids are the
 * server's (e.g. "metricId" in a created metric). page_size 0 means the
 * server's default; page_token NULL or "" the first page. */

/* Tracks one event synchronously (TrackEvent), bypassing the queue. The
 * answer is the event's result: {"result":{"eventId":..,"status":"ACCEPTED"}}.
 * An invalid event fails with ANALYTICS_ERR_SERVER, INVALID_ARGUMENT. */
int analytics_track_sync(analytics_client_t *client, const analytics_event_t *ev, char **json_out,
                         analytics_error_t *err);

/* Search filters (SearchEvents). Zeroed fields do not filter. */
typedef struct analytics_search {
  int64_t from_ms; /* inclusive, Unix ms; 0: no lower bound */
  int64_t to_ms;   /* exclusive; 0: no upper bound */
  const char *event_type;
  const char *event_name;
  const char *session_id;
  const char *query; /* free text: every word must appear */
  /* Property equality: property_keys[i] must equal property_values[i]. */
  const char *const *property_keys;
  const char *const *property_values;
  size_t property_count;
  int32_t page_size;
  const char *page_token;
} analytics_search_t;

/* Searches the caller's events, newest first. Answer:
 * {"events":[...],"nextPageToken":"..."}. */
int analytics_search_events(analytics_client_t *client, const analytics_search_t *search,
                            char **json_out, analytics_error_t *err);

/* A metric definition (the spec's Metric Schema). Strings and arrays are
 * borrowed by the calls that take it. */
typedef struct analytics_metric {
  const char *name;
  const char *type; /* counter, gauge or histogram */
  const char *formula;
  const char *unit;
  const char *aggregation; /* avg, sum, min, max, last, count */
  const char *description;
  const char *const *dimensions; /* event fields or properties to group by */
  size_t dimension_count;
  /* Optional JSON array of filters, e.g.
   * [{"field":"properties.campaignId","op":"eq","value":"123"}]. */
  const char *filters_json;
  /* Optional JSON object of formula variables, e.g.
   * {"delivered":"count(message_delivered)"}. */
  const char *variables_json;
} analytics_metric_t;

/* Metrics (MetricService). Answers: the metric, {"metrics":[..],
 * "nextPageToken":..}, or for delete nothing. */
int analytics_create_metric(analytics_client_t *client, const analytics_metric_t *metric,
                            char **json_out, analytics_error_t *err);
int analytics_list_metrics(analytics_client_t *client, int32_t page_size, const char *page_token,
                           char **json_out, analytics_error_t *err);
int analytics_get_metric(analytics_client_t *client, const char *metric_id, char **json_out,
                         analytics_error_t *err);
/* Replaces the whole definition of metric_id with metric. */
int analytics_update_metric(analytics_client_t *client, const char *metric_id,
                            const analytics_metric_t *metric, char **json_out,
                            analytics_error_t *err);
int analytics_delete_metric(analytics_client_t *client, const char *metric_id,
                            analytics_error_t *err);

/* A query of a metric's data (GetMetricData). Zeroed fields: server
 * defaults. */
typedef struct analytics_metric_query {
  const char *metric_id; /* required */
  int64_t from_ms;
  int64_t to_ms;
  const char *interval;  /* 1m, 5m, 1h, 1d or auto */
  const char *time_zone; /* IANA name; UTC when NULL */
  int32_t top_n;
  int32_t page_size;
  const char *page_token;
} analytics_metric_query_t;

/* Answer: {"metricId":..,"series":[{"dimensions":{..},"buckets":[..]}],..}. */
int analytics_get_metric_data(analytics_client_t *client, const analytics_metric_query_t *query,
                              char **json_out, analytics_error_t *err);

/* A report to generate (the spec's Report Schema). */
typedef struct analytics_report {
  const char *name;
  const char *template_name; /* e.g. "campaign_performance" */
  const char *format;        /* pdf, xlsx or csv */
  const char *schedule;      /* optional cron expression */
  /* Optional JSON object, e.g. {"campaignId":"123","dateRange":{..}}. */
  const char *parameters_json;
  const char *const *recipients;
  size_t recipient_count;
} analytics_report_t;

/* Reports (ReportService). Answers: the report (with "reportId" and
 * "status"), or {"reports":[..],"nextPageToken":..}. */
int analytics_generate_report(analytics_client_t *client, const analytics_report_t *report,
                              char **json_out, analytics_error_t *err);
int analytics_list_reports(analytics_client_t *client, int32_t page_size, const char *page_token,
                           char **json_out, analytics_error_t *err);
int analytics_get_report(analytics_client_t *client, const char *report_id, char **json_out,
                         analytics_error_t *err);

/* One piece of a report file being downloaded (DownloadReport streams the
 * file; it is never held whole). Everything is borrowed: valid only during
 * the callback. The first piece carries the headers (content_type,
 * filename, etag, total_size) and maybe data; the others carry data. */
typedef struct analytics_file_chunk {
  const char *content_type; /* e.g. "application/pdf" */
  const char *filename;
  const char *etag;
  int64_t total_size; /* the whole file, not just the range asked for */
  int64_t offset;     /* where data belongs in the file */
  const unsigned char *data;
  size_t size;
} analytics_file_chunk_t;

/* Called for each piece, in order, on the calling thread; non-zero stops
 * the download (analytics_download_report then returns 0). */
typedef int (*analytics_file_chunk_fn)(const analytics_file_chunk_t *chunk, void *ctx);

/* What to download; a NULL options pointer means the whole file of the
 * latest completed run. */
typedef struct analytics_download_options {
  const char *run_id;        /* NULL = the latest completed run */
  int64_t offset;            /* first byte (resume); negative = the last -offset bytes */
  int64_t length;            /* bytes from offset; 0 = to the end */
  const char *if_none_match; /* an ETag held: when it is current only the
                                first piece comes, with size 0 */
} analytics_download_options_t;

/* Downloads a report's file as a stream of pieces. Returns 0, or a negative
 * error: ANALYTICS_ERR_* with the server's status (FAILED_PRECONDITION when
 * the run is not completed, OUT_OF_RANGE for an offset past the end).
 * Changed in 0.1 (ABI): it used to return the whole file in memory
 * (analytics_report_file_t, analytics_report_file_destroy, both gone). */
int analytics_download_report(analytics_client_t *client, const char *report_id,
                              const analytics_download_options_t *options,
                              analytics_file_chunk_fn on_chunk, void *ctx, analytics_error_t *err);

/* The same, writing the pieces to out at its current position (a resume
 * passes the file opened for append and options->offset = its size). When
 * info is not NULL it receives the first piece's headers (strings copied
 * into it; data NULL). */
typedef struct analytics_download_info {
  char content_type[128];
  char filename[256];
  char etag[128];
  int64_t total_size;
  int64_t written; /* bytes written to out */
} analytics_download_info_t;
int analytics_download_report_to_file(analytics_client_t *client, const char *report_id,
                                      const analytics_download_options_t *options, FILE *out,
                                      analytics_download_info_t *info, analytics_error_t *err);

/* An alert rule (the spec's Alert Schema). */
typedef struct analytics_alert {
  const char *name;
  const char *metric;    /* the metric watched, e.g. "error_rate" */
  const char *condition; /* e.g. "greater_than" */
  double threshold;
  const char *severity;        /* e.g. "critical" */
  const char *const *channels; /* e.g. {"email", "slack"} */
  size_t channel_count;
  int64_t cooldown; /* seconds between notifications; 0: the server's default */
  bool enabled;
} analytics_alert_t;

/* Alerts (AlertService). Answers: the alert, {"alerts":[..],
 * "nextPageToken":..}, {"entries":[..],"nextPageToken":..} for the
 * history, nothing for delete. */
int analytics_create_alert(analytics_client_t *client, const analytics_alert_t *alert,
                           char **json_out, analytics_error_t *err);
int analytics_list_alerts(analytics_client_t *client, int32_t page_size, const char *page_token,
                          char **json_out, analytics_error_t *err);
int analytics_get_alert(analytics_client_t *client, const char *alert_id, char **json_out,
                        analytics_error_t *err);
int analytics_update_alert(analytics_client_t *client, const char *alert_id,
                           const analytics_alert_t *alert, char **json_out, analytics_error_t *err);
int analytics_delete_alert(analytics_client_t *client, const char *alert_id,
                           analytics_error_t *err);
int analytics_list_alert_history(analytics_client_t *client, const char *alert_id,
                                 int32_t page_size, const char *page_token, char **json_out,
                                 analytics_error_t *err);

/* A notification channel (ChannelService; the README's "Channels and
 * notifications"). Strings and arrays are borrowed by the calls that take it.
 * Set the settings of one kind only: email_to, slack_webhook_url,
 * webhook_url, or the two telegram_* fields; which one decides the type.
 * Added in ANALYTICS_0.2 (symbol version), like every channel call and
 * analytics_stream_alerts. */
typedef struct analytics_channel {
  const char *name; /* unique per account */
  /* email, slack, webhook or telegram; NULL: the kind of settings set. When
   * given without settings (an update), the stored secrets are kept. */
  const char *type;
  bool is_default;             /* the account's channel of its type for alerts naming it */
  const char *const *email_to; /* email: 1 to 50 recipients */
  size_t email_to_count;
  const char *slack_webhook_url;  /* slack: an incoming-webhook URL (a secret) */
  const char *webhook_url;        /* webhook: the endpoint POSTed to, signed */
  const char *telegram_bot_token; /* telegram: the bot's token (a secret) */
  const char *telegram_chat_id;
} analytics_channel_t;

/* Channels (ChannelService). Answers: the channel (a webhook's signingSecret
 * shown only in the answer to create; secrets masked otherwise),
 * {"channels":[..],"nextPageToken":..}, nothing for delete. Another
 * account's or an unknown id: ANALYTICS_ERR_SERVER with err->code
 * ANALYTICS_STATUS_NOT_FOUND. Settings of two kinds: ANALYTICS_ERR_INVALID,
 * nothing sent. */
int analytics_create_channel(analytics_client_t *client, const analytics_channel_t *channel,
                             char **json_out, analytics_error_t *err);
int analytics_list_channels(analytics_client_t *client, int32_t page_size, const char *page_token,
                            char **json_out, analytics_error_t *err);
int analytics_get_channel(analytics_client_t *client, const char *channel_id, char **json_out,
                          analytics_error_t *err);
/* Replaces the whole channel; a secret left NULL (or sent back masked)
 * keeps its stored value, the signing secret never changes. */
int analytics_update_channel(analytics_client_t *client, const char *channel_id,
                             const analytics_channel_t *channel, char **json_out,
                             analytics_error_t *err);
int analytics_delete_channel(analytics_client_t *client, const char *channel_id,
                             analytics_error_t *err);
/* Sends a test notification through the channel now and waits for its one
 * attempt (at most the server's NOTIFY_TIMEOUT). Answer:
 * {"outcome":"delivered"|"failed"|"pending","status":<receiver's HTTP
 * status>,"error":..,"durationMs":..,"idempotencyKey":..}. Returns 0 when the
 * server answered, whatever the outcome; *delivered (may be NULL) tells
 * whether the outcome was "delivered". */
int analytics_test_channel(analytics_client_t *client, const char *channel_id, bool *delivered,
                           char **json_out, analytics_error_t *err);

/* --- Streams ---
 * Called for each message of a stream, on the calling thread, with the
 * message as JSON text (borrowed: valid during the call). A non-zero return
 * ends the stream. */
typedef int (*analytics_stream_fn)(const char *json, void *ctx);

/* Follows a metric's live values (StreamMetric): calls on_update for each
 * {"sequence":..,"metricId":..,"bucketStart":..,"value":..}. Blocks until
 * the server ends the stream or on_update returns non-zero (no call
 * timeout). Returns 0 in both cases, otherwise a negative error. */
int analytics_stream_metric(analytics_client_t *client, const char *metric_id,
                            analytics_stream_fn on_update, void *ctx, analytics_error_t *err);

/* Follows the state changes of the account's alert instances as they happen
 * (StreamAlerts): calls on_update for each {"sequence":..,"name":..,
 * "entry":{"alertId":..,"state":"firing",..,"value":..,"threshold":..}}
 * (an alert history entry). alert_ids (alert_id_count of them) limits it to
 * those alerts; NULL or 0: every alert. Blocks like analytics_stream_metric.
 * Added in ANALYTICS_0.2. */
int analytics_stream_alerts(analytics_client_t *client, const char *const *alert_ids,
                            size_t alert_id_count, analytics_stream_fn on_update, void *ctx,
                            analytics_error_t *err);

/* Filters of the live event stream; zeroed fields do not filter. */
typedef struct analytics_stream_filter {
  const char *event_type;
  const char *event_name;
  bool include_events; /* also send each event, not only rate snapshots */
} analytics_stream_filter_t;

/* Follows live analytics (StreamAnalytics): rate snapshots and, if asked,
 * the events themselves. filter may be NULL. Blocks like
 * analytics_stream_metric. */
int analytics_stream_analytics(analytics_client_t *client, const analytics_stream_filter_t *filter,
                               analytics_stream_fn on_update, void *ctx, analytics_error_t *err);

/* Runs any server-streaming RPC of the contracts by its full path
 * ("/analytics.v1.RealtimeService/StreamAnalytics") with a JSON request (NULL:
 * empty), calling on_message for each message like the two functions above:
 * the escape hatch for request fields their structs do not carry (property
 * filters, a metric stream's interval). ANALYTICS_ERR_INVALID for an unknown
 * method, one that is not server-streaming, or a request that does not match
 * the method's input. Blocks like analytics_stream_metric. */
int analytics_stream_call(analytics_client_t *client, const char *method, const char *request_json,
                          analytics_stream_fn on_message, void *ctx, analytics_error_t *err);

/* Ends every stream of this client in progress (analytics_stream_metric,
 * analytics_stream_analytics, analytics_stream_alerts,
 * analytics_stream_call), from any thread: each returns 0 promptly, as if
 * its callback had returned non-zero. Streams started after the call are not
 * affected. Not async-signal-safe: from a signal, call it on a thread that
 * waited for the signal (sigwait). Never blocks beyond a mutex. Returns the
 * number of streams cancelled, or ANALYTICS_ERR_INVALID for a NULL client. */
int analytics_client_cancel_streams(analytics_client_t *client);

/* --- Other --- */

/* Asks the server's health service about service ("" or NULL: the whole
 * server). *serving receives true when the answer is SERVING. */
int analytics_health(analytics_client_t *client, const char *service, bool *serving,
                     analytics_error_t *err);

/* Calls any unary RPC of the contracts by its full path
 * ("/analytics.v1.MetricService/ListMetrics") with a JSON request (NULL:
 * empty) and returns the JSON answer: the escape hatch for fields the
 * structs above do not carry. ANALYTICS_ERR_INVALID for an unknown method, a
 * streaming one, or a request that does not match the method's input. */
int analytics_call(analytics_client_t *client, const char *method, const char *request_json,
                   char **json_out, analytics_error_t *err);

#ifdef __cplusplus
}
#endif

#endif
