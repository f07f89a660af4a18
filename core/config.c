/* The config table (UCX's parser.h idea): each row names a DCOMM_* variable, its
 * default as text, a parser and a one-line doc; dcomm-info prints them all. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

dc_config_t dc_config;

/* CFG_EXTERNAL: read outside the C library (by the application or the Python
 * package); a row so that it is documented and listed, never parsed here. */
typedef enum { CFG_SIZE, CFG_DURATION_US, CFG_DURATION_MS, CFG_INT, CFG_BOOL, CFG_STRING,
               CFG_LOG_LEVEL, CFG_EXTERNAL } cfg_type_t;

#define CFG_LAUNCH 1u /* set by dlaunch (or whoever starts the ranks), not a tuning */
#define CFG_SECRET 2u /* its value is never printed */

typedef struct cfg_row {
    const char *name;
    const char *dflt;
    cfg_type_t type;
    size_t offset;
    size_t size; /* strings: capacity */
    const char *doc;
    unsigned flags; /* CFG_LAUNCH, CFG_SECRET */
} cfg_row_t;

#define CFG_FIELD(f) offsetof(dc_config_t, f), sizeof(((dc_config_t *)0)->f)

static const cfg_row_t cfg_table[] = {
    {"DCOMM_FUSION_THRESHOLD", "128M", CFG_SIZE, CFG_FIELD(fusion_threshold),
     "fuse neighbouring allreduces into one buffer up to this size; 0 disables", 0},
    {"DCOMM_CYCLE_TIME", "1ms", CFG_DURATION_US, CFG_FIELD(cycle_time_us),
     "pace of the coordinator's negotiation cycles", 0},
    {"DCOMM_CACHE_CAPACITY", "1024", CFG_INT, CFG_FIELD(cache_capacity),
     "response cache entries for the fast path; 0 disables", 0},
    {"DCOMM_TIMELINE", "", CFG_STRING, CFG_FIELD(timeline),
     "write a Chrome-trace timeline to this path from rank 0", 0},
    {"DCOMM_TIMELINE_MARK_CYCLES", "off", CFG_BOOL, CFG_FIELD(timeline_mark_cycles),
     "mark the start of each coordinator cycle (CYCLE_START on a row 'coordinator') in the "
     "timeline, as Horovod's HOROVOD_TIMELINE_MARK_CYCLES", 0},
    {"DCOMM_AUTOTUNE", "off", CFG_BOOL, CFG_FIELD(autotune),
     "tune fusion threshold, cycle time and allreduce algorithm thresholds from measured "
     "throughput", 0},
    {"DCOMM_AUTOTUNE_LOG", "", CFG_STRING, CFG_FIELD(autotune_log),
     "with DCOMM_AUTOTUNE: write every autotune sample to this CSV file (rank 0)", 0},
    {"DCOMM_STALL_CHECK", "on", CFG_BOOL, CFG_FIELD(stall_check),
     "watch for tensors that some ranks submitted and others did not; off: no stall "
     "warning and no stall shutdown", 0},
    {"DCOMM_STALL_WARNING", "60s", CFG_DURATION_MS, CFG_FIELD(stall_warning_ms),
     "rank 0 warns when a tensor waited this long on some ranks, naming them", 0},
    {"DCOMM_STALL_SHUTDOWN", "0", CFG_DURATION_MS, CFG_FIELD(stall_shutdown_ms),
     "fail stalled tensors with DCOMM_ERR_TIMEOUT after this long; 0 never", 0},
    {"DCOMM_DEADLOCK_TIMEOUT", "5s", CFG_DURATION_MS, CFG_FIELD(deadlock_timeout_ms),
     "when every rank waits on tensors that can never all be submitted and nothing changes "
     "this long, fail those waits with DCOMM_ERR_MISMATCH naming each rank's wait; 0 never", 0},
    {"DCOMM_TIMEOUT", "30s", CFG_DURATION_MS, CFG_FIELD(timeout_ms),
     "declare a peer lost when a wait on it makes no progress this long; 0 never", 0},
    {"DCOMM_TRANSPORTS", "", CFG_STRING, CFG_FIELD(transports),
     "transports to use, e.g. 'shm,tcp', or to exclude with '^', e.g. '^shm'; empty: all",
     0},
    {"DCOMM_TUNE", "", CFG_STRING, CFG_FIELD(tune),
     "algorithm overrides per op and size, e.g. 'allreduce:0-64K:rd#allreduce:64K-inf:ring'", 0},
    {"DCOMM_CALIBRATE", "on", CFG_BOOL, CFG_FIELD(calibrate),
     "measure link latency and bandwidth at init for the algorithm cost model; off: defaults", 0},
    {"DCOMM_LOG_LEVEL", "warn", CFG_LOG_LEVEL, CFG_FIELD(log_level),
     "none, error, warn, info, debug or trace (stderr; lines carry host:pid:rank)", 0},
    {"DCOMM_IFNAME", "", CFG_STRING, CFG_FIELD(ifname),
     "network interface that carries tcp traffic", 0},
    {"DCOMM_TCP_ENCRYPT", "off", CFG_BOOL, CFG_FIELD(tcp_encrypt),
     "encrypt and authenticate every tcp stream after its handshake (AES-256-GCM with AES-NI "
     "on both ends, else ChaCha20-Poly1305; keys from the job secret and both ends' nonces); "
     "every rank must have the same value", 0},
    {"DCOMM_STATS", "off", CFG_BOOL, CFG_FIELD(stats),
     "print each rank's coordinator counters at shutdown", 0},
    {"DCOMM_WAIT_PROGRESS", "off", CFG_BOOL, CFG_FIELD(wait_progress),
     "on: a thread blocked in a wait runs the coordinator's cycles itself while nobody "
     "else does (no hand-off to the coordinator thread and back; faster on a loaded host, "
     "slower with ranks bound to cores, see README); off: it sleeps until the coordinator "
     "thread completes its handle. Never with a CUDA module loaded", 0},
    {"DCOMM_COORD_PRIORITY", "20", CFG_INT, CFG_FIELD(coord_priority),
     "run the coordinator thread this many nice levels above the thread that called "
     "dcomm_init, so collectives preempt the application's compute (below nice 0 needs "
     "CAP_SYS_NICE or RLIMIT_NICE, else as far as allowed); 0 leaves it equal", 0},
    {"DCOMM_FUSION_BYPASS", "1M", CFG_SIZE, CFG_FIELD(fusion_bypass),
     "an allreduce larger than this (or than half of DCOMM_FUSION_THRESHOLD when that is "
     "less) runs alone, in place, without the copy into the fusion buffer; 0: half of "
     "DCOMM_FUSION_THRESHOLD; every rank uses rank 0's value", 0},
    {"DCOMM_SHM_RING_SIZE", "0", CFG_SIZE, CFG_FIELD(shm_ring_size),
     "bytes of each shared-memory ring (one per peer pair and direction), 4K to 1G, rounded "
     "up to a power of two; 0: 4M, halved (to 256K at least) while a rank's rings would "
     "pass 256M", 0},
    {"DCOMM_MODULE_PATH", "", CFG_STRING, CFG_FIELD(module_path),
     "colon-separated directories searched for libdcomm-<name>.so before the one holding "
     "libdcomm", 0},
    {"DCOMM_TOPO_FILE", "", CFG_STRING, CFG_FIELD(topo_file),
     "an hwloc XML file that dcomm-info shows as this machine's topology (tests)", 0},
    {"DCOMM_REDUCE_ISA", "", CFG_STRING, CFG_FIELD(reduce_isa),
     "lower the reduction kernels to scalar, avx2 or avx512 (a level this CPU cannot run, "
     "or an unknown name, is ignored); empty: the best this CPU runs", 0},

    /* The job: set by dlaunch for each rank, or read by dlaunch and the Python
     * package. */
    {"DCOMM_RANK", "0", CFG_INT, CFG_FIELD(rank),
     "set by dlaunch: this rank's index in the job; when unset, OMPI_COMM_WORLD_RANK or "
     "SLURM_PROCID, else a job of one rank", CFG_LAUNCH},
    {"DCOMM_SIZE", "1", CFG_INT, CFG_FIELD(size),
     "set by dlaunch with DCOMM_RANK: the number of ranks in the job", CFG_LAUNCH},
    {"DCOMM_ELASTIC_WORKER", "0", CFG_INT, CFG_FIELD(elastic_worker),
     "set by dlaunch in an elastic job (--min-np, --max-np, --host-discovery-script): "
     "this process's worker id; each dcomm_init then takes rank and size from dlaunch's "
     "next membership round instead of DCOMM_RANK / DCOMM_SIZE", CFG_LAUNCH},
    {"DCOMM_LOCAL_RANK", "", CFG_EXTERNAL, 0, 0,
     "set by dlaunch for the application: this rank's index on its host (dcomm finds "
     "dcomm_local_rank() itself)", CFG_LAUNCH},
    {"DCOMM_LOCAL_SIZE", "", CFG_EXTERNAL, 0, 0,
     "set by dlaunch for the application: the number of ranks on this host", CFG_LAUNCH},
    {"DCOMM_CROSS_RANK", "", CFG_EXTERNAL, 0, 0,
     "set by dlaunch for the application: the index of this rank's host", CFG_LAUNCH},
    {"DCOMM_CROSS_SIZE", "", CFG_EXTERNAL, 0, 0,
     "set by dlaunch for the application: the number of hosts", CFG_LAUNCH},
    {"DCOMM_RENDEZVOUS", "", CFG_STRING, CFG_FIELD(rendezvous),
     "set by dlaunch: host:port of its rendezvous store, where ranks exchange addresses",
     CFG_LAUNCH},
    {"DCOMM_JOB_SECRET", "", CFG_STRING, CFG_FIELD(job_secret),
     "set by dlaunch: the job's secret (64 hexadecimal digits) that authenticates every "
     "connection; never printed", CFG_LAUNCH | CFG_SECRET},
    {"DCOMM_JOB_ID", "", CFG_EXTERNAL, 0, 0,
     "set by dlaunch for the application: an id of the job (32 hexadecimal digits)",
     CFG_LAUNCH},
    {"DCOMM_START_TIMEOUT", "0", CFG_DURATION_MS, CFG_FIELD(start_timeout_ms),
     "how long ranks wait for each other at start-up (dlaunch --start-timeout sets it, in "
     "seconds); 0: the larger of DCOMM_TIMEOUT and 60s", CFG_LAUNCH},
    {"DCOMM_STORE_DIR", "", CFG_STRING, CFG_FIELD(store_dir),
     "without dlaunch: a directory shared by the job's ranks (one per job, mode 0700) "
     "through which they find each other", CFG_LAUNCH},
    {"DCOMM_RDV_ADDR", "", CFG_STRING, CFG_FIELD(rdv_addr),
     "read by dlaunch: the address its rendezvous server binds to (--ifname wins); empty: "
     "127.0.0.1, or every interface when ranks run on other hosts", CFG_LAUNCH},
    {"DCOMM_LIBRARY", "", CFG_EXTERNAL, 0, 0,
     "read by the Python package: the libdcomm.so to load (else it looks next to the "
     "package and on the loader's path)", CFG_LAUNCH},
};

#define CFG_NROWS DC_ARRAY_SIZE(cfg_table)

/* Horovod's names for the same settings, read when the DCOMM_* row is unset.
 * Their values are Horovod's: its units where a bare number has one. */
typedef enum {
    ALIAS_SAME,       /* the row's parser; Horovod's values are a subset */
    ALIAS_BARE_MS,    /* a bare number is milliseconds (HOROVOD_CYCLE_TIME) */
    ALIAS_NOT,        /* a boolean that means the opposite (..._DISABLE) */
    ALIAS_LOG_LEVEL,  /* Horovod's levels: trace .. warning, error, fatal */
    ALIAS_TIMELINE,   /* a path, or DYNAMIC: no file until dcomm_timeline_start */
} alias_kind_t;

static const struct cfg_alias {
    const char *name;
    const char *row;
    alias_kind_t kind;
    const char *note; /* how the value is read, for dcomm-info */
} cfg_aliases[] = {
    {"HOROVOD_FUSION_THRESHOLD", "DCOMM_FUSION_THRESHOLD", ALIAS_SAME, "bytes; K, M, G too"},
    {"HOROVOD_CYCLE_TIME", "DCOMM_CYCLE_TIME", ALIAS_BARE_MS, "milliseconds, e.g. 0.5"},
    {"HOROVOD_CACHE_CAPACITY", "DCOMM_CACHE_CAPACITY", ALIAS_SAME, "entries"},
    {"HOROVOD_TIMELINE", "DCOMM_TIMELINE", ALIAS_TIMELINE,
     "path; DYNAMIC: none until dcomm_timeline_start"},
    {"HOROVOD_TIMELINE_MARK_CYCLES", "DCOMM_TIMELINE_MARK_CYCLES", ALIAS_SAME, "0 or 1"},
    {"HOROVOD_AUTOTUNE", "DCOMM_AUTOTUNE", ALIAS_SAME, "0 or 1"},
    {"HOROVOD_AUTOTUNE_LOG", "DCOMM_AUTOTUNE_LOG", ALIAS_SAME, "path"},
    {"HOROVOD_STALL_CHECK_DISABLE", "DCOMM_STALL_CHECK", ALIAS_NOT, "1 turns the check off"},
    {"HOROVOD_STALL_CHECK_TIME_SECONDS", "DCOMM_STALL_WARNING", ALIAS_SAME, "seconds"},
    {"HOROVOD_STALL_SHUTDOWN_TIME_SECONDS", "DCOMM_STALL_SHUTDOWN", ALIAS_SAME, "seconds"},
    {"HOROVOD_LOG_LEVEL", "DCOMM_LOG_LEVEL", ALIAS_LOG_LEVEL,
     "trace, debug, info, warning, error; fatal counts as error"},
    {"HOROVOD_GLOO_IFACE", "DCOMM_IFNAME", ALIAS_SAME, "interface name"},
};

/* Horovod variables that are honoured by being what dcomm always does. */
static const struct {
    const char *name;
    const char *note;
} cfg_accepted[] = {
    {"HOROVOD_DYNAMIC_PROCESS_SETS",
     "process sets can always be added and removed after init in dcomm"},
};

/* Where each row's value came from: NULL for its default, else the variable. */
static const char *cfg_source[CFG_NROWS];

static int parse_scaled(const char *text, uint64_t *value_p, const char *const *units,
                        const uint64_t *scales, size_t nunits)
{
    char *end;
    double value;

    while (isspace((unsigned char)*text)) {
        text++;
    }
    if (*text == '\0' || *text == '-') {
        return -1;
    }
    errno = 0;
    value = strtod(text, &end);
    if (errno != 0 || end == text || !(value >= 0)) {
        return -1;
    }
    for (size_t i = 0; i < nunits; i++) {
        if (*end == '\0' || strcasecmp(end, units[i]) == 0) {
            double scaled = value * (double)scales[*end == '\0' ? 0 : i] + 0.5;

            if (!(scaled < 18446744073709551616.0)) {
                return -1; /* beyond uint64_t (or inf): no silent wrap */
            }
            *value_p = (uint64_t)scaled;
            return 0;
        }
    }
    return -1;
}

int dc_config_parse_size(const char *text, uint64_t *bytes_p)
{
    static const char *const units[] = {"", "b", "k", "kb", "kib", "m", "mb", "mib",
                                        "g", "gb", "gib", "t", "tb", "tib"};
    static const uint64_t scales[] = {1, 1, 1ull << 10, 1ull << 10, 1ull << 10, 1ull << 20,
                                      1ull << 20, 1ull << 20, 1ull << 30, 1ull << 30, 1ull << 30,
                                      1ull << 40, 1ull << 40, 1ull << 40};

    return parse_scaled(text, bytes_p, units, scales, DC_ARRAY_SIZE(units));
}

int dc_config_parse_duration(const char *text, uint64_t *us_p)
{
    /* A bare number is seconds, as in Horovod's *_SECONDS variables. */
    static const char *const units[] = {"", "us", "ms", "s", "m", "min", "h"};
    static const uint64_t scales[] = {1000000, 1, 1000, 1000000, 60000000, 60000000,
                                      3600000000ull};

    return parse_scaled(text, us_p, units, scales, DC_ARRAY_SIZE(units));
}

int dc_config_parse_ms(const char *text, uint64_t *us_p)
{
    /* As dc_config_parse_duration, but a bare number is milliseconds. */
    static const char *const units[] = {"", "us", "ms", "s", "m", "min", "h"};
    static const uint64_t scales[] = {1000, 1, 1000, 1000000, 60000000, 60000000,
                                      3600000000ull};

    return parse_scaled(text, us_p, units, scales, DC_ARRAY_SIZE(units));
}

int dc_config_parse_bool(const char *text, int *value_p)
{
    static const char *const yes[] = {"1", "on", "yes", "true", "y"};
    static const char *const no[] = {"0", "off", "no", "false", "n", ""};

    for (size_t i = 0; i < DC_ARRAY_SIZE(yes); i++) {
        if (strcasecmp(text, yes[i]) == 0) {
            *value_p = 1;
            return 0;
        }
    }
    for (size_t i = 0; i < DC_ARRAY_SIZE(no); i++) {
        if (strcasecmp(text, no[i]) == 0) {
            *value_p = 0;
            return 0;
        }
    }
    return -1;
}

static int cfg_parse_row(const cfg_row_t *row, const char *text)
{
    void *field = (char *)&dc_config + row->offset;
    uint64_t u;
    char *end;

    switch (row->type) {
    case CFG_SIZE:
        return dc_config_parse_size(text, (uint64_t *)field);
    case CFG_DURATION_US:
        return dc_config_parse_duration(text, (uint64_t *)field);
    case CFG_DURATION_MS:
        if (dc_config_parse_duration(text, &u) != 0) {
            return -1;
        }
        *(uint64_t *)field = (u + 999) / 1000;
        return 0;
    case CFG_INT:
        errno = 0;
        *(int64_t *)field = strtoll(text, &end, 10);
        return (errno != 0 || end == text || *end != '\0' || *(int64_t *)field < 0) ? -1 : 0;
    case CFG_BOOL:
        return dc_config_parse_bool(text, (int *)field);
    case CFG_STRING:
        if (strlen(text) >= row->size) {
            return -1;
        }
        memcpy(field, text, strlen(text) + 1);
        return 0;
    case CFG_LOG_LEVEL:
        *(int *)field = dc_log_level_parse(text);
        return *(int *)field < 0 ? -1 : 0;
    case CFG_EXTERNAL:
        return 0; /* its readers parse it */
    }
    return -1;
}

static int cfg_is_known(const char *name, size_t len)
{
    for (size_t i = 0; i < DC_ARRAY_SIZE(cfg_table); i++) {
        if (strlen(cfg_table[i].name) == len && strncmp(cfg_table[i].name, name, len) == 0) {
            return 1;
        }
    }
    return 0;
}

extern char **environ;

static const cfg_row_t *cfg_row(const char *name)
{
    for (size_t i = 0; i < CFG_NROWS; i++) {
        if (strcmp(cfg_table[i].name, name) == 0) {
            return &cfg_table[i];
        }
    }
    return NULL;
}

/* A Horovod alias's value into its row, read the way Horovod reads it. */
static int cfg_parse_alias(const struct cfg_alias *a, const cfg_row_t *row, const char *text)
{
    void *field = (char *)&dc_config + row->offset;
    int v;

    switch (a->kind) {
    case ALIAS_BARE_MS:
        return dc_config_parse_ms(text, (uint64_t *)field);
    case ALIAS_NOT:
        if (dc_config_parse_bool(text, &v) != 0) {
            return -1;
        }
        *(int *)field = !v;
        return 0;
    case ALIAS_LOG_LEVEL:
        /* Horovod's fatal (only fatal errors) is dcomm's error: it has no fatal. */
        return cfg_parse_row(row, strcasecmp(text, "fatal") == 0 ? "error" : text);
    case ALIAS_TIMELINE:
        return cfg_parse_row(row, strcmp(text, "DYNAMIC") == 0 ? "" : text);
    case ALIAS_SAME:
        break;
    }
    return cfg_parse_row(row, text);
}

/* Row i: its default, then its DCOMM_* variable, else the first of its Horovod
 * aliases that is set. */
static dc_status_t cfg_load_row(size_t i)
{
    const cfg_row_t *row = &cfg_table[i];
    const char *value = getenv(row->name);

    cfg_source[i] = NULL;
    if (cfg_parse_row(row, row->dflt) != 0) {
        return dc_error_set(DCOMM_ERR_INTERNAL, "bad default for %s", row->name);
    }
    if (value != NULL && cfg_parse_row(row, value) != 0) {
        if (row->flags & CFG_SECRET) {
            return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s is not valid: %s", row->name,
                                row->doc);
        }
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s='%s' is not valid: %s", row->name,
                            value, row->doc);
    }
    if (value != NULL) {
        cfg_source[i] = row->name;
        return DCOMM_OK;
    }
    for (size_t k = 0; k < DC_ARRAY_SIZE(cfg_aliases); k++) {
        const struct cfg_alias *a = &cfg_aliases[k];

        if (strcmp(a->row, row->name) != 0 || (value = getenv(a->name)) == NULL) {
            continue;
        }
        if (cfg_parse_alias(a, row, value) != 0) {
            return dc_error_set(DCOMM_ERR_INVALID_ARG,
                                "%s='%s' is not valid (Horovod's name for %s; %s): %s",
                                a->name, value, row->name, a->note, row->doc);
        }
        cfg_source[i] = a->name;
        break;
    }
    return DCOMM_OK;
}

dc_status_t dc_config_load(void)
{
    dc_status_t status;

    for (size_t k = 0; k < DC_ARRAY_SIZE(cfg_aliases); k++) {
        if (cfg_row(cfg_aliases[k].row) == NULL) {
            return dc_error_set(DCOMM_ERR_INTERNAL, "alias %s of unknown %s",
                                cfg_aliases[k].name, cfg_aliases[k].row);
        }
    }
    for (size_t i = 0; i < CFG_NROWS; i++) {
        status = cfg_load_row(i);
        if (status < 0) {
            return status;
        }
    }
    if (!dc_config.stall_check) {
        dc_config.stall_warning_ms = UINT64_MAX; /* never reached: no warning */
        dc_config.stall_shutdown_ms = 0;
    }
    dc_log_set_level((dc_log_level_t)dc_config.log_level);
    for (size_t k = 0; k < DC_ARRAY_SIZE(cfg_aliases); k++) {
        const char *dv = getenv(cfg_aliases[k].row), *hv = getenv(cfg_aliases[k].name);

        if (dv != NULL && hv != NULL && strcmp(dv, hv) != 0) {
            DC_INFO("%s='%s' wins over %s='%s'", cfg_aliases[k].row, dv, cfg_aliases[k].name,
                    hv);
        }
    }
    for (char **env = environ; env != NULL && *env != NULL; env++) {
        const char *eq = strchr(*env, '=');

        if (strncmp(*env, "DCOMM_", 6) == 0 && eq != NULL &&
            !cfg_is_known(*env, (size_t)(eq - *env))) {
            DC_WARN("unknown variable %.*s ignored (dcomm-info lists the settings)",
                    (int)(eq - *env), *env);
        }
    }
    return DCOMM_OK;
}

dc_status_t dc_config_load_one(const char *name)
{
    const cfg_row_t *row = cfg_row(name);

    if (row == NULL) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "no setting is called %s", name);
    }
    return cfg_load_row((size_t)(row - cfg_table));
}

const char *dc_config_source(const char *name)
{
    const cfg_row_t *row = cfg_row(name);

    return row != NULL ? cfg_source[row - cfg_table] : NULL;
}

static void cfg_format(const cfg_row_t *row, char *buf, size_t cap)
{
    const void *field = (const char *)&dc_config + row->offset;
    static const char *const levels[] = {"none", "error", "warn", "info", "debug", "trace"};

    if (row->flags & CFG_SECRET) {
        snprintf(buf, cap, "%s", dc_config_source(row->name) != NULL ? "(hidden)" : "");
        return;
    }
    if (row->type == CFG_DURATION_MS && *(const uint64_t *)field == UINT64_MAX) {
        snprintf(buf, cap, "never");
        return;
    }
    switch (row->type) {
    case CFG_SIZE:
    case CFG_DURATION_MS:
        snprintf(buf, cap, "%" PRIu64 "%s", *(const uint64_t *)field,
                 row->type == CFG_SIZE ? "" : "ms");
        break;
    case CFG_DURATION_US:
        snprintf(buf, cap, "%" PRIu64 "us", *(const uint64_t *)field);
        break;
    case CFG_INT:
        snprintf(buf, cap, "%" PRId64, *(const int64_t *)field);
        break;
    case CFG_BOOL:
        snprintf(buf, cap, "%s", *(const int *)field ? "on" : "off");
        break;
    case CFG_STRING:
        snprintf(buf, cap, "%s", (const char *)field);
        break;
    case CFG_LOG_LEVEL:
        snprintf(buf, cap, "%s", levels[*(const int *)field]);
        break;
    case CFG_EXTERNAL:
        snprintf(buf, cap, "%s", getenv(row->name) != NULL ? getenv(row->name) : "");
        break;
    }
}

static void cfg_print_row(FILE *out, size_t i)
{
    const cfg_row_t *row = &cfg_table[i];
    const char *aliases = "";
    char value[600];

    cfg_format(row, value, sizeof(value));
    if (cfg_source[i] == NULL) {
        fprintf(out, "%-26s = %-12s (default)\n", row->name, value);
    } else {
        fprintf(out, "%-26s = %-12s (from %s%s; default %s)\n", row->name, value,
                cfg_source[i], strcmp(cfg_source[i], row->name) != 0 ? ", Horovod alias" : "",
                row->dflt[0] ? row->dflt : "\"\"");
    }
    fprintf(out, "    %s\n", row->doc);
    for (size_t k = 0; k < DC_ARRAY_SIZE(cfg_aliases); k++) {
        if (strcmp(cfg_aliases[k].row, row->name) == 0) {
            fprintf(out, "%s%s (%s)", *aliases ? ", " : "    alias: ", cfg_aliases[k].name,
                    cfg_aliases[k].note);
            aliases = "y";
        }
    }
    if (*aliases) {
        fputc('\n', out);
    }
}

void dc_config_print(FILE *out)
{
    for (size_t i = 0; i < CFG_NROWS; i++) {
        if (!(cfg_table[i].flags & CFG_LAUNCH)) {
            cfg_print_row(out, i);
        }
    }
    for (size_t k = 0; k < DC_ARRAY_SIZE(cfg_accepted); k++) {
        const char *v = getenv(cfg_accepted[k].name);

        fprintf(out, "%-26s   accepted%s%s%s: %s\n", cfg_accepted[k].name, v ? " (set to '" : "",
                v ? v : "", v ? "')" : "", cfg_accepted[k].note);
    }
    fprintf(out, "the job (set by dlaunch for each rank, or read by dlaunch and the Python "
                 "package):\n");
    for (size_t i = 0; i < CFG_NROWS; i++) {
        if (cfg_table[i].flags & CFG_LAUNCH) {
            cfg_print_row(out, i);
        }
    }
}

void dc_config_print_markdown(FILE *out)
{
    fprintf(out, "| variable | default | meaning |\n|---|---|---|\n");
    for (size_t i = 0; i < CFG_NROWS; i++) {
        const cfg_row_t *row = &cfg_table[i];
        const char *tick = row->dflt[0] != '\0' ? "`" : "";

        fprintf(out, "| `%s` | %s%s%s | ", row->name, tick, row->dflt, tick);
        for (const char *c = row->doc; *c != '\0'; c++) {
            if (strchr("|<*", *c) != NULL) {
                fputc('\\', out); /* a cell's end, an HTML tag, emphasis */
            }
            fputc(*c, out);
        }
        fprintf(out, " |\n");
    }
}
