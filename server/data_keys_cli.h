/* `analyticsd data-keys ...`: field encryption's data keys, offline, on the store in DATA_DIR. */
#ifndef ANA_DATA_KEYS_CLI_H
#define ANA_DATA_KEYS_CLI_H

/* Runs `data-keys rotate|list` (argv[0] is "data-keys"); returns the exit
 * status (0, 1 on failure, 2 on bad usage). Prints; blocks. */
int ana_data_keys_cli_main(int argc, char **argv);

#endif
