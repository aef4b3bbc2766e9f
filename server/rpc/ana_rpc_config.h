/* The gRPC transport's settings: the struct its configuration rows fill. */
#ifndef ANA_RPC_CONFIG_H
#define ANA_RPC_CONFIG_H

#include "ana_config_table.h"

/* Filled by ana_rpc_config_table (config_rows.c); strings owned by the struct. */
struct ana_rpc_settings {
  int grpc_port;   /* GRPC_PORT */
  char *grpc_host; /* GRPC_HOST: bind address; an IPv6 address may come without brackets */
  long grpc_max_message_bytes;
  int grpc_max_concurrent_streams; /* per connection */
  int grpc_max_metadata_bytes;
  int grpc_streams_per_peer; /* open server-streaming calls per client IP */
  int grpc_threads;          /* 0 = one per CPU */
  int stream_send_queue_max;
  char *grpc_tls_cert_file;      /* GRPC_TLS_CERT_FILE: NULL = plaintext */
  char *grpc_tls_key_file;       /* GRPC_TLS_KEY_FILE */
  char *grpc_tls_client_ca_file; /* GRPC_TLS_CLIENT_CA_FILE: NULL = no client certificates */
};

extern const struct ana_config_table ana_rpc_config_table;

#endif
