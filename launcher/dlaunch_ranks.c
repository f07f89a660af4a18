/* dlaunch's ranks on this machine: each started in its own process group with
 * its identity in the environment (and bound to its core or NUMA node when
 * asked), all of them, remote ones through their agents, signalled together,
 * and the verdict on a rank that ended: the first failure fails the job and
 * stops the others. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dc_time.h"
#include "dlaunch.h"
#include "topology.h"

void dl_ranks_signal(dl_job_t *job, int sig)
{
    for (int i = 0; i < job->nranks; i++) {
        /* Also the groups of ranks that exited: their stray children must go too. */
        if (job->ranks[i].pid > 0) {
            kill(-job->ranks[i].pid, sig);
        }
    }
    dl_agents_signal(job, sig);
}

void dl_ranks_stop(dl_job_t *job, int sig)
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
    dl_ranks_signal(job, sig);
}

void dl_fail_job(dl_job_t *job, int code, const char *text)
{
    fprintf(stderr, "dlaunch: %s\n", text);
    if (job->server != NULL) {
        dc_rdv_server_fail(job->server, text);
    }
    job->exit_code = code;
    dl_ranks_stop(job, SIGTERM);
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

        if (r->ident_set) {
            memcpy(values, r->ident, sizeof(values));
        }

        for (size_t i = 0; i < DC_ARRAY_SIZE(names); i++) {
            char name[32];

            snprintf(name, sizeof(name), "%s%s", prefix, names[i]);
            set_env_int(name, values[i]);
        }
    }
    if (job->el != NULL) {
        /* A worker of an elastic job: its id (this entry) asks dlaunch for its rank
         * at each dcomm_init; the host is named as discovery or -H named it. */
        set_env_int("DCOMM_ELASTIC_WORKER", (int)(r - job->ranks));
        setenv("HOROVOD_HOSTNAME", host->name, 1);
    } else if (!job->opt.agent) {
        /* The agent's ranks have theirs from dlaunch, in the job's environment. */
        setenv("HOROVOD_HOSTNAME", dl_host_label(job, host), 1);
    }
    /* An elastic worker may wait for its round as long as dlaunch waits for workers. */
    set_env_int("DCOMM_START_TIMEOUT", job->opt.start_timeout_s +
                                           (job->el != NULL ? job->opt.elastic_timeout_s : 0));
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

int dl_rank_spawn(dl_job_t *job, dl_rank_t *r)
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
    r->end_sig = sig;
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
    r->end_code = code;
    if (job->el != NULL) {
        DL_VLOG("%s\n", text); /* the elastic driver judges it (dlaunch.c calls it) */
    } else if (code != 0 && !job->stopping) {
        dl_fail_job(job, code, text);
    } else {
        DL_VLOG("%s\n", text);
    }
}

void dl_rank_exited(dl_job_t *job, dl_rank_t *r, int wstatus)
{
    /* Print what the rank wrote before dying ahead of the verdict on it. */
    dl_streams_drain(job, r, (dl_stream_t *[2]){&r->out, &r->err},
                     (dl_line_fn_t[2]){dl_rank_line, dl_rank_line}, 64, 0);
    if (WIFSIGNALED(wstatus)) {
        dl_rank_ended(job, r, 0, WTERMSIG(wstatus));
    } else {
        dl_rank_ended(job, r, WEXITSTATUS(wstatus), 0);
    }
}

/* Local ranks of the job: every rank on a local host. */
int dl_ranks_start_local(dl_job_t *job)
{
    for (int h = 0; h < job->nhosts; h++) {
        for (int i = 0; job->hosts[h].local && i < job->hosts[h].nranks; i++) {
            dl_rank_t *r = &job->ranks[job->hosts[h].first_rank - job->rank_base + i];

            if (dl_rank_spawn(job, r) != 0) {
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

void dl_agents_signal(dl_job_t *job, int sig)
{
    char line[16];
    int len = snprintf(line, sizeof(line), "K %d\n", sig);

    for (int i = 0; i < job->nagents; i++) {
        dl_agent_t *a = &job->agents[i];

        if (a->running && a->in_fd >= 0 && write(a->in_fd, line, (size_t)len) < 0 &&
            errno != EAGAIN) {
            close(a->in_fd); /* the agent is gone: its exit will be reported */
            a->in_fd = -1;
        }
    }
}
