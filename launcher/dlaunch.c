/* dlaunch: starts N local ranks of a dcomm job with the rendezvous server in its
 * own single-threaded event loop, prefixes their output with "[rank] ", forwards
 * signals, and on the first failing rank stops the others and exits with its code.
 *
 * The loop polls one signalfd (SIGCHLD, SIGINT, SIGTERM, SIGHUP), the server's
 * epoll fd and every rank's stdout/stderr pipe. Each rank is the leader of its own
 * process group, and dlaunch is a child subreaper, so stray children of a rank are
 * signalled with it and reaped here; nothing outlives dlaunch. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dc_time.h"
#include "log.h"
#include "rdv.h"

#define MAX_RANKS        1024
#define MAX_LINE         (64 * 1024) /* a longer line is cut and flushed in pieces */
#define DRAIN_TIMEOUT_MS 2000        /* after the last rank: wait this long for output */
#define EXIT_USAGE       2
#define EXIT_START_TIMEOUT 124

typedef struct stream {
    int fd;      /* read end of the rank's pipe; -1 once closed */
    int out_fd;  /* 1 or 2 */
    char *buf;   /* the unfinished line */
    size_t len;
} stream_t;

typedef struct rank {
    int rank;
    pid_t pid; /* also its process group */
    int running;
    stream_t out;
    stream_t err;
} rank_t;

typedef struct options {
    int np;
    double grace_s;
    int start_timeout_s;
    int start_timeout_given;
    int verbose;
    char **argv;
} options_t;

typedef struct job {
    options_t opt;
    rank_t *ranks;
    int nrunning;
    dc_rdv_server_t *server;
    int sigfd;
    sigset_t oldmask;
    char rdv_addr[80];
    char secret_hex[2 * DC_AUTH_SECRET_LEN + 1];
    char job_id[33];
    int exit_code;       /* of the first failure (or 128 + signal received) */
    int stopping;        /* ranks were told to stop */
    int killed;          /* SIGKILL was sent */
    uint64_t kill_at;    /* when to escalate to SIGKILL */
    uint64_t start_by;   /* start-timeout deadline; 0 once checked */
    int stdout_broken;
} job_t;

static int verbose;

#define VLOG(...)                                                                          \
    do {                                                                                   \
        if (verbose) {                                                                     \
            fprintf(stderr, "dlaunch: " __VA_ARGS__);                                      \
        }                                                                                  \
    } while (0)

/* ---- Arguments ------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: dlaunch -np N [--start-timeout S] [--grace S] [-v] [--] prog [args...]\n"
            "  -np, -n N           number of local ranks (1..%d)\n"
            "  --start-timeout S   abort when not every rank has connected to the rendezvous\n"
            "                      within S seconds (default 60; enforced once any rank has\n"
            "                      connected, or always when given); exit code %d\n"
            "  --grace S           seconds between SIGTERM and SIGKILL when stopping ranks\n"
            "                      (default 3)\n"
            "  -v, --verbose       log launcher actions to stderr\n"
            "Environment: DCOMM_RDV_ADDR sets the rendezvous bind address (default "
            "127.0.0.1).\n",
            MAX_RANKS, EXIT_START_TIMEOUT);
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

/* Returns 0, or the exit code to leave with (usage errors: 2, --help: 0 + 256). */
static int parse_args(int argc, char **argv, options_t *opt)
{
    double v;
    int i;

    opt->np = 0;
    opt->grace_s = 3.0;
    opt->start_timeout_s = 60;
    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
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
        } else if (strcmp(a, "-np") == 0 || strcmp(a, "-n") == 0 || strcmp(a, "--np") == 0) {
            if (parse_number(val, 1, MAX_RANKS, &v) != 0 || v != (int)v) {
                fprintf(stderr, "dlaunch: %s needs a rank count in 1..%d\n", a, MAX_RANKS);
                return EXIT_USAGE;
            }
            opt->np = (int)v;
            i++;
        } else if (strcmp(a, "--start-timeout") == 0) {
            if (parse_number(val, 1, 86400 * 7, &v) != 0 || v != (int)v) {
                fprintf(stderr, "dlaunch: --start-timeout needs whole seconds >= 1\n");
                return EXIT_USAGE;
            }
            opt->start_timeout_s = (int)v;
            opt->start_timeout_given = 1;
            i++;
        } else if (strcmp(a, "--grace") == 0) {
            if (parse_number(val, 0, 3600, &v) != 0) {
                fprintf(stderr, "dlaunch: --grace needs seconds in 0..3600\n");
                return EXIT_USAGE;
            }
            opt->grace_s = v;
            i++;
        } else {
            fprintf(stderr, "dlaunch: unknown option %s\n", a);
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (opt->np == 0 || i >= argc) {
        fprintf(stderr, "dlaunch: %s\n", opt->np == 0 ? "missing -np N" : "missing program");
        usage(stderr);
        return EXIT_USAGE;
    }
    opt->argv = &argv[i];
    return 0;
}

/* ---- Output ------------------------------------------------------------------------ */

static void write_all(job_t *job, int fd, const struct iovec *iov, int iovcnt)
{
    struct iovec v[3];
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

/* One writev per line, so lines of different ranks never interleave. */
static void emit_line(job_t *job, const rank_t *r, const stream_t *s, const char *line,
                      size_t len)
{
    char prefix[16];
    int plen = snprintf(prefix, sizeof(prefix), "[%d] ", r->rank);
    struct iovec iov[3] = {{prefix, (size_t)plen}, {(void *)line, len}, {"\n", 1}};

    write_all(job, s->out_fd, iov, 3);
}

static void stream_close(job_t *job, rank_t *r, stream_t *s)
{
    if (s->len > 0) {
        emit_line(job, r, s, s->buf, s->len); /* the partial last line */
        s->len = 0;
    }
    close(s->fd);
    s->fd = -1;
}

static void stream_read(job_t *job, rank_t *r, stream_t *s)
{
    char chunk[16384];
    ssize_t n = read(s->fd, chunk, sizeof(chunk));

    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        return;
    }
    if (n <= 0) {
        stream_close(job, r, s);
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        if (chunk[i] == '\n') {
            emit_line(job, r, s, s->buf, s->len);
            s->len = 0;
        } else {
            s->buf[s->len++] = chunk[i];
            if (s->len == MAX_LINE) {
                emit_line(job, r, s, s->buf, s->len);
                s->len = 0;
            }
        }
    }
}

/* ---- Ranks --------------------------------------------------------------------------- */

static void signal_ranks(job_t *job, int sig)
{
    for (int i = 0; i < job->opt.np; i++) {
        /* Also the groups of ranks that exited: their stray children must go too. */
        if (job->ranks[i].pid > 0) {
            kill(-job->ranks[i].pid, sig);
        }
    }
}

static void stop_ranks(job_t *job, int sig)
{
    uint64_t now = dc_now_ns();

    if (!job->stopping) {
        job->stopping = 1;
        job->kill_at = now + (uint64_t)(job->opt.grace_s * 1e9);
    }
    if (job->nrunning > 0) {
        VLOG("sending SIG%s to the ranks (SIGKILL in %.1f s)\n", sigabbrev_np(sig),
             (double)(job->kill_at - DC_MIN(job->kill_at, now)) / 1e9);
    }
    signal_ranks(job, sig);
}

static void fail_job(job_t *job, int code, const char *text)
{
    fprintf(stderr, "dlaunch: %s\n", text);
    dc_rdv_server_broadcast(job->server, text);
    job->exit_code = code;
    stop_ranks(job, SIGTERM);
}

static void set_env_int(const char *name, int value)
{
    char text[16];

    snprintf(text, sizeof(text), "%d", value);
    setenv(name, text, 1);
}

/* In the child: own process group, default signals, pipes as stdout/stderr. */
static void exec_rank(job_t *job, int rank, int out_fd, int err_fd)
{
    setpgid(0, 0);
    signal(SIGPIPE, SIG_DFL);
    sigprocmask(SIG_SETMASK, &job->oldmask, NULL);
    if (rank != 0) {
        int null_fd = open("/dev/null", O_RDONLY);

        if (null_fd >= 0) {
            dup2(null_fd, 0);
            close(null_fd);
        }
    }
    dup2(out_fd, 1);
    dup2(err_fd, 2);
    set_env_int("DCOMM_RANK", rank);
    set_env_int("DCOMM_SIZE", job->opt.np);
    set_env_int("DCOMM_LOCAL_RANK", rank);
    set_env_int("DCOMM_LOCAL_SIZE", job->opt.np);
    set_env_int("DCOMM_CROSS_RANK", 0);
    set_env_int("DCOMM_CROSS_SIZE", 1);
    set_env_int("DCOMM_START_TIMEOUT", job->opt.start_timeout_s);
    setenv("DCOMM_RENDEZVOUS", job->rdv_addr, 1);
    setenv("DCOMM_JOB_SECRET", job->secret_hex, 1);
    setenv("DCOMM_JOB_ID", job->job_id, 1);
    execvp(job->opt.argv[0], job->opt.argv);
    fprintf(stderr, "dlaunch: cannot execute %s: %s\n", job->opt.argv[0], strerror(errno));
    _exit(127);
}

static int spawn_rank(job_t *job, int rank)
{
    rank_t *r = &job->ranks[rank];
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
        exec_rank(job, rank, out[1], err[1]);
    }
    close(out[1]);
    close(err[1]);
    if (pid < 0) {
        close(out[0]);
        close(err[0]);
        return -1;
    }
    setpgid(pid, pid); /* also here: no window where a signal misses the group */
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    fcntl(err[0], F_SETFL, O_NONBLOCK);
    r->rank = rank;
    r->pid = pid;
    r->running = 1;
    r->out = (stream_t){.fd = out[0], .out_fd = 1, .buf = malloc(MAX_LINE)};
    r->err = (stream_t){.fd = err[0], .out_fd = 2, .buf = malloc(MAX_LINE)};
    if (r->out.buf == NULL || r->err.buf == NULL) {
        return -1;
    }
    job->nrunning++;
    VLOG("started rank %d (pid %d): %s\n", rank, (int)pid, job->opt.argv[0]);
    return 0;
}

static void rank_exited(job_t *job, rank_t *r, int wstatus)
{
    char text[128];
    int code;

    /* Print what the rank wrote before dying ahead of the verdict on it. */
    for (int k = 0; k < 64 && (r->out.fd >= 0 || r->err.fd >= 0); k++) {
        struct pollfd p[2] = {{.fd = r->out.fd, .events = POLLIN},
                              {.fd = r->err.fd, .events = POLLIN}};

        if (poll(p, 2, 0) <= 0) {
            break;
        }
        if (p[0].revents) {
            stream_read(job, r, &r->out);
        }
        if (p[1].revents) {
            stream_read(job, r, &r->err);
        }
    }
    r->running = 0;
    job->nrunning--;
    if (WIFSIGNALED(wstatus)) {
        code = 128 + WTERMSIG(wstatus);
        snprintf(text, sizeof(text), "rank %d killed by signal %d (%s)", r->rank,
                 WTERMSIG(wstatus), strsignal(WTERMSIG(wstatus)));
    } else {
        code = WEXITSTATUS(wstatus);
        snprintf(text, sizeof(text), "rank %d exited with code %d", r->rank, code);
    }
    if (code != 0 && !job->stopping) {
        fail_job(job, code, text);
    } else {
        VLOG("%s\n", text);
    }
}

static void reap_children(job_t *job)
{
    int wstatus;
    pid_t pid;

    while ((pid = waitpid(-1, &wstatus, WNOHANG)) > 0) {
        for (int i = 0; i < job->opt.np; i++) {
            if (job->ranks[i].pid == pid && job->ranks[i].running) {
                rank_exited(job, &job->ranks[i], wstatus);
                break;
            }
        }
        /* Any other pid is an orphaned grandchild handed to us as subreaper. */
    }
}

/* ---- Event loop --------------------------------------------------------------------- */

static void handle_signals(job_t *job)
{
    struct signalfd_siginfo si;

    while (read(job->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        int sig = (int)si.ssi_signo;

        if (sig == SIGCHLD) {
            continue; /* reaped below, whatever the number of signals merged */
        }
        if (job->stopping && job->exit_code >= 128 && sig == SIGINT) {
            VLOG("second SIGINT: killing the ranks now\n");
            job->kill_at = dc_now_ns();
            continue;
        }
        if (!job->stopping) {
            fprintf(stderr, "dlaunch: received signal %d (%s); stopping the ranks\n", sig,
                    strsignal(sig));
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

static void check_timers(job_t *job, uint64_t now)
{
    if (job->stopping && !job->killed && job->nrunning > 0 && now >= job->kill_at) {
        VLOG("grace period over: sending SIGKILL\n");
        signal_ranks(job, SIGKILL);
        job->killed = 1;
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
            fail_job(job, EXIT_START_TIMEOUT, text);
        }
    }
}

static int poll_timeout(job_t *job, uint64_t now, uint64_t drain_by)
{
    int t = dc_rdv_server_timeout_ms(job->server);

    if (t < 0) {
        t = 60000;
    }
    if (job->stopping && !job->killed && job->nrunning > 0) {
        t = DC_MIN(t, ms_until(job->kill_at, now));
    }
    if (job->start_by != 0) {
        t = DC_MIN(t, ms_until(job->start_by, now));
    }
    if (drain_by != 0) {
        t = DC_MIN(t, ms_until(drain_by, now));
    }
    return t;
}

static void run_loop(job_t *job)
{
    struct pollfd *pfds = calloc((size_t)(2 + 2 * job->opt.np), sizeof(*pfds));
    stream_t **streams = calloc((size_t)(2 * job->opt.np), sizeof(*streams));
    rank_t **owners = calloc((size_t)(2 * job->opt.np), sizeof(*owners));
    uint64_t drain_by = 0;

    if (pfds == NULL || streams == NULL || owners == NULL) {
        fprintf(stderr, "dlaunch: out of memory\n");
        stop_ranks(job, SIGKILL);
        drain_by = dc_now_ns();
    }
    for (;;) {
        int n = 0, ns = 0;
        uint64_t now;

        if (job->nrunning == 0 && drain_by == 0) {
            /* Every rank is gone: take stray children down so the pipes close. */
            signal_ranks(job, SIGKILL);
            drain_by = dc_now_ns() + DRAIN_TIMEOUT_MS * 1000000ull;
        }
        for (int i = 0; pfds != NULL && i < job->opt.np; i++) {
            stream_t *pair[2] = {&job->ranks[i].out, &job->ranks[i].err};

            for (int k = 0; k < 2; k++) {
                if (pair[k]->fd >= 0) {
                    pfds[2 + ns] = (struct pollfd){.fd = pair[k]->fd, .events = POLLIN};
                    streams[ns] = pair[k];
                    owners[ns++] = &job->ranks[i];
                }
            }
        }
        now = dc_now_ns();
        if (drain_by != 0 && (ns == 0 || now >= drain_by)) {
            break;
        }
        pfds[n++] = (struct pollfd){.fd = job->sigfd, .events = POLLIN};
        pfds[n++] = (struct pollfd){.fd = dc_rdv_server_fd(job->server), .events = POLLIN};
        if (poll(pfds, (nfds_t)(n + ns), poll_timeout(job, now, drain_by)) < 0 &&
            errno != EINTR) {
            fprintf(stderr, "dlaunch: poll: %s\n", strerror(errno));
            break;
        }
        if (pfds[0].revents) {
            handle_signals(job);
        }
        dc_rdv_server_progress(job->server);
        for (int k = 0; k < ns; k++) {
            if (pfds[2 + k].revents) {
                stream_read(job, owners[k], streams[k]);
            }
        }
        check_timers(job, dc_now_ns());
    }
    free(pfds);
    free(streams);
    free(owners);
}

/* ---- Setup ------------------------------------------------------------------------- */

static int setup_server(job_t *job)
{
    const char *bind_addr = getenv("DCOMM_RDV_ADDR");
    uint8_t secret[DC_AUTH_SECRET_LEN];
    uint8_t id[16];

    if (bind_addr == NULL || *bind_addr == '\0') {
        bind_addr = "127.0.0.1";
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
    /* Local ranks reach a wildcard listener through loopback. */
    snprintf(job->rdv_addr, sizeof(job->rdv_addr), "%s:%d",
             strcmp(bind_addr, "0.0.0.0") == 0 ? "127.0.0.1" : bind_addr,
             dc_rdv_server_port(job->server));
    VLOG("rendezvous server on %s:%d (job %s), advertised as %s\n", bind_addr,
         dc_rdv_server_port(job->server), job->job_id, job->rdv_addr);
    return 0;
}

static int setup_signals(job_t *job)
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

static void configure_logging(const job_t *job)
{
    const char *env = getenv("DCOMM_LOG_LEVEL");
    int level = env ? dc_log_level_parse(env) : -1;

    if (level >= 0) {
        dc_log_set_level((dc_log_level_t)level);
    } else if (job->opt.verbose) {
        dc_log_set_level(DC_LOG_LEVEL_DEBUG);
    }
}

int main(int argc, char **argv)
{
    job_t job = {.sigfd = -1};
    int rc = parse_args(argc, argv, &job.opt);

    if (rc != 0) {
        return rc == 256 ? 0 : rc;
    }
    verbose = job.opt.verbose;
    configure_logging(&job);
    job.ranks = calloc((size_t)job.opt.np, sizeof(*job.ranks));
    if (job.ranks == NULL || setup_signals(&job) != 0 || setup_server(&job) != 0) {
        fprintf(stderr, "dlaunch: cannot start: %s\n", strerror(errno));
        return 1;
    }
    for (int i = 0; i < job.opt.np; i++) {
        job.ranks[i].out.fd = job.ranks[i].err.fd = -1;
    }
    for (int i = 0; i < job.opt.np; i++) {
        if (spawn_rank(&job, i) != 0) {
            char text[128];

            snprintf(text, sizeof(text), "cannot start rank %d: %s", i, strerror(errno));
            fail_job(&job, 1, text);
            break;
        }
    }
    job.start_by = dc_now_ns() + (uint64_t)job.opt.start_timeout_s * 1000000000ull;
    run_loop(&job);
    reap_children(&job);
    for (int i = 0; i < job.opt.np; i++) {
        stream_t *pair[2] = {&job.ranks[i].out, &job.ranks[i].err};

        for (int k = 0; k < 2; k++) {
            if (pair[k]->fd >= 0) {
                stream_close(&job, &job.ranks[i], pair[k]);
            }
            free(pair[k]->buf);
        }
    }
    VLOG("all ranks done, exit code %d\n", job.exit_code);
    dc_rdv_server_destroy(job.server);
    close(job.sigfd);
    free(job.ranks);
    return job.exit_code;
}
