/* Every setting is one row of a table: name, default as text, parser, doc. The
 * environment is parsed once at init into dc_config. */
#ifndef DC_CONFIG_H
#define DC_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "status.h"

typedef struct dc_config {
    uint64_t fusion_threshold; /* bytes */
    uint64_t cycle_time_us;
    int64_t cache_capacity;
    char timeline[512];
    int autotune;
    uint64_t stall_warning_ms;
    uint64_t stall_shutdown_ms;
    uint64_t deadlock_timeout_ms;
    uint64_t timeout_ms;
    char transports[128];
    char tune[512];
    int calibrate;
    int log_level;
    char ifname[64];
    int stats;
    int64_t coord_priority; /* nice levels above the initializing thread */
} dc_config_t;

extern dc_config_t dc_config;

/* Parses every row from the environment (defaults where unset); warns about
 * unknown DCOMM_* variables. A malformed value is an error naming it. */
dc_status_t dc_config_load(void);
/* Prints every setting: name, value, default and doc (dcomm-info). */
void dc_config_print(FILE *out);

/* Parsers, exposed for tests. Return 0 on success. */
int dc_config_parse_size(const char *text, uint64_t *bytes_p);     /* 64M, 1G, 512K, 100 */
int dc_config_parse_duration(const char *text, uint64_t *us_p);    /* 5ms, 60s, 2m, 10us */
int dc_config_parse_bool(const char *text, int *value_p);          /* 1/0/on/off/yes/no */

#endif
