/* Ranks on other hosts: dlaunch starts one agent per remote host through the
 * rsh command (`RSH HOST DLAUNCH --agent`), sends it the job on stdin, and
 * turns the agent's event lines back into rank output and rank verdicts (the
 * protocol is in dlaunch.h). The agent is this same program; its half is here
 * too: it reads the job, and obeys "K <signal>" until its stdin closes, which
 * means dlaunch is gone, so it stops its ranks. A rank that dies is reported by
 * its agent with rank number and cause; an agent that dies (or an unreachable
 * host) is reported with the ranks it took with it. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dc_time.h"
#include "dl_proto.h"
#include "dlaunch.h"

#define SETUP_LINE_MAX    (256 * 1024)
#define SETUP_TIMEOUT_MS  30000
#define MAX_RSH_WORDS     32
#define MAX_ARGS          4096

extern char **environ;

/* ---- setup message: one escaped string per line -------------------------------- */

/* '%' and control characters become %XX, so a value is one line. */
static int put_escaped(FILE *f, char kind, const char *text)
{
    fputc(kind, f);
    fputc(' ', f);
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        if (*p == '%' || *p < 0x20) {
            fprintf(f, "%%%02X", *p);
        } else {
            fputc(*p, f);
        }
    }
    return fputc('\n', f) == EOF ? -1 : 0;
}

static int write_setup(const dl_job_t *job, const dl_host_t *host, int h, int fd)
{
    char cwd[PATH_MAX], hostname_var[DL_HOST_MAX + 32];
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    int rc = 0;

    if (f == NULL) {
        return -1;
    }
    fprintf(f, "J %s %s %s %d %d %d %d %d %d %d %g\n", job->secret_hex, job->job_id,
            job->rdv_addr, job->size, host->first_rank, host->nranks, h, job->cross_size,
            job->opt.start_timeout_s, (int)job->opt.bind, job->opt.grace_s);
    if (getcwd(cwd, sizeof(cwd)) != NULL) {
        put_escaped(f, 'C', cwd);
    }
    /* ssh passes no environment: the job's settings travel here (Horovod's
     * names too), and the host's name as the ranks' HOROVOD_HOSTNAME. */
    for (char **e = environ; *e != NULL; e++) {
        if (strncmp(*e, "DCOMM_", 6) == 0 || strncmp(*e, "HOROVOD_", 8) == 0) {
            put_escaped(f, 'E', *e);
        }
    }
    snprintf(hostname_var, sizeof(hostname_var), "HOROVOD_HOSTNAME=%s", host->name);
    put_escaped(f, 'E', hostname_var);
    for (char **a = job->opt.argv; *a != NULL; a++) {
        put_escaped(f, 'A', *a);
    }
    fputs("G\n", f);
    if (fclose(f) != 0) {
        free(text);
        return -1;
    }
    for (size_t off = 0; off < len && rc == 0;) {
        ssize_t n = write(fd, text + off, len - off);

        if (n < 0 && errno != EINTR) {
            rc = -1;
        }
        off += n > 0 ? (size_t)n : 0;
    }
    free(text);
    return rc;
}

/* ---- dlaunch side ---------------------------------------------------------------- */

/* argv of `RSH... HOST DLAUNCH --agent [-v]`; words of rsh split at blanks. */
static int agent_argv(const dl_job_t *job, const dl_host_t *host, char *rsh_copy, char *self,
                      char **argv)
{
    int n = 0;
    char *save;

    for (char *w = strtok_r(rsh_copy, " \t", &save); w && n < MAX_RSH_WORDS;
         w = strtok_r(NULL, " \t", &save)) {
        argv[n++] = w;
    }
    if (n == 0) {
        return -1;
    }
    argv[n++] = (char *)host->name;
    argv[n++] = self;
    argv[n++] = "--agent";
    if (job->opt.verbose) {
        argv[n++] = "-v";
    }
    argv[n] = NULL;
    return 0;
}

static int start_agent(dl_job_t *job, dl_agent_t *a, char *self)
{
    const dl_host_t *host = &job->hosts[a->host];
    char *argv[MAX_RSH_WORDS + 6];
    char *rsh = strdup(job->opt.rsh);
    int in[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1}, rc = -1;

    if (rsh == NULL || agent_argv(job, host, rsh, self, argv) != 0 ||
        pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
        goto out;
    }
    fflush(stdout);
    fflush(stderr);
    a->pid = fork();
    if (a->pid == 0) {
        setpgid(0, 0);
        signal(SIGPIPE, SIG_DFL);
        sigprocmask(SIG_SETMASK, &job->oldmask, NULL);
        dup2(in[0], 0);
        dup2(out[1], 1);
        dup2(err[1], 2);
        execvp(argv[0], argv);
        fprintf(stderr, "cannot execute the rsh command %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    if (a->pid < 0) {
        goto out;
    }
    setpgid(a->pid, a->pid);
    a->running = 1;
    a->in_fd = in[1];
    in[1] = -1;
    if (dl_stream_open(&a->out, out[0], 1) != 0 || dl_stream_open(&a->err, err[0], 2) != 0) {
        out[0] = err[0] = -1;
        goto out;
    }
    out[0] = err[0] = -1;
    for (int i = 0; i < host->nranks; i++) {
        job->ranks[host->first_rank + i].running = 1;
        job->nrunning++;
    }
    DL_VLOG("started the agent for host %s (ranks %d-%d, pid %d): %s ...\n", host->name,
            host->first_rank, host->first_rank + host->nranks - 1, (int)a->pid, argv[0]);
    /* A failed write means the agent died at once; its exit tells why. */
    write_setup(job, host, a->host, a->in_fd);
    fcntl(a->in_fd, F_SETFL, O_NONBLOCK);
    rc = 0;
out:
    for (int k = 0; k < 2; k++) {
        int *fds[3] = {in, out, err};

        for (int j = 0; j < 3; j++) {
            if (fds[j][k] >= 0) {
                close(fds[j][k]);
            }
        }
    }
    free(rsh);
    return rc;
}

int dl_agents_start(dl_job_t *job)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

    if (n <= 0) {
        return -1;
    }
    self[n] = '\0';
    job->agents = calloc((size_t)job->nhosts, sizeof(*job->agents));
    if (job->agents == NULL) {
        return -1;
    }
    for (int h = 0; h < job->nhosts; h++) {
        dl_agent_t *a;

        if (job->hosts[h].local || job->hosts[h].nranks == 0) {
            continue;
        }
        a = &job->agents[job->nagents++];
        *a = (dl_agent_t){.host = h, .in_fd = -1, .out.fd = -1, .err.fd = -1};
        if (start_agent(job, a, self) != 0) {
            return -1;
        }
    }
    return 0;
}

/* A rank of this agent's host, or NULL. */
static dl_rank_t *agent_rank(dl_job_t *job, const dl_agent_t *a, long rank)
{
    const dl_host_t *host = &job->hosts[a->host];

    if (rank < host->first_rank || rank >= host->first_rank + host->nranks) {
        return NULL;
    }
    return &job->ranks[rank];
}

void dl_agent_line(dl_job_t *job, void *owner, dl_stream_t *s, const char *line, size_t len)
{
    dl_agent_t *a = owner;
    dl_agent_msg_t m;
    dl_rank_t *r;

    (void)s;
    switch (dl_agent_msg_parse(line, len, &m)) {
    case DL_AGENT_MSG_OUTPUT:
        if (agent_rank(job, a, m.rank) != NULL) {
            dl_emit_line(job, (int)m.rank, m.fd, line + m.text_off, m.text_len);
            return;
        }
        break;
    case DL_AGENT_MSG_EXIT:
        if ((r = agent_rank(job, a, m.rank)) != NULL) {
            if (r->running) {
                dl_rank_ended(job, r, m.code, m.sig);
            }
            return;
        }
        break;
    case DL_AGENT_MSG_FATAL:
        fprintf(stderr, "[%s] %.*s\n", job->hosts[a->host].name, (int)m.text_len,
                line + m.text_off);
        return;
    case DL_AGENT_MSG_BAD:
        break;
    }
    fprintf(stderr, "[%s] unexpected from the agent: %.*s\n", job->hosts[a->host].name,
            (int)DC_MIN(len, (size_t)DL_MAX_LINE), line);
}

void dl_agent_err_line(dl_job_t *job, void *owner, dl_stream_t *s, const char *line, size_t len)
{
    dl_agent_t *a = owner;

    (void)s;
    fprintf(stderr, "[%s] %.*s\n", job->hosts[a->host].name, (int)len, line);
}

void dl_agent_exited(dl_job_t *job, dl_agent_t *a, int wstatus)
{
    const dl_host_t *host = &job->hosts[a->host];
    int code = WIFSIGNALED(wstatus) ? 128 + WTERMSIG(wstatus) : WEXITSTATUS(wstatus);

    /* Its last words (rank exits among them) come before the verdict. */
    dl_streams_drain(job, a, (dl_stream_t *[2]){&a->out, &a->err},
                     (dl_line_fn_t[2]){dl_agent_line, dl_agent_err_line}, 1024, 100);
    a->running = 0;
    DL_VLOG("the agent for host %s exited with code %d\n", host->name, code);
    for (int i = 0; i < host->nranks; i++) {
        dl_rank_t *r = &job->ranks[host->first_rank + i];
        char text[DL_HOST_MAX + 160];

        if (!r->running) {
            continue;
        }
        r->running = 0;
        job->nrunning--;
        snprintf(text, sizeof(text),
                 "rank %d lost: the agent on host %s (rsh '%s') exited with code %d before "
                 "the rank ended",
                 r->rank, host->name, job->opt.rsh, code);
        if (!job->stopping) {
            dl_fail_job(job, code != 0 ? code : 1, text);
        } else {
            DL_VLOG("%s\n", text);
        }
    }
}

/* ---- agent side ------------------------------------------------------------------ */

/* One line from fd 0, read byte by byte (the rest of stdin stays unread for the
 * event loop), within the setup deadline. */
static int read_setup_line(char *buf, size_t cap, uint64_t deadline)
{
    size_t len = 0;

    for (;;) {
        struct pollfd p = {.fd = 0, .events = POLLIN};
        uint64_t now = dc_now_ns();
        char c;
        ssize_t n;

        if (now >= deadline || poll(&p, 1, (int)((deadline - now) / 1000000 + 1)) == 0) {
            return -1;
        }
        n = read(0, &c, 1);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0 || len + 1 >= cap) {
            return -1;
        }
        if (c == '\n') {
            buf[len] = '\0';
            return 0;
        }
        buf[len++] = c;
    }
}

static void agent_fatal(const char *what)
{
    printf("F %s\n", what);
    fflush(stdout);
}

static int agent_job_line(dl_job_t *job, char *line, int *nargs)
{
    int bind, first, nranks;
    double grace;

    switch (line[0]) {
    case 'J':
        if (sscanf(line, "J %64s %32s %79s %d %d %d %d %d %d %d %lf", job->secret_hex,
                   job->job_id, job->rdv_addr, &job->size, &first, &nranks, &job->cross_rank,
                   &job->cross_size, &job->opt.start_timeout_s, &bind, &grace) != 11 ||
            nranks < 1 || nranks > DL_MAX_RANKS || first < 0 || first + nranks > job->size) {
            return -1;
        }
        job->hosts = calloc(1, sizeof(*job->hosts));
        job->ranks = calloc((size_t)nranks, sizeof(*job->ranks));
        if (job->hosts == NULL || job->ranks == NULL) {
            return -1;
        }
        *job->hosts = (dl_host_t){.name = "agent", .slots = nranks, .first_rank = first,
                                  .nranks = nranks, .local = 1};
        job->nhosts = 1;
        job->nranks = job->opt.np = nranks;
        job->rank_base = first;
        job->opt.bind = (dl_bind_t)bind;
        job->opt.grace_s = grace;
        for (int i = 0; i < nranks; i++) {
            job->ranks[i] = (dl_rank_t){.rank = first + i, .out.fd = -1, .err.fd = -1};
        }
        return 0;
    case 'C':
        if (line[1] != ' ' || dl_unescape(line + 2) != 0) {
            return -1;
        }
        if (chdir(line + 2) != 0) {
            fprintf(stderr, "dlaunch agent: cannot enter %s (%s); staying in the home "
                            "directory\n", line + 2, strerror(errno));
        }
        return 0;
    case 'E': {
        char *eq;

        if (line[1] != ' ' || dl_unescape(line + 2) != 0) {
            return -1;
        }
        eq = strchr(line + 2, '=');
        if (eq == NULL) {
            return -1;
        }
        *eq = '\0';
        return setenv(line + 2, eq + 1, 1);
    }
    case 'A':
        if (*nargs >= MAX_ARGS || line[1] != ' ' || dl_unescape(line + 2) != 0) {
            return -1;
        }
        job->opt.argv[(*nargs)++] = strdup(line + 2);
        return job->opt.argv[*nargs - 1] == NULL ? -1 : 0;
    default:
        return -1;
    }
}

int dl_agent_read_job(dl_job_t *job)
{
    uint64_t deadline = dc_now_ns() + SETUP_TIMEOUT_MS * 1000000ull;
    char *line = malloc(SETUP_LINE_MAX);
    int nargs = 0, rc = -1;

    job->opt.argv = calloc(MAX_ARGS + 1, sizeof(char *));
    if (line == NULL || job->opt.argv == NULL) {
        agent_fatal("out of memory");
        goto out;
    }
    while (read_setup_line(line, SETUP_LINE_MAX, deadline) == 0) {
        if (strcmp(line, "G") == 0) {
            rc = (job->nranks > 0 && nargs > 0) ? 0 : -1;
            break;
        }
        if (agent_job_line(job, line, &nargs) != 0) {
            break;
        }
    }
    if (rc != 0) {
        agent_fatal("the job description from dlaunch was incomplete or malformed");
        goto out;
    }
    job->ctl_fd = 0;
    fcntl(0, F_SETFL, O_NONBLOCK);
out:
    free(line);
    return rc;
}

static void ctl_line(dl_job_t *job, void *owner, dl_stream_t *s, const char *line, size_t len)
{
    int sig;

    (void)owner;
    (void)s;
    /* The line is not NUL-terminated: its buffer holds the rest of longer lines. */
    if (dl_ctl_parse(line, len, &sig) == 0) {
        for (int i = 0; i < job->nranks; i++) {
            if (job->ranks[i].pid > 0) {
                kill(-job->ranks[i].pid, sig);
            }
        }
    }
}

void dl_agent_control(dl_job_t *job)
{
    static dl_stream_t ctl = {.fd = -1};

    if (ctl.fd < 0 && ctl.buf == NULL) {
        if (dl_stream_open(&ctl, job->ctl_fd, 0) != 0) {
            return;
        }
    }
    dl_stream_read(job, NULL, &ctl, ctl_line);
    if (ctl.fd < 0) {
        /* dlaunch is gone: nobody is left to stop the ranks but us. */
        job->ctl_fd = -1;
        free(ctl.buf);
        ctl.buf = NULL;
        if (job->nrunning > 0) {
            fprintf(stderr, "dlaunch agent: lost the link to dlaunch; stopping %d rank(s)\n",
                    job->nrunning);
            raise(SIGTERM); /* through the signal path: SIGKILL follows after the grace */
        }
    }
}
