/*
 * Before joining, every rank attacks dlaunch's rendezvous port: one raw
 * connection sends garbage, one client authenticates with a wrong secret.
 * Both must be dropped (the first closed by the server, the second refused
 * with DCOMM_ERR_AUTH), and the job must still initialize and allreduce.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rank_util.h"
#include "rdv.h"

static int raw_connect(const char *hostport)
{
    char host[64];
    const char *colon = strrchr(hostport, ':');
    struct sockaddr_in sa = {.sin_family = AF_INET};
    int fd;

    if (colon == NULL || (size_t)(colon - hostport) >= sizeof(host)) {
        return -1;
    }
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = '\0';
    sa.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        return -1;
    }
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* Sends garbage; 1 when the server closes the connection within 10 s. */
static int garbage_dropped(const char *hostport)
{
    static const char junk[] = "GET / HTTP/1.1\r\n\xff\xff\xff\xff\x00\x01garbage garbage";
    char buf[4096];
    int fd = raw_connect(hostport), closed = 0;

    if (fd < 0) {
        return 0;
    }
    if (write(fd, junk, sizeof(junk)) < 0) {
        closed = 1; /* already reset */
    }
    for (int i = 0; i < 100 && !closed; i++) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ssize_t n;

        if (poll(&p, 1, 100) <= 0) {
            continue;
        }
        n = read(fd, buf, sizeof(buf));
        closed = (n <= 0);
    }
    close(fd);
    return closed;
}

int main(void)
{
    const char *rdv = getenv("DCOMM_RENDEZVOUS");
    uint8_t wrong[DC_AUTH_SECRET_LEN];
    dc_store_t *store = NULL;
    dcomm_status_t s;
    double v = 1.0;
    int ok = 1;

    if (rdv == NULL) {
        fprintf(stderr, "run me under dlaunch\n");
        return 1;
    }
    if (!garbage_dropped(rdv)) {
        fprintf(stderr, "garbage connection was not dropped\n");
        ok = 0;
    }
    memset(wrong, 0x42, sizeof(wrong));
    s = dc_rdv_client_open(rdv, wrong, 0, 5000, &store);
    if (s != DCOMM_ERR_AUTH) {
        fprintf(stderr, "wrong secret gave %s, want DCOMM_ERR_AUTH\n", dcomm_status_string(s));
        ok = 0;
        if (store != NULL) {
            store->ops->close(store);
        }
    }
    CHECK_OK(dcomm_init());
    CHECK_OK(dcomm_allreduce(DCOMM_COMM_WORLD, "after.garbage", &v, &v, 1, DCOMM_FLOAT64,
                             DCOMM_SUM));
    if (v != (double)dcomm_size()) {
        fprintf(stderr, "allreduce after the attack: %g\n", v);
        ok = 0;
    }
    if (ok) {
        printf("rank %d: attacks dropped, allreduce correct\n", dcomm_rank());
    }
    CHECK_OK(dcomm_shutdown());
    return ok ? 0 : 1;
}
