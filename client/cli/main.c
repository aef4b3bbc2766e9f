/* analyticsctl: the command-line tool on libanalytics. Global options, the
 * command table, and the client each command runs with.
 * Answers go to stdout (tables on a terminal, JSON otherwise; -o decides),
 * errors to stderr. Exit status: 0 success, 1 the call failed (or, for
 * track, an event was not stored), 2 bad usage. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The commands, in the order of the help. A new command is one
 * cmd_<name>.c defining cli_cmd_<name> and one row here. */
#define CLI_COMMANDS(X)                                                                            \
  X(track)                                                                                         \
  X(search)                                                                                        \
  X(metrics)                                                                                       \
  X(reports)                                                                                       \
  X(alerts)                                                                                        \
  X(channels)                                                                                      \
  X(tail)                                                                                          \
  X(health)                                                                                        \
  X(audit)                                                                                         \
  X(data_keys)                                                                                     \
  X(call)                                                                                          \
  X(token)

#define DECLARE(name) extern const struct cli_command cli_cmd_##name;
#define ROW(name) &cli_cmd_##name,
CLI_COMMANDS(DECLARE)
static const struct cli_command *const commands[] = {CLI_COMMANDS(ROW)};
#define N_COMMANDS (sizeof commands / sizeof *commands)

static void main_help(void) {
  fputs("usage: analyticsctl [--target HOST:PORT] [--token TOKEN | --api-key KEY]\n"
        "                    [--account ID] [--timeout MS] [-o json|table]\n"
        "                    [--tls] [--ca FILE] [--cert FILE --key FILE]\n"
        "                    [--server-name NAME] COMMAND ...\n"
        "\n"
        "commands:\n",
        stdout);
  for (size_t k = 0; k < N_COMMANDS; k++)
    printf("  %-9s %s\n", commands[k]->name, commands[k]->summary);
  fputs("\n"
        "global options:\n"
        "  --target HOST:PORT   gRPC address of analyticsd ($ANALYTICS_TARGET, default\n"
        "                       127.0.0.1:50051)\n"
        "  --token TOKEN        bearer token (a JWT), sent as authorization: Bearer\n"
        "                       ($ANALYTICS_TOKEN; `analyticsctl token` mints one)\n"
        "  --api-key KEY        API key ana_<id>_<secret>, sent as x-api-key\n"
        "                       ($ANALYTICS_API_KEY); instead of a token\n"
        "  --account ID         the account to act on, sent as x-account-id\n"
        "                       ($ANALYTICS_ACCOUNT); needed when the token holds\n"
        "                       several accounts\n"
        "  --timeout MS         deadline of each call (default 10000)\n"
        "  --tls                connect over TLS, trusting the system's CA certificates\n"
        "                       ($ANALYTICS_TLS=true); implied by --ca, --cert, --key\n"
        "  --ca FILE            PEM CA certificates the server's certificate must chain\n"
        "                       to ($ANALYTICS_CA)\n"
        "  --cert FILE          PEM client certificate for mutual TLS ($ANALYTICS_CERT)\n"
        "  --key FILE           PEM private key of --cert ($ANALYTICS_KEY)\n"
        "  --server-name NAME   name the server's certificate must carry, instead of the\n"
        "                       host of --target ($ANALYTICS_SERVER_NAME)\n"
        "  -o, --output FORMAT  json or table (default: table when stdout is a terminal,\n"
        "                       else json); also accepted after the command\n"
        "\n"
        "Flags win over the environment; an empty variable counts as unset.\n"
        "`analyticsctl COMMAND --help` describes a command. Exit status 0 on success, 1\n"
        "when the server or the call failed (the status and message on stderr, e.g.\n"
        "UNAUTHENTICATED), 2 on a usage error.\n",
        stdout);
}

/* $name when set and not empty, else fallback. */
static const char *env_or(const char *fallback, const char *name) {
  const char *v = getenv(name);
  return v && *v ? v : fallback;
}

static const struct cli_command *find(const char *name) {
  for (size_t k = 0; k < N_COMMANDS; k++)
    if (!strcmp(commands[k]->name, name))
      return commands[k];
  return NULL;
}

int main(int argc, char **argv) {
  const struct cli_command *cmd;
  analytics_options_t opts;
  analytics_client_t *c;
  analytics_error_t err;
  struct cli_args a;
  const char *flag_token = NULL, *flag_api_key = NULL;
  long timeout;
  int i, rc;

  analytics_options_init(&opts);
  opts.target = env_or(opts.target, "ANALYTICS_TARGET");
  opts.token = env_or(NULL, "ANALYTICS_TOKEN");
  opts.api_key = env_or(NULL, "ANALYTICS_API_KEY");
  opts.account_id = env_or(NULL, "ANALYTICS_ACCOUNT");
  const char *tls_env = env_or(NULL, "ANALYTICS_TLS");
  if (tls_env && strcmp(tls_env, "true") && strcmp(tls_env, "1") && strcmp(tls_env, "false") &&
      strcmp(tls_env, "0"))
    return cli_usage(NULL, "ANALYTICS_TLS takes true or false, not \"%s\"", tls_env);
  opts.tls = tls_env && (!strcmp(tls_env, "true") || !strcmp(tls_env, "1"));
  opts.tls_ca_file = env_or(NULL, "ANALYTICS_CA");
  opts.tls_cert_file = env_or(NULL, "ANALYTICS_CERT");
  opts.tls_key_file = env_or(NULL, "ANALYTICS_KEY");
  opts.tls_server_name = env_or(NULL, "ANALYTICS_SERVER_NAME");
  cli_format = isatty(STDOUT_FILENO) == 1 ? CLI_FORMAT_TABLE : CLI_FORMAT_JSON;
  /* Global options come before the command. */
  for (i = 1; i < argc && argv[i][0] == '-'; i++) {
    const char *o = argv[i];
    if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
      main_help();
      return 0;
    }
    if (!strcmp(o, "--version")) {
      puts(ANALYTICS_VERSION_STRING);
      return 0;
    }
    if (!strcmp(o, "--tls")) {
      opts.tls = true;
      continue;
    }
    if (strcmp(o, "--target") && strcmp(o, "--token") && strcmp(o, "--api-key") &&
        strcmp(o, "--account") && strcmp(o, "--timeout") && strcmp(o, "-o") &&
        strcmp(o, "--output") && strcmp(o, "--ca") && strcmp(o, "--cert") && strcmp(o, "--key") &&
        strcmp(o, "--server-name"))
      return cli_usage(NULL, "unknown option %s", o);
    if (i + 1 >= argc)
      return cli_usage(NULL, "%s needs a value", o);
    const char *v = argv[++i];
    if (!strcmp(o, "--target"))
      opts.target = v;
    else if (!strcmp(o, "--token"))
      flag_token = v;
    else if (!strcmp(o, "--api-key"))
      flag_api_key = v;
    else if (!strcmp(o, "--account"))
      opts.account_id = v;
    else if (!strcmp(o, "--ca"))
      opts.tls_ca_file = v;
    else if (!strcmp(o, "--cert"))
      opts.tls_cert_file = v;
    else if (!strcmp(o, "--key"))
      opts.tls_key_file = v;
    else if (!strcmp(o, "--server-name"))
      opts.tls_server_name = v;
    else if (!strcmp(o, "--timeout")) {
      if (cli_parse_long(v, 1, 86400000, &timeout) < 0)
        return cli_usage(NULL, "--timeout takes milliseconds (1 to 86400000)");
      opts.timeout_ms = timeout;
    } else if (cli_format_set(v) < 0)
      return cli_usage(NULL, "-o/--output takes json or table, not \"%s\"", v);
  }
  /* A credential given as a flag replaces both from the environment: a
   * --api-key beside $ANALYTICS_TOKEN means the key. */
  if (flag_token || flag_api_key) {
    opts.token = flag_token;
    opts.api_key = flag_api_key;
  }
  if (opts.token && opts.api_key)
    return cli_usage(NULL, "give a token or an API key, not both");
  if (i >= argc)
    return cli_usage(NULL, "missing command");
  if (!strcmp(argv[i], "help")) {
    cmd = i + 1 < argc ? find(argv[i + 1]) : NULL;
    if (cmd)
      fputs(cmd->help, stdout);
    else
      main_help();
    return 0;
  }
  if (!(cmd = find(argv[i])))
    return cli_usage(NULL, "unknown command \"%s\"", argv[i]);
  /* The command's own arguments: argv[i] plays argv[0] for getopt. */
  rc = cli_args_parse(cmd, argc - i, argv + i, &a);
  if (rc != 0)
    return rc < 0 ? 0 : rc;
  if (cmd->run_local)
    return cmd->run_local(&a);

  opts.max_retries = -1;
  if (cmd->configure)
    cmd->configure(&a, &opts);
  if (cmd->streams)
    cli_signals_block();
  c = analytics_client_new(&opts, &err);
  if (!c) {
    fprintf(stderr, "analyticsctl: %s\n", err.message);
    return err.code == ANALYTICS_STATUS_INVALID_ARGUMENT ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
  }
  if (cmd->streams)
    cli_signals_watch(c);
  rc = cmd->run(c, &a);
  if (cmd->streams)
    cli_signals_unwatch();
  analytics_client_destroy(c);
  return rc;
}
