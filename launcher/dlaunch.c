/* dlaunch: starts the ranks of a dcomm job, on this machine and on other hosts
 * (through one rsh agent per host, dlaunch_remote.c), with the rendezvous
 * server in its own single-threaded event loop; prefixes their output with
 * "[rank] ", forwards signals, and on the first failing rank stops the others
 * and exits with its code.
 *
 * The loop polls one signalfd (SIGCHLD, SIGINT, SIGTERM, SIGHUP), the server's
 * epoll fd, every local rank's stdout/stderr pipe and every agent's pipes. Each
 * local rank is the leader of its own process group, and dlaunch is a child
 * subreaper, so stray children of a rank are signalled with it and reaped here;
 * nothing outlives dlaunch. The same program is the agent (--agent): there the
 * loop also reads dlaunch's commands on stdin. */
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "dc_time.h"
#include "dlaunch.h"
#include "log.h"
#include "topology.h"

#define DRAIN_TIMEOUT_MS   2000 /* after the last rank: wait this long for output */
#define AGENT_KILL_NS      2000000000ull /* after SIGKILL: agents that linger are killed */
#define EXIT_START_TIMEOUT 124

int dl_verbose;

/* ---- Arguments ------------------------------------------------------------------- */

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
            DL_MAX_RANKS, EXIT_START_TIMEOUT);
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
    {"--min-np", "elastic jobs are not supported"},
    {"--max-np", "elastic jobs are not supported"},
    {"--host-discovery-script", "elastic jobs are not supported"},
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

/* Returns 0, or the exit code to leave with (usage errors: 2, --help: 0 + 256). */
static int parse_args(int argc, char **argv, dl_options_t *opt)
{
    double v;
    int i, hf, rc = 0;

    opt->np = 0;
    opt->grace_s = 3.0;
    opt->start_timeout_s = 60;
    opt->rsh = "ssh";
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
    if ((opt->np == 0 && opt->hosts_arg == NULL && opt->hostfile == NULL &&
         getenv("SLURM_JOB_NODELIST") == NULL) ||
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

/* ---- Output ------------------------------------------------------------------------ */

void dl_write_all(dl_job_t *job, int fd, const struct iovec *iov, int iovcnt)
{
    struct iovec v[4];
    ssize_t n;

    if (fd == 1 && job->stdout_broken) {
        return;
    }
    memcpy(v, iov, sizeof(*iov) * (size_t)iovcnt);
    while (iovcnt > 0) {
        n = writev(fd, v, iovcnt);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            job->stdout_broken |= (fd == 1); /* e.g. `dlaunch ... | head`: keep going */
            return;
        }
        while (iovcnt > 0 && (size_t)n >= v[0].iov_len) {
            n -= (ssize_t)v[0].iov_len;
            memmove(v, v + 1, sizeof(*v) * (size_t)--iovcnt);
        }
        if (iovcnt > 0) {
            v[0].iov_base = (char *)v[0].iov_base + n;
            v[0].iov_len -= (size_t)n;
        }
    }
}

/* One writev per line, so lines of different ranks never interleave. The agent
 * sends "<fd> <rank> " lines to dlaunch instead (its stdout is the link). */
void dl_emit_line(dl_job_t *job, int rank, int out_fd, const char *line, size_t len)
{
    char prefix[32];
    int plen = job->opt.agent ? snprintf(prefix, sizeof(prefix), "%d %d ", out_fd, rank)
                              : snprintf(prefix, sizeof(prefix), "[%d] ", rank);
    struct iovec iov[3] = {{prefix, (size_t)plen}, {(void *)line, len}, {"\n", 1}};

    dl_write_all(job, job->opt.agent ? 1 : out_fd, iov, 3);
    if (job->out_files != NULL && rank >= 0 && rank < job->size) {
        int fd = job->out_files[2 * rank + (out_fd == 2)];

        /* The rank's own file: its lines as it wrote them, no prefix. */
        if (fd >= 0) {
            dl_write_all(job, fd, iov + 1, 2);
        }
    }
}

const char *dl_host_label(const dl_job_t *job, const dl_host_t *host)
{
    static char self[256];

    /* No host list given: this machine's name rather than "localhost". */
    if (job->opt.hosts_arg == NULL && job->opt.hostfile == NULL && job->nhosts == 1 &&
        host->local && strcmp(host->name, "localhost") == 0) {
        if (self[0] == '\0' && gethostname(self, sizeof(self) - 1) != 0) {
            snprintf(self, sizeof(self), "localhost");
        }
        return self;
    }
    return host->name;
}

/* mkdir -p: every missing directory of path. */
static int make_dirs(const char *path)
{
    char buf[PATH_MAX];

    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
                return -1;
            }
            *p = '/';
        }
    }
    return mkdir(buf, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

/* --output-filename DIR: DIR/rank.<r>/stdout and stderr for every rank, the
 * rank number padded with zeros to the width of the largest (as horovodrun). */
static int open_output_files(dl_job_t *job)
{
    const char *dir = job->opt.output_dir;
    struct rlimit rl;
    int width = 1;

    for (int v = job->size - 1; v >= 10; v /= 10) {
        width++;
    }
    /* Two files and two pipes a rank: more than the usual 1024 for big jobs. */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    job->out_files = malloc(2 * (size_t)job->size * sizeof(int));
    if (job->out_files == NULL) {
        return -1;
    }
    for (int i = 0; i < 2 * job->size; i++) {
        job->out_files[i] = -1;
    }
    for (int r = 0; r < job->size; r++) {
        char path[PATH_MAX + 32];

        if (snprintf(path, sizeof(path), "%s/rank.%0*d", dir, width, r) >= PATH_MAX) {
            fprintf(stderr, "dlaunch: --output-filename: '%s' is too long\n", dir);
            return -1;
        }
        if (make_dirs(path) != 0) {
            fprintf(stderr, "dlaunch: --output-filename: cannot make %s: %s\n", path,
                    strerror(errno));
            return -1;
        }
        for (int k = 0; k < 2; k++) {
            if (snprintf(path, sizeof(path), "%s/rank.%0*d/%s", dir, width, r,
                         k == 0 ? "stdout" : "stderr") >= (int)sizeof(path)) {
                return -1; /* not with the check above */
            }
            job->out_files[2 * r + k] =
                open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
            if (job->out_files[2 * r + k] < 0) {
                fprintf(stderr, "dlaunch: --output-filename: cannot write %s: %s\n", path,
                        strerror(errno));
                return -1;
            }
        }
    }
    return 0;
}

static void rank_line(dl_job_t *job, void *owner, dl_stream_t *s, const char *line, size_t len)
{
    dl_emit_line(job, ((dl_rank_t *)owner)->rank, s->out_fd, line, len);
}

int dl_stream_open(dl_stream_t *s, int fd, int out_fd)
{
    fcntl(fd, F_SETFL, O_NONBLOCK);
    *s = (dl_stream_t){.fd = fd, .out_fd = out_fd, .buf = malloc(DL_MAX_LINE)};
    return s->buf == NULL ? -1 : 0;
}

void dl_stream_close(dl_job_t *job, void *owner, dl_stream_t *s, dl_line_fn_t line_fn)
{
    if (s->len > 0) {
        line_fn(job, owner, s, s->buf, s->len); /* the partial last line */
        s->len = 0;
    }
    if (s->fd >= 0) {
        close(s->fd);
    }
    s->fd = -1;
}

void dl_stream_read(dl_job_t *job, void *owner, dl_stream_t *s, dl_line_fn_t line_fn)
{
    char chunk[16384];
    ssize_t n = read(s->fd, chunk, sizeof(chunk));

    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        return;
    }
    if (n <= 0) {
        dl_stream_close(job, owner, s, line_fn);
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        if (chunk[i] == '\n') {
            line_fn(job, owner, s, s->buf, s->len);
            s->len = 0;
        } else {
            s->buf[s->len++] = chunk[i];
            if (s->len == DL_MAX_LINE) {
                line_fn(job, owner, s, s->buf, s->len);
                s->len = 0;
            }
        }
    }
}

/* ---- Ranks --------------------------------------------------------------------------- */

static void signal_ranks(dl_job_t *job, int sig)
{
    for (int i = 0; i < job->nranks; i++) {
        /* Also the groups of ranks that exited: their stray children must go too. */
        if (job->ranks[i].pid > 0) {
            kill(-job->ranks[i].pid, sig);
        }
    }
    dl_agents_signal(job, sig);
}

static void stop_ranks(dl_job_t *job, int sig)
{
    uint64_t now = dc_now_ns();

    if (!job->stopping) {
        job->stopping = 1;
        job->kill_at = now + (uint64_t)(job->opt.grace_s * 1e9);
    }
    if (job->nrunning > 0) {
        DL_VLOG("sending SIG%s to the ranks (SIGKILL in %.1f s)\n", sigabbrev_np(sig),
                (double)(job->kill_at - DC_MIN(job->kill_at, now)) / 1e9);
    }
    signal_ranks(job, sig);
}

void dl_fail_job(dl_job_t *job, int code, const char *text)
{
    fprintf(stderr, "dlaunch: %s\n", text);
    if (job->server != NULL) {
        dc_rdv_server_fail(job->server, text);
    }
    job->exit_code = code;
    stop_ranks(job, SIGTERM);
}

static void set_env_int(const char *name, int value)
{
    char text[16];

    snprintf(text, sizeof(text), "%d", value);
    setenv(name, text, 1);
}

/* In the child: own process group, default signals, pipes as stdout/stderr,
 * identity in the environment, bound to its core / NUMA node when asked. */
static void exec_rank(dl_job_t *job, const dl_rank_t *r, int out_fd, int err_fd)
{
    const dl_host_t *host = &job->hosts[r->host];
    int local_rank = r->rank - host->first_rank;

    setpgid(0, 0);
    signal(SIGPIPE, SIG_DFL);
    sigprocmask(SIG_SETMASK, &job->oldmask, NULL);
    if (r->rank != 0) {
        int null_fd = open("/dev/null", O_RDONLY);

        if (null_fd >= 0) {
            dup2(null_fd, 0);
            close(null_fd);
        }
    }
    dup2(out_fd, 1);
    dup2(err_fd, 2);
    /* The identity under dcomm's names and Horovod's (as horovodrun sets them). */
    for (int k = 0; k < 2; k++) {
        const char *prefix = k == 0 ? "DCOMM_" : "HOROVOD_";
        const char *names[] = {"RANK", "SIZE", "LOCAL_RANK", "LOCAL_SIZE", "CROSS_RANK",
                               "CROSS_SIZE"};
        int values[] = {r->rank, job->size, local_rank, host->nranks,
                        job->cross_rank + r->host, job->cross_size};

        for (size_t i = 0; i < DC_ARRAY_SIZE(names); i++) {
            char name[32];

            snprintf(name, sizeof(name), "%s%s", prefix, names[i]);
            set_env_int(name, values[i]);
        }
    }
    if (!job->opt.agent) {
        /* The agent's ranks have theirs from dlaunch, in the job's environment. */
        setenv("HOROVOD_HOSTNAME", dl_host_label(job, host), 1);
    }
    set_env_int("DCOMM_START_TIMEOUT", job->opt.start_timeout_s);
    setenv("DCOMM_RENDEZVOUS", job->rdv_addr, 1);
    setenv("DCOMM_JOB_SECRET", job->secret_hex, 1);
    setenv("DCOMM_JOB_ID", job->job_id, 1);
    if (job->opt.bind != DL_BIND_NONE) {
        char why[256];

        if (dc_topology_bind_rank(dl_bind_name(job->opt.bind), local_rank, host->nranks, why,
                                  sizeof(why)) != 0) {
            fprintf(stderr, "dlaunch: cannot bind rank %d (--bind-to %s): %s\n", r->rank,
                    dl_bind_name(job->opt.bind), why);
            _exit(126);
        }
    }
    execvp(job->opt.argv[0], job->opt.argv);
    fprintf(stderr, "dlaunch: cannot execute %s: %s\n", job->opt.argv[0], strerror(errno));
    _exit(127);
}

static int spawn_rank(dl_job_t *job, dl_rank_t *r)
{
    int out[2], err[2];
    pid_t pid;

    if (pipe2(out, O_CLOEXEC) != 0) {
        return -1;
    }
    if (pipe2(err, O_CLOEXEC) != 0) {
        close(out[0]);
        close(out[1]);
        return -1;
    }
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid == 0) {
        exec_rank(job, r, out[1], err[1]);
    }
    close(out[1]);
    close(err[1]);
    if (pid < 0) {
        close(out[0]);
        close(err[0]);
        return -1;
    }
    setpgid(pid, pid); /* also here: no window where a signal misses the group */
    r->pid = pid;
    r->running = 1;
    job->nrunning++;
    if (dl_stream_open(&r->out, out[0], 1) != 0 || dl_stream_open(&r->err, err[0], 2) != 0) {
        return -1;
    }
    DL_VLOG("started rank %d (pid %d): %s\n", r->rank, (int)pid, job->opt.argv[0]);
    return 0;
}

void dl_rank_ended(dl_job_t *job, dl_rank_t *r, int code, int sig)
{
    char text[DL_HOST_MAX + 160];
    int n;

    r->running = 0;
    job->nrunning--;
    if (job->opt.agent) {
        char line[64];
        struct iovec iov = {line, (size_t)snprintf(line, sizeof(line), "X %d %d %d\n", r->rank,
                                                   code, sig)};

        dl_write_all(job, 1, &iov, 1);
        return;
    }
    if (sig != 0) {
        code = 128 + sig;
        n = snprintf(text, sizeof(text), "rank %d killed by signal %d (%s)", r->rank, sig,
                     strsignal(sig));
    } else {
        n = snprintf(text, sizeof(text), "rank %d exited with code %d", r->rank, code);
    }
    if (!job->hosts[r->host].local) {
        snprintf(text + n, sizeof(text) - (size_t)n, " on host %s", job->hosts[r->host].name);
    }
    if (code != 0 && !job->stopping) {
        dl_fail_job(job, code, text);
    } else {
        DL_VLOG("%s\n", text);
    }
}

void dl_streams_drain(dl_job_t *job, void *owner, dl_stream_t *s[2], dl_line_fn_t fn[2],
                      int rounds, int wait_ms)
{
    for (int k = 0; k < rounds && (s[0]->fd >= 0 || s[1]->fd >= 0); k++) {
        struct pollfd p[2] = {{.fd = s[0]->fd, .events = POLLIN},
                              {.fd = s[1]->fd, .events = POLLIN}};

        if (poll(p, 2, wait_ms) <= 0) {
            break;
        }
        for (int i = 0; i < 2; i++) {
            if (p[i].revents) {
                dl_stream_read(job, owner, s[i], fn[i]);
            }
        }
    }
}

static void rank_exited(dl_job_t *job, dl_rank_t *r, int wstatus)
{
    /* Print what the rank wrote before dying ahead of the verdict on it. */
    dl_streams_drain(job, r, (dl_stream_t *[2]){&r->out, &r->err},
                     (dl_line_fn_t[2]){rank_line, rank_line}, 64, 0);
    if (WIFSIGNALED(wstatus)) {
        dl_rank_ended(job, r, 0, WTERMSIG(wstatus));
    } else {
        dl_rank_ended(job, r, WEXITSTATUS(wstatus), 0);
    }
}

static void reap_children(dl_job_t *job)
{
    int wstatus;
    pid_t pid;

    while ((pid = waitpid(-1, &wstatus, WNOHANG)) > 0) {
        for (int i = 0; i < job->nranks; i++) {
            if (job->ranks[i].pid == pid && job->ranks[i].running) {
                rank_exited(job, &job->ranks[i], wstatus);
                break;
            }
        }
        for (int i = 0; i < job->nagents; i++) {
            if (job->agents[i].pid == pid && job->agents[i].running) {
                dl_agent_exited(job, &job->agents[i], wstatus);
                break;
            }
        }
        /* Any other pid is an orphaned grandchild handed to us as subreaper. */
    }
}

/* ---- Event loop --------------------------------------------------------------------- */

static void handle_signals(dl_job_t *job)
{
    struct signalfd_siginfo si;

    while (read(job->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        int sig = (int)si.ssi_signo;

        if (sig == SIGCHLD) {
            continue; /* reaped below, whatever the number of signals merged */
        }
        if (job->stopping && job->exit_code >= 128 && sig == SIGINT) {
            DL_VLOG("second SIGINT: killing the ranks now\n");
            job->kill_at = dc_now_ns();
            continue;
        }
        if (!job->stopping) {
            if (!job->opt.agent) {
                fprintf(stderr, "dlaunch: received signal %d (%s); stopping the ranks\n", sig,
                        strsignal(sig));
            }
            job->exit_code = 128 + sig;
        }
        stop_ranks(job, sig);
    }
    reap_children(job);
}

static int ms_until(uint64_t t, uint64_t now)
{
    return t <= now ? 0 : (int)DC_MIN((t - now + 999999) / 1000000, 60000u);
}

static void check_timers(dl_job_t *job, uint64_t now)
{
    if (job->stopping && !job->killed && job->nrunning > 0 && now >= job->kill_at) {
        DL_VLOG("grace period over: sending SIGKILL\n");
        signal_ranks(job, SIGKILL);
        job->killed = 1;
    }
    if (job->killed && now >= job->kill_at + AGENT_KILL_NS) {
        for (int i = 0; i < job->nagents; i++) {
            if (job->agents[i].running) {
                kill(-job->agents[i].pid, SIGKILL); /* unresponsive: its link goes too */
            }
        }
    }
    if (job->start_by != 0 && now >= job->start_by) {
        int seen = dc_rdv_server_ranks_seen(job->server, job->opt.np);

        job->start_by = 0;
        if (!job->stopping && job->nrunning == job->opt.np && seen < job->opt.np &&
            (job->opt.start_timeout_given || seen > 0)) {
            char text[160];

            snprintf(text, sizeof(text),
                     "only %d of %d ranks connected to the rendezvous within %d s "
                     "(--start-timeout)",
                     seen, job->opt.np, job->opt.start_timeout_s);
            dl_fail_job(job, EXIT_START_TIMEOUT, text);
        }
    }
}

static int poll_timeout(dl_job_t *job, uint64_t now, uint64_t drain_by)
{
    int t = job->server ? dc_rdv_server_timeout_ms(job->server) : -1;

    if (t < 0) {
        t = 60000;
    }
    if (job->stopping && job->nrunning > 0) {
        t = DC_MIN(t, ms_until(job->killed ? job->kill_at + AGENT_KILL_NS : job->kill_at, now));
    }
    if (job->start_by != 0) {
        t = DC_MIN(t, ms_until(job->start_by, now));
    }
    if (drain_by != 0) {
        t = DC_MIN(t, ms_until(drain_by, now));
    }
    return t;
}

typedef struct poll_set {
    struct pollfd *pfds;
    dl_stream_t **streams;
    void **owners;
    dl_line_fn_t *fns;
    int n;
} poll_set_t;

static void poll_add(poll_set_t *ps, dl_stream_t *s, void *owner, dl_line_fn_t fn)
{
    if (s->fd >= 0) {
        ps->pfds[ps->n] = (struct pollfd){.fd = s->fd, .events = POLLIN};
        ps->streams[ps->n] = s;
        ps->owners[ps->n] = owner;
        ps->fns[ps->n++] = fn;
    }
}

/* Streams of ranks and agents after the fixed descriptors; returns their count. */
static int poll_streams(dl_job_t *job, poll_set_t *ps, int fixed)
{
    ps->n = fixed;
    for (int i = 0; i < job->nranks; i++) {
        poll_add(ps, &job->ranks[i].out, &job->ranks[i], rank_line);
        poll_add(ps, &job->ranks[i].err, &job->ranks[i], rank_line);
    }
    for (int i = 0; i < job->nagents; i++) {
        poll_add(ps, &job->agents[i].out, &job->agents[i], dl_agent_line);
        poll_add(ps, &job->agents[i].err, &job->agents[i], dl_agent_err_line);
    }
    return ps->n - fixed;
}

static void run_loop(dl_job_t *job)
{
    size_t cap = (size_t)(3 + 2 * job->nranks + 2 * job->nagents);
    poll_set_t ps = {calloc(cap, sizeof(struct pollfd)), calloc(cap, sizeof(dl_stream_t *)),
                     calloc(cap, sizeof(void *)), calloc(cap, sizeof(dl_line_fn_t)), 0};
    uint64_t drain_by = 0;

    if (ps.pfds == NULL || ps.streams == NULL || ps.owners == NULL || ps.fns == NULL) {
        fprintf(stderr, "dlaunch: out of memory\n");
        stop_ranks(job, SIGKILL);
        goto out;
    }
    for (;;) {
        int fixed = 0, ns;
        uint64_t now;

        if (job->nrunning == 0 && drain_by == 0) {
            /* Every rank is gone: take stray children down so the pipes close. */
            signal_ranks(job, SIGKILL);
            drain_by = dc_now_ns() + DRAIN_TIMEOUT_MS * 1000000ull;
        }
        ps.pfds[fixed++] = (struct pollfd){.fd = job->sigfd, .events = POLLIN};
        ps.pfds[fixed++] = (struct pollfd){
            .fd = job->server ? dc_rdv_server_fd(job->server) : -1, .events = POLLIN};
        ps.pfds[fixed++] = (struct pollfd){.fd = job->ctl_fd, .events = POLLIN};
        ns = poll_streams(job, &ps, fixed);
        now = dc_now_ns();
        if (drain_by != 0 && (ns == 0 || now >= drain_by)) {
            break;
        }
        if (poll(ps.pfds, (nfds_t)ps.n, poll_timeout(job, now, drain_by)) < 0 &&
            errno != EINTR) {
            fprintf(stderr, "dlaunch: poll: %s\n", strerror(errno));
            break;
        }
        if (ps.pfds[0].revents) {
            handle_signals(job);
        }
        if (job->server != NULL) {
            dc_rdv_server_progress(job->server);
        }
        if (ps.pfds[2].revents) {
            dl_agent_control(job);
        }
        for (int k = fixed; k < ps.n; k++) {
            if (ps.pfds[k].revents && ps.streams[k]->fd == ps.pfds[k].fd) {
                dl_stream_read(job, ps.owners[k], ps.streams[k], ps.fns[k]);
            }
        }
        check_timers(job, dc_now_ns());
    }
out:
    free(ps.pfds);
    free(ps.streams);
    free(ps.owners);
    free(ps.fns);
}

/* ---- Setup ------------------------------------------------------------------------- */

/* The IPv4 address of interface ifname, or (NULL) of the first one that is up
 * and not loopback. */
static int interface_addr(const char *ifname, char *buf, size_t cap)
{
    struct ifaddrs *list, *ifa;
    int rc = -1;

    if (getifaddrs(&list) != 0) {
        return -1;
    }
    for (ifa = list; ifa != NULL && rc != 0; ifa = ifa->ifa_next) {
        if (ifa->ifa_addr == NULL || ifa->ifa_addr->sa_family != AF_INET ||
            (ifname != NULL ? strcmp(ifa->ifa_name, ifname) != 0
                            : (ifa->ifa_flags & IFF_LOOPBACK) || !(ifa->ifa_flags & IFF_UP))) {
            continue;
        }
        if (inet_ntop(AF_INET, &((struct sockaddr_in *)ifa->ifa_addr)->sin_addr, buf,
                      (socklen_t)cap) != NULL) {
            rc = 0;
        }
    }
    freeifaddrs(list);
    return rc;
}

static int any_remote(const dl_job_t *job)
{
    for (int h = 0; h < job->nhosts; h++) {
        if (!job->hosts[h].local && job->hosts[h].nranks > 0) {
            return 1;
        }
    }
    return 0;
}

/* The address to bind and the one ranks are told: --ifname's address, else
 * DCOMM_RDV_ADDR, else loopback for a local job or every interface (advertised
 * as the first non-loopback address) when ranks run elsewhere. */
static int rdv_addresses(const dl_job_t *job, char *bind_addr, char *advertised, size_t cap)
{
    const char *env = dc_config.rdv_addr;
    int remote = any_remote(job);

    if (dc_config_load_one("DCOMM_RDV_ADDR") != DCOMM_OK) {
        fprintf(stderr, "dlaunch: %s\n", dc_error_get());
        return -1;
    }
    if (job->opt.ifname != NULL) {
        if (interface_addr(job->opt.ifname, bind_addr, cap) != 0) {
            fprintf(stderr, "dlaunch: --ifname %s: no such interface with an IPv4 address\n",
                    job->opt.ifname);
            return -1;
        }
    } else {
        snprintf(bind_addr, cap, "%s", env && *env ? env : remote ? "0.0.0.0" : "127.0.0.1");
    }
    if (strcmp(bind_addr, "0.0.0.0") != 0) {
        snprintf(advertised, cap, "%s", bind_addr);
    } else if (!remote) {
        snprintf(advertised, cap, "127.0.0.1"); /* local ranks reach a wildcard this way */
    } else if (interface_addr(NULL, advertised, cap) != 0) {
        fprintf(stderr, "dlaunch: no network interface that other hosts could reach the "
                        "rendezvous through; use --ifname or DCOMM_RDV_ADDR\n");
        return -1;
    }
    return 0;
}

static int setup_server(dl_job_t *job)
{
    char bind_addr[64], advertised[64];
    uint8_t secret[DC_AUTH_SECRET_LEN];
    uint8_t id[16];

    if (rdv_addresses(job, bind_addr, advertised, sizeof(bind_addr)) != 0) {
        return -1;
    }
    dc_auth_random(secret, sizeof(secret));
    dc_auth_random(id, sizeof(id));
    dc_auth_secret_to_hex(secret, job->secret_hex);
    for (size_t i = 0; i < sizeof(id); i++) {
        snprintf(job->job_id + 2 * i, 3, "%02x", id[i]);
    }
    if (dc_rdv_server_create(bind_addr, 0, secret, &job->server) != DCOMM_OK) {
        fprintf(stderr, "dlaunch: %s\n", dc_error_get());
        return -1;
    }
    snprintf(job->rdv_addr, sizeof(job->rdv_addr), "%s:%d", advertised,
             dc_rdv_server_port(job->server));
    DL_VLOG("rendezvous server on %s:%d (job %s), advertised as %s\n", bind_addr,
            dc_rdv_server_port(job->server), job->job_id, job->rdv_addr);
    if (job->opt.ifname != NULL) {
        setenv("DCOMM_IFNAME", job->opt.ifname, 1); /* the ranks' tcp transport too */
    }
    return 0;
}

static int setup_signals(dl_job_t *job)
{
    sigset_t mask;

    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGHUP);
    if (sigprocmask(SIG_BLOCK, &mask, &job->oldmask) != 0) {
        return -1;
    }
    job->sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    signal(SIGPIPE, SIG_IGN);
    /* Orphaned grandchildren are reparented to us, so we reap them too. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    return job->sigfd < 0 ? -1 : 0;
}

static void configure_logging(const dl_job_t *job)
{
    /* DCOMM_LOG_LEVEL (or its Horovod alias); a malformed one is left to the ranks. */
    if (dc_config_load_one("DCOMM_LOG_LEVEL") == DCOMM_OK &&
        dc_config_source("DCOMM_LOG_LEVEL") != NULL) {
        dc_log_set_level((dc_log_level_t)dc_config.log_level);
    } else if (job->opt.verbose) {
        dc_log_set_level(DC_LOG_LEVEL_DEBUG);
    }
}

static void print_plan(const dl_job_t *job)
{
    printf("%d ranks on %d hosts (rsh '%s', bind-to %s)\n", job->opt.np, job->nhosts,
           job->opt.rsh, dl_bind_name(job->opt.bind));
    for (int h = 0; h < job->nhosts; h++) {
        const dl_host_t *host = &job->hosts[h];

        printf("host %d %s slots %d ranks %d-%d %s\n", h, host->name, host->slots,
               host->first_rank, host->first_rank + host->nranks - 1,
               host->local ? "local" : "remote");
    }
}

/* Local ranks of the job: every rank on a local host. */
static int start_local_ranks(dl_job_t *job)
{
    for (int h = 0; h < job->nhosts; h++) {
        for (int i = 0; job->hosts[h].local && i < job->hosts[h].nranks; i++) {
            dl_rank_t *r = &job->ranks[job->hosts[h].first_rank - job->rank_base + i];

            if (spawn_rank(job, r) != 0) {
                char text[128];

                snprintf(text, sizeof(text), "cannot start rank %d: %s", r->rank,
                         strerror(errno));
                dl_fail_job(job, 1, text);
                return -1;
            }
        }
    }
    return 0;
}

static int prepare(dl_job_t *job)
{
    int rc;

    if (job->opt.agent) {
        return dl_agent_read_job(job) == 0 ? 0 : 1;
    }
    rc = dl_hosts_plan(job);
    if (rc != 0) {
        return rc;
    }
    if (job->opt.dry_run) {
        print_plan(job);
        return 256;
    }
    job->nranks = job->size = job->opt.np;
    job->cross_size = job->nhosts;
    job->ranks = calloc((size_t)job->nranks, sizeof(*job->ranks));
    if (job->ranks == NULL) {
        return 1;
    }
    for (int h = 0; h < job->nhosts; h++) {
        for (int i = 0; i < job->hosts[h].nranks; i++) {
            dl_rank_t *r = &job->ranks[job->hosts[h].first_rank + i];

            *r = (dl_rank_t){.rank = job->hosts[h].first_rank + i, .host = h};
            r->out.fd = r->err.fd = -1;
        }
    }
    if (job->opt.output_dir != NULL && open_output_files(job) != 0) {
        return 1;
    }
    return 0;
}

static void finish(dl_job_t *job)
{
    for (int i = 0; i < job->nagents; i++) {
        if (job->agents[i].running) {
            kill(-job->agents[i].pid, SIGKILL);
        }
    }
    reap_children(job);
    for (int i = 0; i < job->nranks; i++) {
        dl_stream_close(job, &job->ranks[i], &job->ranks[i].out, rank_line);
        dl_stream_close(job, &job->ranks[i], &job->ranks[i].err, rank_line);
        free(job->ranks[i].out.buf);
        free(job->ranks[i].err.buf);
    }
    for (int i = 0; i < job->nagents; i++) {
        dl_stream_close(job, &job->agents[i], &job->agents[i].out, dl_agent_line);
        dl_stream_close(job, &job->agents[i], &job->agents[i].err, dl_agent_err_line);
        free(job->agents[i].out.buf);
        free(job->agents[i].err.buf);
        if (job->agents[i].in_fd >= 0) {
            close(job->agents[i].in_fd);
        }
    }
    for (int i = 0; job->out_files != NULL && i < 2 * job->size; i++) {
        if (job->out_files[i] >= 0) {
            close(job->out_files[i]);
        }
    }
    free(job->out_files);
    if (job->server != NULL) {
        dc_rdv_server_destroy(job->server);
    }
    close(job->sigfd);
    if (job->opt.agent && job->opt.argv != NULL) {
        for (char **a = job->opt.argv; *a != NULL; a++) {
            free(*a); /* the agent's copy of the program's arguments */
        }
        free(job->opt.argv);
    }
    free(job->ranks);
    free(job->agents);
    free(job->hosts);
}

int main(int argc, char **argv)
{
    dl_job_t job = {.sigfd = -1, .ctl_fd = -1};
    int rc;

    if (argc > 1 && strcmp(argv[1], "--mpi-rsh") == 0) {
        return dl_mpi_rsh(argc - 2, argv + 2); /* Open MPI's agent, see dlaunch_mpi.c */
    }
    rc = parse_args(argc, argv, &job.opt);
    if (rc != 0) {
        return rc == 256 ? 0 : rc;
    }
    dl_verbose = job.opt.verbose;
    if (job.opt.mpi && !job.opt.agent) {
        return dl_mpi_exec(&job.opt);
    }
    configure_logging(&job);
    rc = prepare(&job);
    if (rc != 0) {
        for (int i = 0; job.out_files != NULL && i < 2 * job.size; i++) {
            if (job.out_files[i] >= 0) {
                close(job.out_files[i]);
            }
        }
        free(job.out_files);
        free(job.ranks);
        free(job.hosts);
        return rc == 256 ? 0 : rc;
    }
    if (setup_signals(&job) != 0 || (!job.opt.agent && setup_server(&job) != 0)) {
        fprintf(stderr, "dlaunch: cannot start: %s\n", errno ? strerror(errno) : "see above");
        return 1;
    }
    if (start_local_ranks(&job) == 0 && !job.opt.agent) {
        if (dl_agents_start(&job) != 0) {
            dl_fail_job(&job, 1, "cannot start the remote agents");
        }
    }
    job.start_by = job.opt.agent ? 0
                                 : dc_now_ns() + (uint64_t)job.opt.start_timeout_s * 1000000000ull;
    run_loop(&job);
    rc = job.exit_code;
    finish(&job);
    DL_VLOG("all ranks done, exit code %d\n", rc);
    return rc;
}
