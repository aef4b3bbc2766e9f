/* Configuration rows: the gRPC transport's settings. Adding a variable = a row here and a member in
 * struct ana_rpc_settings. */
#include "ana_rpc_config.h"

#define ROW(member) ANA_CONFIG_FIELD(struct ana_rpc_settings, member)

static const struct ana_config_row rows[] = {
    {.name = "GRPC_PORT",
     .type = ANA_CONFIG_PORT,
     .def = "50051",
     .help = "Port of the gRPC API.",
     ROW(grpc_port)},
    {.name = "GRPC_HOST",
     .type = ANA_CONFIG_STRING,
     .def = "0.0.0.0",
     .help = "Address the gRPC server binds to.",
     .check = ana_config_valid_bind_host,
     .expect = "a host name or IP address (e.g. 0.0.0.0, ::, 127.0.0.1)",
     ROW(grpc_host)},
    {.name = "GRPC_MAX_MESSAGE_BYTES",
     .type = ANA_CONFIG_INT,
     .def = "4194304",
     .min = 1024,
     .max = 268435456,
     .help = "Largest request message accepted, in bytes.",
     ROW(grpc_max_message_bytes)},
    {.name = "GRPC_MAX_CONCURRENT_STREAMS",
     .type = ANA_CONFIG_INT,
     .def = "100",
     .min = 1,
     .max = 100000,
     .help = "Calls one gRPC connection may have open at once (HTTP/2 "
             "SETTINGS_MAX_CONCURRENT_STREAMS); further ones wait at the client.",
     ROW(grpc_max_concurrent_streams)},
    {.name = "GRPC_MAX_METADATA_BYTES",
     .type = ANA_CONFIG_INT,
     .def = "16384",
     .min = 1024,
     .max = 1048576,
     .help = "Largest request metadata (headers) of a gRPC call, in bytes; a call with more is "
             "refused (RESOURCE_EXHAUSTED).",
     ROW(grpc_max_metadata_bytes)},
    {.name = "GRPC_STREAMS_PER_PEER",
     .type = ANA_CONFIG_INT,
     .def = "64",
     .min = 1,
     .max = 100000,
     .help = "Server-streaming gRPC calls one client IP address may have open at once, over all "
             "its connections; further ones get RESOURCE_EXHAUSTED.",
     ROW(grpc_streams_per_peer)},
    {.name = "GRPC_THREADS",
     .type = ANA_CONFIG_INT,
     .def = "0",
     .min = 0,
     .max = 256,
     .help = "Threads serving gRPC completion queues; 0 means one per CPU.",
     ROW(grpc_threads)},
    {.name = "STREAM_SEND_QUEUE_MAX",
     .type = ANA_CONFIG_INT,
     .def = "256",
     .min = 1,
     .max = 1000000,
     .help = "Most messages queued for sending on one outbound stream.",
     ROW(stream_send_queue_max)},
};

const struct ana_config_table ana_rpc_config_table = ANA_CONFIG_TABLE("rpc", rows);
