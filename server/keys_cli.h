/* `analyticsd keys ...`: API keys managed offline, on the store in DATA_DIR. */
#ifndef ANA_KEYS_CLI_H
#define ANA_KEYS_CLI_H

/* Runs `keys create|list|revoke` (argv[0] is "keys"); returns the exit
 * status (0, 1 on failure, 2 on bad usage). Prints; blocks. */
int ana_keys_cli_main(int argc, char **argv);

#endif
