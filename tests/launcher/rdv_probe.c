/* A rank program for the launcher tests that speaks to dlaunch's rendezvous
 * server through the util client (not libdcomm).
 *   rdv_probe store   hostile connections are dropped; real ranks exchange keys
 *   rdv_probe events  rank 0 subscribes, rank 1 fails; rank 0 prints the event
 *   rdv_probe flood N rank 0 holds N idle connections open while every rank
 *                     connects and exchanges keys (after a 1 s head start) */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dc_time.h"
#include "rdv.h"

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "rdv_probe: " __VA_ARGS__);                                    \
            fprintf(stderr, " (%s:%d; last error: %s)\n", __FILE__, __LINE__, dc_error_get()); \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

static int raw_connect(const char *hostport)
{
    struct sockaddr_in addr = {.sin_family = AF_INET};
    char host[64];
    const char *colon = strrchr(hostport, ':');
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    CHECK(colon != NULL && (size_t)(colon - hostport) < sizeof(host), "bad address %s", hostport);
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = '\0';
    addr.sin_port = htons((uint16_t)atoi(colon + 1));
    CHECK(inet_pton(AF_INET, host, &addr.sin_addr) == 1, "bad host %s", host);
    CHECK(connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0, "connect: %s",
          strerror(errno));
    return fd;
}

/* 1 when the server closes the connection within timeout_ms. */
static int closed_within(int fd, int timeout_ms)
{
    uint64_t deadline = dc_deadline_ms(timeout_ms);
    uint8_t buf[256];

    while (dc_now_ns() < deadline) {
        struct pollfd p = {.fd = fd, .events = POLLIN};

        if (poll(&p, 1, 50) > 0) {
            ssize_t n = recv(fd, buf, sizeof(buf), 0);

            if (n == 0 || (n < 0 && errno == ECONNRESET)) {
                return 1;
            }
        }
    }
    return 0;
}

static void hostile_connections(const char *addr, const uint8_t secret[DC_AUTH_SECRET_LEN])
{
    const char garbage[] = "GET / HTTP/1.0\r\n\r\n";
    uint8_t buf[256], wrong[DC_AUTH_SECRET_LEN];
    dc_rdv_msg_t hello, auth = {.type = DC_RDV_MSG_AUTH, .rank = 0};
    dc_store_t *store = NULL;
    size_t len = 0, used, n;
    int fd;

    /* Garbage instead of the handshake. */
    fd = raw_connect(addr);
    CHECK(send(fd, garbage, sizeof(garbage) - 1, 0) > 0, "send");
    CHECK(closed_within(fd, 3000), "garbage connection was not dropped");
    close(fd);

    /* A well-formed AUTH with a MAC over the wrong secret. */
    fd = raw_connect(addr);
    while (dc_rdv_msg_decode(buf, len, DC_RDV_MAX_AUTH_FRAME, &hello, &used) == DCOMM_INPROGRESS) {
        ssize_t got = recv(fd, buf + len, sizeof(buf) - len, 0);

        CHECK(got > 0, "no HELLO from the server");
        len += (size_t)got;
    }
    CHECK(hello.type == DC_RDV_MSG_HELLO, "first message is not HELLO");
    memcpy(wrong, secret, sizeof(wrong));
    wrong[0] ^= 1;
    dc_auth_random(auth.nonce, sizeof(auth.nonce));
    dc_rdv_client_mac(wrong, hello.nonce, auth.nonce, auth.rank, auth.role, auth.mac);
    n = dc_rdv_msg_encode(&auth, buf, sizeof(buf));
    CHECK(send(fd, buf, n, 0) == (ssize_t)n, "send AUTH");
    CHECK(closed_within(fd, 3000), "wrong-HMAC connection was not dropped");
    close(fd);

    /* The client API reports the wrong secret as an authentication failure. */
    CHECK(dc_rdv_client_open(addr, wrong, 0, 3000, &store) == DCOMM_ERR_AUTH,
          "wrong secret not refused");
}

static void exchange(dc_store_t *store, int rank, int size)
{
    char key[64], val[64], got[64];
    size_t len;
    int64_t count;

    snprintf(key, sizeof(key), "probe/%d", rank);
    snprintf(val, sizeof(val), "hello from %d", rank);
    CHECK(dc_store_set(store, key, val, strlen(val)) == DCOMM_OK, "set");
    for (int peer = 0; peer < size; peer++) {
        snprintf(key, sizeof(key), "probe/%d", peer);
        snprintf(val, sizeof(val), "hello from %d", peer);
        CHECK(dc_store_get(store, key, got, sizeof(got), &len, 20000) == DCOMM_OK, "get %s",
              key);
        CHECK(len == strlen(val) && memcmp(got, val, len) == 0, "wrong value for %s", key);
    }
    CHECK(dc_store_add(store, "probe/count", 1, &count) == DCOMM_OK, "add");
    CHECK(dc_store_barrier(store, "probe", size, 20000) == DCOMM_OK, "barrier");
    CHECK(dc_store_add(store, "probe/count", 0, &count) == DCOMM_OK && count == size,
          "count %lld != %d", (long long)count, size);
}

static int events_mode(const char *addr, const uint8_t secret[DC_AUTH_SECRET_LEN],
                       dc_store_t *store, int rank)
{
    char msg[256];
    size_t len;
    int fd = -1, rc;

    if (rank == 0) {
        /* dlaunch sends SIGTERM right after the event: live long enough to read it. */
        signal(SIGTERM, SIG_IGN);
        CHECK(dc_rdv_events_open(addr, secret, rank, 5000, &fd) == DCOMM_OK, "events_open");
        CHECK(dc_store_set(store, "subscribed", "1", 1) == DCOMM_OK, "set");
        for (;;) {
            struct pollfd p = {.fd = fd, .events = POLLIN};

            poll(&p, 1, 20000);
            rc = dc_rdv_events_read(fd, msg, sizeof(msg));
            if (rc != 0) {
                break;
            }
        }
        CHECK(rc == 1, "events_read gave %d", rc);
        printf("event: %s\n", msg);
        return 0;
    }
    if (rank == 1) {
        CHECK(dc_store_get(store, "subscribed", msg, sizeof(msg), &len, 20000) == DCOMM_OK,
              "get subscribed");
        return 5;
    }
    sleep(30);
    return 0;
}

/* N idle connections that never say a word, opened before the ranks connect. */
static int *flood(const char *addr, int n)
{
    struct rlimit lim;
    int *fds = malloc(sizeof(int) * (size_t)n);
    uint64_t t0 = dc_now_ns();

    CHECK(fds != NULL, "out of memory");
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < (rlim_t)n + 64) {
        lim.rlim_cur = lim.rlim_max;
        setrlimit(RLIMIT_NOFILE, &lim);
    }
    for (int i = 0; i < n; i++) {
        fds[i] = raw_connect(addr);
    }
    printf("rank 0 holds %d idle connections (opened in %llu ms)\n", n,
           (unsigned long long)((dc_now_ns() - t0) / 1000000));
    fflush(stdout);
    return fds;
}

int main(int argc, char **argv)
{
    const char *addr = getenv("DCOMM_RENDEZVOUS");
    const char *hex = getenv("DCOMM_JOB_SECRET");
    const char *rank_s = getenv("DCOMM_RANK"), *size_s = getenv("DCOMM_SIZE");
    uint8_t secret[DC_AUTH_SECRET_LEN];
    dc_store_t *store = NULL;
    int rank, size, rc = 0;

    CHECK(addr && hex && rank_s && size_s, "DCOMM_* variables missing");
    CHECK(dc_auth_secret_from_hex(hex, secret) == 0, "bad DCOMM_JOB_SECRET");
    rank = atoi(rank_s);
    size = atoi(size_s);
    if (argc > 2 && strcmp(argv[1], "flood") == 0) {
        int n = atoi(argv[2]), *fds = rank == 0 ? flood(addr, n) : NULL;
        uint64_t t0;

        if (rank != 0) {
            usleep(1000000); /* rank 0's flood is in place */
        }
        t0 = dc_now_ns();
        CHECK(dc_rdv_client_open(addr, secret, rank, 10000, &store) == DCOMM_OK,
              "client_open behind %d idle connections", n);
        exchange(store, rank, size);
        printf("rank %d started behind the idle connections in %llu ms\n", rank,
               (unsigned long long)((dc_now_ns() - t0) / 1000000));
        for (int i = 0; fds != NULL && i < n; i++) {
            close(fds[i]);
        }
        free(fds);
        store->ops->close(store);
        return 0;
    }
    CHECK(dc_rdv_client_open(addr, secret, rank, 10000, &store) == DCOMM_OK, "client_open");
    if (argc > 1 && strcmp(argv[1], "events") == 0) {
        rc = events_mode(addr, secret, store, rank);
    } else {
        hostile_connections(addr, secret);
        exchange(store, rank, size);
        printf("rank %d ok via %s\n", rank, dc_rdv_client_local_addr(store));
    }
    store->ops->close(store);
    return rc;
}
