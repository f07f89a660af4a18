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
 * loop also reads dlaunch's commands on stdin.
 *
 * This file: main, setting up (the rendezvous server, signals), the event loop
 * and reaping; the command line is in dlaunch_args.c, rank output in
 * dlaunch_output.c, starting and stopping local ranks in dlaunch_ranks.c. */
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "dc_time.h"
#include "dlaunch.h"
#include "log.h"

#define DRAIN_TIMEOUT_MS   2000 /* after the last rank: wait this long for output */
#define AGENT_KILL_NS      2000000000ull /* after SIGKILL: agents that linger are killed */

static void reap_children(dl_job_t *job)
{
    int wstatus;
    pid_t pid;

    while ((pid = waitpid(-1, &wstatus, WNOHANG)) > 0) {
        for (int i = 0; i < job->nranks; i++) {
            if (job->ranks[i].pid == pid && job->ranks[i].running) {
                dl_rank_exited(job, &job->ranks[i], wstatus);
                if (job->el != NULL) {
                    dl_elastic_ended(job, &job->ranks[i]);
                }
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
        dl_ranks_stop(job, sig);
    }
    reap_children(job);
}

static int ms_until(uint64_t t, uint64_t now)
{
    return t <= now ? 0 : (int)DC_MIN((t - now + 999999) / 1000000, 60000u);
}

static void check_timers(dl_job_t *job, uint64_t now)
{
    if (job->el != NULL && !job->stopping) {
        dl_elastic_tick(job, now);
    }
    if (job->stopping && !job->killed && job->nrunning > 0 && now >= job->kill_at) {
        DL_VLOG("grace period over: sending SIGKILL\n");
        dl_ranks_signal(job, SIGKILL);
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
            dl_fail_job(job, DL_EXIT_START_TIMEOUT, text);
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
    if (job->el != NULL && !job->stopping) {
        t = DC_MIN(t, dl_elastic_timeout_ms(job, now));
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
        poll_add(ps, &job->ranks[i].out, &job->ranks[i], dl_rank_line);
        poll_add(ps, &job->ranks[i].err, &job->ranks[i], dl_rank_line);
    }
    for (int i = 0; i < job->nagents; i++) {
        poll_add(ps, &job->agents[i].out, &job->agents[i], dl_agent_line);
        poll_add(ps, &job->agents[i].err, &job->agents[i], dl_agent_err_line);
    }
    return ps->n - fixed;
}

static void run_loop(dl_job_t *job)
{
    size_t cap = (size_t)(3 + 2 * DC_MAX(job->nranks, job->ranks_cap) + 2 * job->nagents);
    poll_set_t ps = {calloc(cap, sizeof(struct pollfd)), calloc(cap, sizeof(dl_stream_t *)),
                     calloc(cap, sizeof(void *)), calloc(cap, sizeof(dl_line_fn_t)), 0};
    uint64_t drain_by = 0;

    if (ps.pfds == NULL || ps.streams == NULL || ps.owners == NULL || ps.fns == NULL) {
        fprintf(stderr, "dlaunch: out of memory\n");
        dl_ranks_stop(job, SIGKILL);
        goto out;
    }
    for (;;) {
        int fixed = 0, ns;
        uint64_t now;

        if (job->nrunning == 0 && drain_by == 0 && (job->el == NULL || dl_elastic_over(job))) {
            /* Every rank is gone: take stray children down so the pipes close. */
            dl_ranks_signal(job, SIGKILL);
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

static int prepare(dl_job_t *job)
{
    int rc;

    if (job->opt.agent) {
        return dl_agent_read_job(job) == 0 ? 0 : 1;
    }
    if (job->opt.elastic) {
        return dl_elastic_prepare(job);
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
    if (job->opt.output_dir != NULL && dl_output_files_open(job) != 0) {
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
        dl_stream_close(job, &job->ranks[i], &job->ranks[i].out, dl_rank_line);
        dl_stream_close(job, &job->ranks[i], &job->ranks[i].err, dl_rank_line);
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
    dl_elastic_free(job);
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
    rc = dl_args_parse(argc, argv, &job.opt);
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
        dl_elastic_free(&job);
        free(job.ranks);
        free(job.hosts);
        return rc == 256 ? 0 : rc;
    }
    if (setup_signals(&job) != 0 || (!job.opt.agent && setup_server(&job) != 0)) {
        fprintf(stderr, "dlaunch: cannot start: %s\n", errno ? strerror(errno) : "see above");
        return 1;
    }
    if (job.el != NULL) {
        dl_elastic_tick(&job, dc_now_ns()); /* starts the first workers */
    } else if (dl_ranks_start_local(&job) == 0 && !job.opt.agent) {
        if (dl_agents_start(&job) != 0) {
            dl_fail_job(&job, 1, "cannot start the remote agents");
        }
    }
    job.start_by = job.opt.agent || job.el != NULL
                       ? 0 : dc_now_ns() + (uint64_t)job.opt.start_timeout_s * 1000000000ull;
    run_loop(&job);
    rc = job.exit_code;
    finish(&job);
    DL_VLOG("all ranks done, exit code %d\n", rc);
    return rc;
}
