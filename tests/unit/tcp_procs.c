/*
 * The harness of the tcp transport's tests (tcp_procs.h): forked ranks over a
 * directory store, child-side checks, hostile clients' tools.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tcp_procs.h"

const uint8_t test_secret[DC_AUTH_SECRET_LEN] = {
    0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00,
    0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10};

char store_dir[PATH_MAX];
static int cur_rank = -1;

/* ---- child-side helpers ---------------------------------------------------- */

void child_fail_at(const char *file, int line, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "test_tcp: rank %d: check failed at %s:%d: ", cur_rank, file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    fflush(stderr);
    _exit(3);
}

int drive_for(rank_ctx_t *ctx, dc_request_t *reqs, int n, int timeout_ms)
{
    uint64_t deadline = dc_deadline_ms(timeout_ms);
    int first = 0;

    for (;;) {
        int events = tcp->progress(ctx->tp);

        while (first < n && reqs[first].status != DCOMM_INPROGRESS) {
            first++;
        }
        if (first == n) {
            return 0;
        }
        if (dc_now_ns() >= deadline) {
            return -1;
        }
        if (events == 0) {
            struct pollfd pfd = {.fd = ctx->wait_fd, .events = POLLIN};

            (void)poll(&pfd, 1, 50);
        }
    }
}

void drive(rank_ctx_t *ctx, dc_request_t *reqs, int n)
{
    CHECK(drive_for(ctx, reqs, n, DRIVE_MS) == 0);
}

static uint8_t pattern(int src, size_t size, size_t i)
{
    return (uint8_t)(src * 131 + size * 7 + i + (i >> 8) * 17 + (i >> 16) * 3);
}

void fill(uint8_t *buf, int src, size_t size)
{
    for (size_t i = 0; i < size; i++) {
        buf[i] = pattern(src, size, i);
    }
}

void verify(const uint8_t *buf, int src, size_t size)
{
    for (size_t i = 0; i < size; i++) {
        if (buf[i] != pattern(src, size, i)) {
            child_fail(__LINE__, "byte %zu of %zu from rank %d: got %u, expected %u", i, size,
                       src, buf[i], pattern(src, size, i));
        }
    }
}

void connect_peer(rank_ctx_t *ctx, int peer)
{
    CHECK_EQ(tcp->connect(ctx->tp, peer, &ctx->eps[peer]), DCOMM_OK);
    CHECK(ctx->eps[peer] != NULL && ctx->eps[peer]->peer == peer);
}

void connect_all(rank_ctx_t *ctx)
{
    for (int peer = 0; peer < ctx->size; peer++) {
        if (peer != ctx->rank) {
            connect_peer(ctx, peer);
        }
    }
}

void store_flag(rank_ctx_t *ctx, const char *key)
{
    CHECK_EQ(dc_store_set(ctx->store, key, "1", 1), DCOMM_OK);
}

void store_wait(rank_ctx_t *ctx, const char *key)
{
    char val[8];
    size_t len;

    CHECK_EQ(dc_store_get(ctx->store, key, val, sizeof(val), &len, DRIVE_MS), DCOMM_OK);
}

void ctx_init(rank_ctx_t *ctx, int rank, int size)
{
    int npeers = 0;

    memset(ctx, 0, sizeof(*ctx));
    ctx->rank = rank;
    ctx->size = size;
    ctx->wait_fd = -1;
    for (int r = 0; r < size; r++) {
        ctx->host_of[r] = r % 2;
        ctx->local_rank_of[r] = r / 2;
        if (r != rank) {
            ctx->peers[npeers++] = r;
        }
    }
    ctx->topo = (dc_topo_t){.rank = rank, .size = size, .nhosts = size > 1 ? 2 : 1,
                            .host_of = ctx->host_of, .local_rank_of = ctx->local_rank_of,
                            .local_size = (size + 1 - rank % 2) / 2, .ncores = 2};
    ctx->boot = (dc_bootstrap_t){.topo = &ctx->topo, .store = ctx->store,
                                 .secret = test_secret, .ifname = NULL,
                                 .local_addr = "127.0.0.1", .timeout_ms = TIMEOUT_MS,
                                 .peers = ctx->peers, .npeers = npeers};
}

static void child_main(const test_spec_t *spec, int rank)
{
    rank_ctx_t ctx;
    dc_store_t *store = NULL;

    cur_rank = rank;
    dc_log_set_rank(rank);
    if (dc_filestore_open(store_dir, &store) != DCOMM_OK) {
        child_fail(__LINE__, "cannot open store %s", store_dir);
    }
    ctx_init(&ctx, rank, spec->nranks);
    ctx.store = store;
    ctx.boot.store = store;
    ctx.boot.tcp_encrypt = (int)((spec->encrypt >> rank) & 1u);
    if (rank < spec->nranks) {
        CHECK_EQ(tcp->open(&ctx.boot, &ctx.tp), DCOMM_OK);
        CHECK_EQ(tcp->wait_fd(ctx.tp, &ctx.wait_fd), DCOMM_OK);
        CHECK(ctx.wait_fd >= 0);
        if (!spec->manual_connect) {
            connect_all(&ctx);
        }
    }
    spec->fn(&ctx);
    if (ctx.tp != NULL) {
        tcp->close(ctx.tp);
    }
    store->ops->close(store);
    exit(0);
}

/* ---- parent side ------------------------------------------------------------ */

void remove_store_dir(void)
{
    DIR *d = opendir(store_dir);
    struct dirent *e;
    char path[PATH_MAX + 300];

    if (d == NULL) {
        return;
    }
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            snprintf(path, sizeof(path), "%s/%s", store_dir, e->d_name);
            unlink(path);
        }
    }
    closedir(d);
    rmdir(store_dir);
}

void run_procs(const test_spec_t *spec)
{
    int nprocs = spec->nranks + spec->nextra, status[MAX_PROCS], left = nprocs;
    pid_t pids[MAX_PROCS];
    uint64_t deadline = dc_deadline_ms(CHILDREN_MS);

    assert_true(nprocs <= MAX_PROCS);
    snprintf(store_dir, sizeof(store_dir), "/tmp/dcomm-test-tcp-XXXXXX");
    assert_non_null(mkdtemp(store_dir));
    fflush(NULL);
    for (int i = 0; i < nprocs; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            child_main(spec, i);
        }
    }
    while (left > 0) {
        int st;
        pid_t pid = waitpid(-1, &st, WNOHANG);

        if (pid > 0) {
            for (int i = 0; i < nprocs; i++) {
                if (pids[i] == pid) {
                    status[i] = st;
                    pids[i] = -1;
                    left--;
                }
            }
            continue;
        }
        if (dc_now_ns() >= deadline) {
            for (int i = 0; i < nprocs; i++) {
                if (pids[i] > 0) {
                    fprintf(stderr, "test_tcp: process %d hangs; killing it\n", i);
                    kill(pids[i], SIGKILL);
                }
            }
            deadline = UINT64_MAX;
        }
        usleep(10000);
    }
    remove_store_dir();
    for (int i = 0; i < nprocs; i++) {
        if (i == spec->killed_rank) {
            assert_true(WIFSIGNALED(status[i]) && WTERMSIG(status[i]) == SIGKILL);
        } else {
            if (!WIFEXITED(status[i]) || WEXITSTATUS(status[i]) != 0) {
                fprintf(stderr, "test_tcp: process %d ended with status 0x%x\n", i, status[i]);
            }
            assert_true(WIFEXITED(status[i]) && WEXITSTATUS(status[i]) == 0);
        }
    }
}


int raw_connect(rank_ctx_t *ctx, int target)
{
    char key[32], text[64] = {0};
    size_t len;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    int fd;
    char *colon;

    snprintf(key, sizeof(key), DC_TCP_KEY_FMT, target);
    CHECK_EQ(dc_store_get(ctx->store, key, text, sizeof(text) - 1, &len, DRIVE_MS), DCOMM_OK);
    colon = strrchr(text, ':');
    CHECK(colon != NULL);
    *colon = '\0';
    CHECK(inet_pton(AF_INET, text, &sa.sin_addr) == 1);
    sa.sin_port = htons((uint16_t)atoi(colon + 1));
    fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0);
    CHECK(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    return fd;
}

long read_until_closed(int fd, uint8_t *buf, size_t cap, int timeout_ms)
{
    uint64_t deadline = dc_deadline_ms(timeout_ms);
    size_t got = 0;
    uint8_t sink[256];

    while (dc_now_ns() < deadline) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        ssize_t n;

        if (poll(&pfd, 1, 100) <= 0) {
            continue;
        }
        n = got < cap ? recv(fd, buf + got, cap - got, 0) : recv(fd, sink, sizeof(sink), 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET)) {
            return (long)got;
        }
        if (n > 0 && got < cap) {
            got += (size_t)n;
        }
    }
    return -1;
}

void forge_answer_flags(const uint8_t *hello, const uint8_t *secret, uint32_t claimed,
                        uint32_t target, uint32_t flags, uint8_t answer[DC_TCP_ANSWER_LEN])
{
    dc_tcp_put_u32(answer, DC_TCP_MAGIC);
    dc_tcp_put_u32(answer + 4, claimed);
    dc_tcp_put_u32(answer + 8, target);
    dc_tcp_put_u32(answer + 12, flags);
    dc_auth_random(answer + 16, DC_AUTH_NONCE_LEN);
    dc_auth_mac(secret, DC_TCP_LABEL_CLIENT, hello + 16, DC_AUTH_NONCE_LEN, answer,
                16 + DC_AUTH_NONCE_LEN, answer + 16 + DC_AUTH_NONCE_LEN);
}

void forge_answer(const uint8_t *hello, const uint8_t *secret, uint32_t claimed,
                  uint32_t target, uint8_t answer[DC_TCP_ANSWER_LEN])
{
    forge_answer_flags(hello, secret, claimed, target, 0, answer);
}
