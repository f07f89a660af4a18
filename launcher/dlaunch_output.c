/* Output of dlaunch's ranks: their stdout/stderr pipes read as lines, each line
 * written whole with its "[rank] " prefix (in the agent: as a protocol line to
 * dlaunch), and with --output-filename also into the rank's own files. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "dlaunch.h"

int dl_verbose; /* -v: DL_VLOG writes to stderr (main sets it) */

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
int dl_output_files_open(dl_job_t *job)
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

void dl_rank_line(dl_job_t *job, void *owner, dl_stream_t *s, const char *line, size_t len)
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
