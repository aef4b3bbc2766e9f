/* The generator's view of the contracts: methods, routes and messages,
 * read from protoc's CodeGeneratorRequest. */
#ifndef GEN_MODEL_H
#define GEN_MODEL_H

#include <stdbool.h>
#include <stddef.h>

#include "google/protobuf/compiler/plugin.pb-c.h"

enum gen_kind { GEN_UNARY, GEN_SERVER_STREAMING, GEN_CLIENT_STREAMING, GEN_BIDI_STREAMING };

struct gen_route {
  const char *verb;          /* "GET", "POST", ... */
  const char *pattern;       /* "/api/metrics/{metric_id}" */
  const char *body;          /* "", "*" or a top-level field name */
  const char *response_body; /* "" or a top-level field name */
  size_t method;             /* index into gen_model.methods */
};

struct gen_method {
  char *full_service;        /* "analytics.v1.EventService" */
  const char *service_short; /* "EventService" */
  const char *name;          /* "TrackEvent" */
  char *path;                /* "/analytics.v1.EventService/TrackEvent" */
  char *enum_name;           /* "ANA_METHOD_ANALYTICS_V1_EVENT_SERVICE_TRACK_EVENT" */
  char *stub_name;           /* "ana_stub_event_service_track_event" */
  enum gen_kind kind;
  bool download; /* server-streaming of analytics.v1.FileChunk: an HTTP download */
  char *input_c_type, *output_c_type;   /* "Analytics__V1__TrackEventRequest" */
  char *input_desc, *output_desc;       /* "analytics__v1__track_event_request__descriptor" */
  const char *input_full, *output_full; /* ".analytics.v1.TrackEventRequest" */
  char *permission, *feature;
  bool audited;
  unsigned rate_cost;
};

/* The message a server-streaming method returns to be served as an HTTP
 * download (raw bytes) rather than a WebSocket. */
#define GEN_FILE_CHUNK ".analytics.v1.FileChunk"

struct gen_message {
  char *full_name; /* "analytics.v1.Event" (no leading dot) */
  const Google__Protobuf__DescriptorProto *proto;
  char *c_type, *desc;
};

struct gen_model {
  const Google__Protobuf__Compiler__CodeGeneratorRequest *request;
  struct gen_method *methods;
  size_t n_methods;
  struct gen_route *routes;
  size_t n_routes;
  struct gen_message *messages;
  size_t n_messages;
  char error[1024]; /* set when building the model fails */
};

/* Builds the model; returns 0, or -1 with model->error set. */
int gen_model_build(struct gen_model *model,
                    const Google__Protobuf__Compiler__CodeGeneratorRequest *request);

/* Finds a message by full name (with or without the leading dot). */
const struct gen_message *gen_model_message(const struct gen_model *model, const char *full_name);

/* Name helpers matching protoc-c's naming rules. */
char *gen_c_type_name(const char *full_name);  /* a.b.FooBar -> A__B__FooBar */
char *gen_c_lower_name(const char *full_name); /* a.b.FooBar -> a__b__foo_bar */
char *gen_upper_snake(const char *full_name);  /* a.b.FooBar -> A_B_FOO_BAR */

#endif
