/* Every setting is one row of a table: name, default as text, parser, doc. The
 * environment is parsed once at init into dc_config. This is the one place that
 * reads DCOMM_* variables (tests/unit/check_env_reads.sh holds every other
 * source to that): layers below core get their values from core at init (the
 * transports through dc_bootstrap_t, the kernels through dc_reduce_set_isa);
 * programs above it (dlaunch, dbench) link this table (dcomm_config). */
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
    int timeline_mark_cycles; /* CYCLE_START marks in the timeline */
    int autotune;
    char autotune_log[512];
    int stall_check; /* off: stall_warning_ms is UINT64_MAX, stall_shutdown_ms 0 */
    uint64_t stall_warning_ms;
    uint64_t stall_shutdown_ms;
    uint64_t deadlock_timeout_ms;
    uint64_t timeout_ms;
    char transports[128];
    char tune[512];
    int calibrate;
    int log_level;
    char ifname[64];
    int tcp_encrypt;
    int stats;
    int wait_progress;      /* DCOMM_WAIT_PROGRESS */
    int64_t coord_priority; /* nice levels above the initializing thread */
    uint64_t fusion_bypass; /* bytes: a larger allreduce skips the fusion buffer */
    uint64_t shm_ring_size; /* bytes; 0: the shm transport's own choice */
    char module_path[4096];
    char topo_file[1024];
    char reduce_isa[16];
    /* The job (set by dlaunch, or by whoever starts the ranks). */
    int64_t rank;
    int64_t size;
    int64_t elastic_worker; /* only when DCOMM_ELASTIC_WORKER is set */
    char rendezvous[256];
    char job_secret[65];
    uint64_t start_timeout_ms; /* 0: the larger of timeout_ms and 60 s */
    char store_dir[1024];
    char rdv_addr[64]; /* dlaunch's */
} dc_config_t;

extern dc_config_t dc_config;

/* Parses every row from the environment (defaults where unset); a row that is
 * unset may come from its Horovod alias (HOROVOD_CYCLE_TIME for DCOMM_CYCLE_TIME,
 * in Horovod's units); the DCOMM_* variable wins when both are set. Warns about
 * unknown DCOMM_* variables (not about HOROVOD_* ones: Horovod has many that
 * dcomm has no use for). A malformed value is an error naming it. */
dc_status_t dc_config_load(void);
/* Loads one row (from its DCOMM_* variable, else its Horovod alias, else its
 * default), for programs that need a few settings without the rest (dlaunch). */
dc_status_t dc_config_load_one(const char *name);
/* Prints every setting: name, value, where the value came from (default, the
 * DCOMM_* variable or a Horovod alias), default, doc and aliases (dcomm-info). */
void dc_config_print(FILE *out);
/* Every row as one Markdown table: variable, default, doc (README's table). */
void dc_config_print_markdown(FILE *out);
/* The variable a setting's value came from (NULL: its default), or NULL for an
 * unknown setting; for tests and dcomm-info. */
const char *dc_config_source(const char *name);

/* Parsers, exposed for tests. Return 0 on success. */
int dc_config_parse_size(const char *text, uint64_t *bytes_p);     /* 64M, 1G, 512K, 100 */
int dc_config_parse_duration(const char *text, uint64_t *us_p);    /* 5ms, 60s, 2m, 10us */
int dc_config_parse_bool(const char *text, int *value_p);          /* 1/0/on/off/yes/no */
/* HOROVOD_CYCLE_TIME's form: a bare number is milliseconds ("0.5" is 500 us);
 * with a unit as dc_config_parse_duration. */
int dc_config_parse_ms(const char *text, uint64_t *us_p);

#endif
