/*
 * flood_job DIR N: a real dcomm job (dcomm_init, an allreduce, dcomm_shutdown)
 * that starts while N idle connections are held open on dlaunch's rendezvous
 * server. Rank 0 opens them first (raising its descriptor limit), then writes
 * DIR/flood-ready; the other ranks wait for that file (30 s at most), and
 * every rank then times its dcomm_init and checks the allreduce's result.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dcomm.h"

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void die(int rank, const char *what)
{
    fprintf(stderr, "flood_job: rank %d: %s\n", rank, what);
    exit(1);
}

/* Opens n connections to host:port and leaves them idle; returns how many. */
static int flood(const char *hostport, int n, int *fds)
{
    struct sockaddr_in addr = {.sin_family = AF_INET};
    struct rlimit lim;
    char host[64];
    const char *colon = strrchr(hostport, ':');
    int i;

    if (colon == NULL || (size_t)(colon - hostport) >= sizeof(host)) {
        die(0, "bad DCOMM_RENDEZVOUS");
    }
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = '\0';
    addr.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        die(0, "bad rendezvous host");
    }
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < (rlim_t)n + 256) {
        lim.rlim_cur = lim.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &lim);
    }
    for (i = 0; i < n; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fds[i] < 0 || connect(fds[i], (struct sockaddr *)&addr, sizeof(addr)) != 0) {
            fprintf(stderr, "flood_job: connection %d: %s\n", i, strerror(errno));
            if (fds[i] >= 0) {
                close(fds[i]);
            }
            break;
        }
    }
    return i;
}

int main(int argc, char **argv)
{
    const char *rdv = getenv("DCOMM_RENDEZVOUS"), *rank_s = getenv("DCOMM_RANK");
    char ready[4096];
    int rank, n, held = 0, *fds = NULL, size;
    float x[1024];
    double t0;
    dcomm_status_t s;

    if (argc != 3 || rdv == NULL || rank_s == NULL) {
        fprintf(stderr, "usage: dlaunch -np N flood_job DIR N\n");
        return 2;
    }
    rank = atoi(rank_s);
    n = atoi(argv[2]);
    if (n < 0 || n > 1 << 20 ||
        (size_t)snprintf(ready, sizeof(ready), "%s/flood-ready", argv[1]) >= sizeof(ready)) {
        die(rank, "bad arguments");
    }
    if (rank == 0) {
        int fd;

        fds = malloc(sizeof(int) * (size_t)(n > 0 ? n : 1));
        if (fds == NULL) {
            die(rank, "out of memory");
        }
        t0 = now_ms();
        held = flood(rdv, n, fds);
        printf("rank 0 holds %d idle connections (opened in %.0f ms)\n", held, now_ms() - t0);
        fflush(stdout);
        fd = open(ready, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0) {
            die(rank, "cannot create the ready file");
        }
        close(fd);
    } else {
        for (t0 = now_ms(); access(ready, F_OK) != 0; usleep(20000)) {
            if (now_ms() - t0 > 30000) {
                die(rank, "rank 0's flood never got ready");
            }
        }
    }
    t0 = now_ms();
    s = dcomm_init();
    if (s != DCOMM_OK) {
        fprintf(stderr, "flood_job: rank %d: dcomm_init: %s\n", rank, dcomm_last_error());
        return 1;
    }
    size = dcomm_size();
    for (int i = 0; i < 1024; i++) {
        x[i] = (float)(rank + i);
    }
    s = dcomm_allreduce(DCOMM_COMM_WORLD, "flood", x, x, 1024, DCOMM_FLOAT32, DCOMM_SUM);
    if (s != DCOMM_OK) {
        fprintf(stderr, "flood_job: rank %d: allreduce: %s\n", rank, dcomm_last_error());
        return 1;
    }
    for (int i = 0; i < 1024; i++) {
        float want = (float)(size * (size - 1) / 2 + size * i);

        if (x[i] != want) {
            fprintf(stderr, "flood_job: rank %d: x[%d] = %g, expected %g\n", rank, i, x[i], want);
            return 1;
        }
    }
    printf("rank %d of %d: init and allreduce behind the idle connections in %.0f ms\n", rank,
           size, now_ms() - t0);
    fflush(stdout);
    s = dcomm_shutdown();
    for (int i = 0; i < held; i++) {
        close(fds[i]);
    }
    free(fds);
    return s == DCOMM_OK ? 0 : 1;
}
