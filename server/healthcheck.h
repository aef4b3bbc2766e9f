/* `analyticsd healthcheck`: probes the local server's GET /health. */
#ifndef ANA_HEALTHCHECK_H
#define ANA_HEALTHCHECK_H

/* argv[0] is "healthcheck". Returns the exit status: 0 when /health answers
 * 200, 1 when it answers otherwise or not at all, 2 on bad usage or PORT. */
int ana_healthcheck_main(int argc, char **argv);

#endif
