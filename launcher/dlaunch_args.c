/* dlaunch's command line: its own options, horovodrun's tuning flags (set in
 * the environment as the DCOMM_* variables the ranks read) and the horovodrun
 * flags it refuses, each with what to do instead. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dlaunch.h"
#include "log.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: dlaunch [-np N] [-H host:slots,... | --hostfile F] [--rsh CMD] [--mpi]\n"
            "               [--ifname IF] [--bind-to core|numa|none] [--start-timeout S]\n"
            "               [--grace S] [--output-filename DIR] [--dry-run] [-v]\n"
            "               [horovodrun's flags below] [--] prog [args...]\n"
            "  -np, -n, --num-proc N  number of ranks (1..%d); default: every slot of the hosts\n"
            "  -H, --hosts LIST    hosts and their slots: host1:2,host2:2 (slots default 1)\n"
            "  --hostfile F        hosts from a file: one 'host slots=N' per line\n"
            "                      (neither: the Slurm allocation when SLURM_JOB_NODELIST is\n"
            "                      set, else this machine)\n"
            "  --rsh CMD           how to run a command on another host: CMD HOST prog...\n"
            "                      (default 'ssh'; e.g. 'ip netns exec' for namespaces)\n"
            "  -p, --ssh-port N    -i, --ssh-identity-file F: ssh's -p / -i (ssh rsh only)\n"
            "  --ifname IF         interface whose address carries the job's traffic\n"
            "                      (rendezvous and tcp transport); also --network-interface\n"
            "  --bind-to MODE      bind each rank to a core or NUMA node (hwloc), or none\n"
            "  --start-timeout S   abort when not every rank has connected to the rendezvous\n"
            "                      within S seconds (default 60; enforced once any rank has\n"
            "                      connected, or always when given); exit code %d\n"
            "  --grace S           seconds between SIGTERM and SIGKILL when stopping ranks\n"
            "                      (default 3)\n"
            "  --output-filename DIR  also write each rank's output to\n"
            "                      DIR/rank.<r>/stdout and stderr (--output-dir too; with\n"
            "                      --mpi: mpirun's --output-filename DIR)\n"
            "  --dry-run           print which rank runs where, start nothing\n"
            "  --mpi               hand the job to mpirun (Open MPI): -np, -H, --hostfile,\n"
            "                      --rsh (plm_rsh_agent), --ifname (oob/btl tcp interface)\n"
            "                      and every DCOMM_* and HOROVOD_* variable are passed on;\n"
            "                      dcomm's mpi module bootstraps the ranks (--mpirun CMD:\n"
            "                      another mpirun or more options; --dry-run prints it)\n"
            "  --gloo              no mpirun (what dlaunch does without --mpi)\n"
            "  -v, --verbose       log launcher actions to stderr\n"
            "elastic jobs (workers come and go; any of these makes the job elastic; the\n"
            "hosts must be names of this machine, e.g. localhost, 127.0.0.1):\n"
            "  --min-np N          fewest workers to train with (default: -np)\n"
            "  --max-np N          most workers (default: every slot the hosts offer)\n"
            "  --host-discovery-script F  prints the hosts now available, one 'host:slots'\n"
            "                      a line; run every --discovery-interval S s (default 1)\n"
            "  --reset-limit N     fail the job when it had to reset more than N times\n"
            "  --blacklist-cooldown-range LO HI  a failed host returns after LO s, doubling\n"
            "                      with each failure up to HI s (default: never returns)\n"
            "  --elastic-timeout S fail when fewer than --min-np workers are left for S s\n"
            "                      (default 600)\n"
            "horovodrun's tuning flags, set as the DCOMM_* variable for every rank:\n"
            "  --fusion-threshold-mb N   DCOMM_FUSION_THRESHOLD=N MiB\n"
            "  --cycle-time-ms MS        DCOMM_CYCLE_TIME (MS may be fractional)\n"
            "  --cache-capacity N        DCOMM_CACHE_CAPACITY\n"
            "  --timeline-filename F     DCOMM_TIMELINE\n"
            "  --[no-]timeline-mark-cycles  DCOMM_TIMELINE_MARK_CYCLES (CYCLE_START marks)\n"
            "  --[no-]autotune           DCOMM_AUTOTUNE;  --autotune-log-file F: _LOG\n"
            "  --stall-check-warning-time-seconds S   DCOMM_STALL_WARNING\n"
            "  --stall-check-shutdown-time-seconds S  DCOMM_STALL_SHUTDOWN\n"
            "  --no-stall-check, --stall-check        DCOMM_STALL_CHECK off / on\n"
            "  --log-level L             DCOMM_LOG_LEVEL (trace .. warning, error, fatal)\n"
            "Ranks get DCOMM_RANK, _SIZE, _LOCAL_RANK, _LOCAL_SIZE, _CROSS_RANK, _CROSS_SIZE\n"
            "and the same as HOROVOD_*, with HOROVOD_HOSTNAME. Environment: DCOMM_RDV_ADDR\n"
            "sets the rendezvous bind address (default 127.0.0.1, or every interface when\n"
            "ranks run on other hosts). DCOMM_* and HOROVOD_* variables are passed to\n"
            "remote ranks.\n",
            DL_MAX_RANKS, DL_EXIT_START_TIMEOUT);
}

static int parse_number(const char *text, double min, double max, double *value_p)
{
    char *end;
    double v;

    if (text == NULL || *text == '\0') {
        return -1;
    }
    errno = 0;
    v = strtod(text, &end);
    if (*end != '\0' || errno != 0 || !(v >= min && v <= max)) {
        return -1;
    }
    *value_p = v;
    return 0;
}

static int need_value(const char *a, const char *val)
{
    if (val == NULL) {
        fprintf(stderr, "dlaunch: %s needs a value\n", a);
        return DL_EXIT_USAGE;
    }
    return 0;
}

/* Options that take a string. Returns 1 when a was one of them (and val is used). */
static int parse_string_option(dl_options_t *opt, const char *a, const char *val, int *rc_p)
{
    static const char *const names[] = {"-H", "--host", "--hostfile", "--rsh", "--ifname",
                                        "--bind-to", "--mpirun", "--hosts", "-hostfile",
                                        "--output-filename", "--output-dir", "-p",
                                        "--ssh-port", "-i", "--ssh-identity-file",
                                        "--network-interface", "--network-interfaces"};
    int k = -1;

    for (int i = 0; i < (int)DC_ARRAY_SIZE(names); i++) {
        k = strcmp(a, names[i]) == 0 ? i : k;
    }
    if (k < 0) {
        return 0;
    }
    *rc_p = need_value(a, val);
    if (*rc_p != 0) {
        return 1;
    }
    switch (k) {
    case 0: case 1: case 7: opt->hosts_arg = val; break;
    case 2: case 8: opt->hostfile = val; break;
    case 3: opt->rsh = val; opt->rsh_given = 1; break;
    case 9: case 10: opt->output_dir = val; break;
    case 11: case 12: opt->ssh_port = val; break;
    case 13: case 14: opt->ssh_identity = val; break;
    case 4: case 15: case 16:
        if (strchr(val, ',') != NULL) {
            fprintf(stderr, "dlaunch: %s: one interface only, not '%s'\n", a, val);
            *rc_p = DL_EXIT_USAGE;
        }
        opt->ifname = val;
        break;
    case 6: opt->mpirun = val; break;
    default:
        if (strcmp(val, "core") == 0) {
            opt->bind = DL_BIND_CORE;
        } else if (strcmp(val, "numa") == 0) {
            opt->bind = DL_BIND_NUMA;
        } else if (strcmp(val, "none") == 0) {
            opt->bind = DL_BIND_NONE;
        } else {
            fprintf(stderr, "dlaunch: --bind-to takes core, numa or none, not '%s'\n", val);
            *rc_p = DL_EXIT_USAGE;
        }
        break;
    }
    return 1;
}

/* ---- horovodrun's flags ------------------------------------------------------------ */

/* horovodrun's tuning flags become the DCOMM_* variables the ranks read, set in
 * dlaunch's environment (so they reach local ranks, remote ones through the
 * agent and mpirun's with -x) and winning over the same variables inherited. */
typedef enum { HF_INT, HF_MB, HF_MS, HF_SECONDS, HF_TEXT, HF_ON, HF_OFF, HF_LEVEL } hf_kind_t;

static const struct hvd_flag {
    const char *flag;
    const char *var;
    hf_kind_t kind;
} hvd_flags[] = {
    {"--fusion-threshold-mb", "DCOMM_FUSION_THRESHOLD", HF_MB},
    {"--cycle-time-ms", "DCOMM_CYCLE_TIME", HF_MS},
    {"--cache-capacity", "DCOMM_CACHE_CAPACITY", HF_INT},
    {"--timeline-filename", "DCOMM_TIMELINE", HF_TEXT},
    {"--timeline-mark-cycles", "DCOMM_TIMELINE_MARK_CYCLES", HF_ON},
    {"--no-timeline-mark-cycles", "DCOMM_TIMELINE_MARK_CYCLES", HF_OFF},
    {"--autotune", "DCOMM_AUTOTUNE", HF_ON},
    {"--no-autotune", "DCOMM_AUTOTUNE", HF_OFF},
    {"--autotune-log-file", "DCOMM_AUTOTUNE_LOG", HF_TEXT},
    {"--stall-check-warning-time-seconds", "DCOMM_STALL_WARNING", HF_SECONDS},
    {"--stall-check-shutdown-time-seconds", "DCOMM_STALL_SHUTDOWN", HF_SECONDS},
    {"--no-stall-check", "DCOMM_STALL_CHECK", HF_OFF},
    {"--stall-check", "DCOMM_STALL_CHECK", HF_ON},
    {"--log-level", "DCOMM_LOG_LEVEL", HF_LEVEL},
};

/* horovodrun flags dlaunch has no equivalent for, with what to do instead. */
static const struct {
    const char *flag;
    const char *hint;
} hvd_refused[] = {
    {"--mpi-args", "with --mpi, give mpirun's options in --mpirun 'mpirun ARGS...'"},
    {"--config-file", "set the DCOMM_* (or HOROVOD_*) variables instead"},
    {"--jsrun", "only dlaunch's own launching and --mpi (Open MPI's mpirun) exist"},
    {"--hierarchical-allreduce", "dcomm chooses allreduce algorithms itself (DCOMM_TUNE)"},
    {"--hierarchical-allgather", "dcomm chooses allgather algorithms itself (DCOMM_TUNE)"},
};

/* One of hvd_flags: 0 not one, 1 a switch, 2 it took val; rc_p on bad values. */
static int parse_hvd_flag(const char *a, const char *val, int *rc_p)
{
    const struct hvd_flag *f = NULL;
    char text[64];
    double v;

    for (size_t i = 0; i < DC_ARRAY_SIZE(hvd_flags) && f == NULL; i++) {
        f = strcmp(a, hvd_flags[i].flag) == 0 ? &hvd_flags[i] : NULL;
    }
    if (f == NULL) {
        return 0;
    }
    if (f->kind == HF_ON || f->kind == HF_OFF) {
        setenv(f->var, f->kind == HF_ON ? "on" : "off", 1);
        return 1;
    }
    *rc_p = need_value(a, val);
    if (*rc_p != 0) {
        return 2;
    }
    switch (f->kind) {
    case HF_INT:
    case HF_MB:
    case HF_SECONDS:
        if (parse_number(val, 0, f->kind == HF_MB ? 1 << 24 : 1e9, &v) != 0 || v != (int)v) {
            fprintf(stderr, "dlaunch: %s needs a whole number >= 0, not '%s'\n", a, val);
            *rc_p = DL_EXIT_USAGE;
            return 2;
        }
        snprintf(text, sizeof(text), "%d%s", (int)v,
                 f->kind == HF_MB ? "M" : f->kind == HF_SECONDS ? "s" : "");
        break;
    case HF_MS:
        if (parse_number(val, 0, 3600000, &v) != 0) {
            fprintf(stderr, "dlaunch: %s needs milliseconds >= 0, e.g. 5 or 0.5, not '%s'\n", a,
                    val);
            *rc_p = DL_EXIT_USAGE;
            return 2;
        }
        snprintf(text, sizeof(text), "%gms", v);
        break;
    case HF_LEVEL:
        /* horovodrun's TRACE .. FATAL; dcomm has no fatal-only level: error. */
        if (strcasecmp(val, "fatal") != 0 && dc_log_level_parse(val) < 0) {
            fprintf(stderr, "dlaunch: %s takes trace, debug, info, warning, error or fatal, "
                            "not '%s'\n", a, val);
            *rc_p = DL_EXIT_USAGE;
            return 2;
        }
        snprintf(text, sizeof(text), "%s", strcasecmp(val, "fatal") == 0 ? "error" : val);
        break;
    default:
        setenv(f->var, val, 1);
        return 2;
    }
    setenv(f->var, text, 1);
    return 2;
}

/* An elastic job's flag (horovodrun's names too): 0 not one, else the number of
 * arguments it took; rc_p on bad values. */
static int parse_elastic_option(dl_options_t *opt, int argc, char **argv, int i, int *rc_p)
{
    static const struct {
        const char *names[2];
        double min, max;
        int whole;
    } rows[] = {
        {{"--min-np", "--min-num-proc"}, 1, DL_MAX_RANKS, 1},
        {{"--max-np", "--max-num-proc"}, 1, DL_MAX_RANKS, 1},
        {{"--reset-limit", NULL}, 0, 1e6, 1},
        {{"--elastic-timeout", NULL}, 1, 86400 * 7, 1},
        {{"--discovery-interval", NULL}, 0.001, 3600, 0},
        {{"--blacklist-cooldown-range", NULL}, 0, 86400, 0},
    };
    const char *a = argv[i];
    double v[2];
    int k = -1, nval;

    for (int r = 0; r < (int)DC_ARRAY_SIZE(rows) && k < 0; r++) {
        if (strcmp(a, rows[r].names[0]) == 0 ||
            (rows[r].names[1] != NULL && strcmp(a, rows[r].names[1]) == 0)) {
            k = r;
        }
    }
    if (strcmp(a, "--host-discovery-script") == 0) {
        *rc_p = need_value(a, i + 1 < argc ? argv[i + 1] : NULL);
        opt->discovery = argv[i + 1];
        opt->elastic = 1;
        return 2;
    }
    if (k < 0) {
        return 0;
    }
    nval = k == 5 ? 2 : 1;
    for (int j = 0; j < nval; j++) {
        if (i + 1 + j >= argc ||
            parse_number(argv[i + 1 + j], rows[k].min, rows[k].max, &v[j]) != 0 ||
            (rows[k].whole && v[j] != (int)v[j])) {
            fprintf(stderr, "dlaunch: %s needs %s in %g..%g\n", a,
                    nval == 2 ? "two numbers of seconds" : rows[k].whole ? "a whole number"
                                                                         : "a number",
                    rows[k].min, rows[k].max);
            *rc_p = DL_EXIT_USAGE;
            return 1 + nval;
        }
    }
    switch (k) {
    case 0: opt->min_np = (int)v[0]; opt->elastic = 1; break;
    case 1: opt->max_np = (int)v[0]; opt->elastic = 1; break;
    case 2: opt->reset_limit = (int)v[0]; break;
    case 3: opt->elastic_timeout_s = (int)v[0]; break;
    case 4: opt->discovery_interval_s = v[0]; break;
    default:
        if (v[1] < v[0]) {
            fprintf(stderr, "dlaunch: %s LO HI needs LO <= HI\n", a);
            *rc_p = DL_EXIT_USAGE;
        }
        opt->cooldown_lo = v[0];
        opt->cooldown_hi = v[1];
        break;
    }
    return 1 + nval;
}

/* -p / -i: ssh's own options, so only with an ssh rsh; no blanks (split there). */
static int add_ssh_options(dl_options_t *opt)
{
    const char *word = opt->rsh + strspn(opt->rsh, " \t"), *base = word;
    size_t len = strcspn(word, " \t");

    if (opt->ssh_port == NULL && opt->ssh_identity == NULL) {
        return 0;
    }
    for (const char *p = word; p < word + len; p++) {
        base = *p == '/' ? p + 1 : base;
    }
    if ((size_t)(word + len - base) != 3 || strncmp(base, "ssh", 3) != 0) {
        fprintf(stderr, "dlaunch: %s is ssh's option, but --rsh is '%s'\n",
                opt->ssh_port ? "--ssh-port" : "--ssh-identity-file", opt->rsh);
        return DL_EXIT_USAGE;
    }
    if ((opt->ssh_identity && strpbrk(opt->ssh_identity, " \t") != NULL) ||
        (size_t)snprintf(opt->rsh_buf, sizeof(opt->rsh_buf), "%s%s%s%s%s", opt->rsh,
                         opt->ssh_port ? " -p " : "", opt->ssh_port ? opt->ssh_port : "",
                         opt->ssh_identity ? " -i " : "",
                         opt->ssh_identity ? opt->ssh_identity : "") >= sizeof(opt->rsh_buf)) {
        fprintf(stderr, "dlaunch: --ssh-identity-file needs a path without blanks, and the "
                        "ssh command at most %zu bytes\n", sizeof(opt->rsh_buf) - 1);
        return DL_EXIT_USAGE;
    }
    opt->rsh = opt->rsh_buf;
    opt->rsh_given = 1;
    return 0;
}

static int unknown_option(const char *a)
{
    for (size_t i = 0; i < DC_ARRAY_SIZE(hvd_refused); i++) {
        if (strcmp(a, hvd_refused[i].flag) == 0) {
            fprintf(stderr, "dlaunch: horovodrun's %s is not supported: %s\n", a,
                    hvd_refused[i].hint);
            return DL_EXIT_USAGE;
        }
    }
    fprintf(stderr, "dlaunch: unknown option %s (dlaunch --help lists the options, "
                    "horovodrun's that dlaunch takes among them)\n", a);
    return DL_EXIT_USAGE;
}

int dl_args_parse(int argc, char **argv, dl_options_t *opt)
{
    double v;
    int i, hf, rc = 0;

    opt->np = 0;
    opt->grace_s = 3.0;
    opt->start_timeout_s = 60;
    opt->rsh = "ssh";
    opt->reset_limit = -1;
    opt->elastic_timeout_s = 600;
    opt->discovery_interval_s = 1.0;
    for (i = 1; i < argc && argv[i][0] == '-' && rc == 0; i++) {
        const char *a = argv[i];
        const char *val = (i + 1 < argc) ? argv[i + 1] : NULL;

        if (strcmp(a, "--") == 0) {
            i++;
            break;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 256;
        } else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
            opt->verbose = 1;
        } else if (strcmp(a, "--dry-run") == 0) {
            opt->dry_run = 1;
        } else if (strcmp(a, "--mpi") == 0) {
            opt->mpi = 1;
        } else if (strcmp(a, "--gloo") == 0) {
            opt->gloo = 1; /* dlaunch's own launching, which it does anyway */
        } else if (strcmp(a, "--agent") == 0) {
            opt->agent = 1;
        } else if (parse_string_option(opt, a, val, &rc)) {
            i++;
        } else if ((hf = parse_hvd_flag(a, val, &rc)) != 0) {
            i += hf - 1;
        } else if ((hf = parse_elastic_option(opt, argc, argv, i, &rc)) != 0) {
            i += hf - 1;
        } else if (strcmp(a, "-np") == 0 || strcmp(a, "-n") == 0 || strcmp(a, "--np") == 0 ||
                   strcmp(a, "--num-proc") == 0) {
            if (parse_number(val, 1, DL_MAX_RANKS, &v) != 0 || v != (int)v) {
                fprintf(stderr, "dlaunch: %s needs a rank count in 1..%d\n", a, DL_MAX_RANKS);
                return DL_EXIT_USAGE;
            }
            opt->np = (int)v;
            i++;
        } else if (strcmp(a, "--start-timeout") == 0) {
            if (parse_number(val, 1, 86400 * 7, &v) != 0 || v != (int)v) {
                fprintf(stderr, "dlaunch: --start-timeout needs whole seconds >= 1\n");
                return DL_EXIT_USAGE;
            }
            opt->start_timeout_s = (int)v;
            opt->start_timeout_given = 1;
            i++;
        } else if (strcmp(a, "--grace") == 0) {
            if (parse_number(val, 0, 3600, &v) != 0) {
                fprintf(stderr, "dlaunch: --grace needs seconds in 0..3600\n");
                return DL_EXIT_USAGE;
            }
            opt->grace_s = v;
            i++;
        } else {
            return unknown_option(a);
        }
    }
    if (rc != 0) {
        return rc;
    }
    if (opt->gloo && opt->mpi) {
        fprintf(stderr, "dlaunch: --gloo (no mpirun) and --mpi (mpirun) exclude each other\n");
        return DL_EXIT_USAGE;
    }
    rc = add_ssh_options(opt);
    if (rc != 0) {
        return rc;
    }
    if (opt->agent) {
        return 0; /* the job comes on stdin */
    }
    if (opt->elastic && (opt->mpi || opt->output_dir != NULL || opt->hostfile != NULL ||
                         (opt->discovery != NULL) == (opt->hosts_arg != NULL))) {
        fprintf(stderr, "dlaunch: an elastic job takes its hosts from exactly one of "
                        "--host-discovery-script and -H, and no --mpi, --hostfile or "
                        "--output-filename\n");
        return DL_EXIT_USAGE;
    }
    if ((opt->np == 0 && opt->hosts_arg == NULL && opt->hostfile == NULL &&
         getenv("SLURM_JOB_NODELIST") == NULL && !opt->elastic) ||
        i >= argc) {
        fprintf(stderr, "dlaunch: %s\n", i >= argc ? "missing program" : "missing -np N");
        usage(stderr);
        return DL_EXIT_USAGE;
    }
    opt->argv = &argv[i];
    return 0;
}

const char *dl_bind_name(dl_bind_t bind)
{
    return bind == DL_BIND_CORE ? "core" : bind == DL_BIND_NUMA ? "numa" : "none";
}
