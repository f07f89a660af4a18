/*
 * Tests of the tcp transport with real processes: each test forks 2-4 ranks that
 * meet through a directory store on loopback, plus hostile clients and a rank
 * killed mid-job. Children report failure through their exit status.
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

#include "auth.h"
#include "log.h"
#include "store.h"
#include "tcp/tcp.h"
#include "dc_time.h"
#include "transport.h"

#define MAX_PROCS     8
#define TIMEOUT_MS    20000 /* the transport's deadline for set-up */
#define DRIVE_MS      30000 /* how long a child drives requests before failing */
#define CHILDREN_MS   90000 /* how long the parent waits for all children */
#define BIG           (64u << 20)

static const dc_transport_ops_t *const tcp = &dc_transport_tcp_ops;

static const uint8_t test_secret[DC_AUTH_SECRET_LEN] = {
    0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00,
    0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10};

typedef struct rank_ctx {
    int rank, size;       /* rank >= size: a helper process without transport */
    dc_store_t *store;
    dc_transport_t *tp;
    dc_endpoint_t *eps[MAX_PROCS];
    int wait_fd;
    int host_of[MAX_PROCS], local_rank_of[MAX_PROCS], peers[MAX_PROCS];
    dc_topo_t topo;
    dc_bootstrap_t boot;
} rank_ctx_t;

typedef struct test_spec {
    int nranks;
    int nextra;          /* helper processes, ranks nranks.. */
    int manual_connect;  /* fn connects itself */
    int killed_rank;     /* expected to die of SIGKILL; -1: none */
    unsigned encrypt;    /* bit r: rank r has DCOMM_TCP_ENCRYPT on */
    void (*fn)(rank_ctx_t *ctx);
} test_spec_t;

static char store_dir[PATH_MAX];
static int cur_rank = -1;

/* ---- child-side helpers ---------------------------------------------------- */

static void child_fail(int line, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "test_tcp: rank %d: check failed at line %d: ", cur_rank, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    fflush(stderr);
    _exit(3);
}

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            child_fail(__LINE__, "%s (last error: %s)", #cond, dc_error_get());            \
        }                                                                                  \
    } while (0)

#define CHECK_EQ(a, b)                                                                     \
    do {                                                                                   \
        long long va_ = (long long)(a), vb_ = (long long)(b);                              \
        if (va_ != vb_) {                                                                  \
            child_fail(__LINE__, "%s == %lld, expected %s == %lld (last error: %s)", #a,   \
                       va_, #b, vb_, dc_error_get());                                      \
        }                                                                                  \
    } while (0)

/* Progress until every request is complete; sleeps on the wait fd meanwhile.
 * Returns 0 when all completed, -1 at the deadline. */
static int drive_for(rank_ctx_t *ctx, dc_request_t *reqs, int n, int timeout_ms)
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

static void drive(rank_ctx_t *ctx, dc_request_t *reqs, int n)
{
    CHECK(drive_for(ctx, reqs, n, DRIVE_MS) == 0);
}

static uint8_t pattern(int src, size_t size, size_t i)
{
    return (uint8_t)(src * 131 + size * 7 + i + (i >> 8) * 17 + (i >> 16) * 3);
}

static void fill(uint8_t *buf, int src, size_t size)
{
    for (size_t i = 0; i < size; i++) {
        buf[i] = pattern(src, size, i);
    }
}

static void verify(const uint8_t *buf, int src, size_t size)
{
    for (size_t i = 0; i < size; i++) {
        if (buf[i] != pattern(src, size, i)) {
            child_fail(__LINE__, "byte %zu of %zu from rank %d: got %u, expected %u", i, size,
                       src, buf[i], pattern(src, size, i));
        }
    }
}

static void connect_peer(rank_ctx_t *ctx, int peer)
{
    CHECK_EQ(tcp->connect(ctx->tp, peer, &ctx->eps[peer]), DCOMM_OK);
    CHECK(ctx->eps[peer] != NULL && ctx->eps[peer]->peer == peer);
}

static void connect_all(rank_ctx_t *ctx)
{
    for (int peer = 0; peer < ctx->size; peer++) {
        if (peer != ctx->rank) {
            connect_peer(ctx, peer);
        }
    }
}

static void store_flag(rank_ctx_t *ctx, const char *key)
{
    CHECK_EQ(dc_store_set(ctx->store, key, "1", 1), DCOMM_OK);
}

static void store_wait(rank_ctx_t *ctx, const char *key)
{
    char val[8];
    size_t len;

    CHECK_EQ(dc_store_get(ctx->store, key, val, sizeof(val), &len, DRIVE_MS), DCOMM_OK);
}

/* A made-up topology: ranks alternate between two "hosts". */
static void ctx_init(rank_ctx_t *ctx, int rank, int size)
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

static void remove_store_dir(void)
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

/* Forks the ranks and helpers, waits for all of them (killing them at the
 * deadline) and checks how each ended. */
static void run_procs(const test_spec_t *spec)
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

/* ---- single-process tests -------------------------------------------------- */

static void test_query(void **state)
{
    dc_transport_attr_t attr;

    (void)state;
    assert_int_equal(tcp->query(NULL, &attr), DCOMM_OK);
    assert_int_equal(attr.usable, 1);
    assert_int_equal(attr.same_host_only, 0);
    assert_true(attr.priority > 0 && attr.priority < 100);
    assert_true(attr.latency_us > 0 && attr.bandwidth_gbs > 0);
    assert_string_equal(tcp->name, "tcp");
    assert_int_equal(tcp->abi_version, DC_TRANSPORT_ABI_VERSION);
}

static void test_open_addresses(void **state)
{
    rank_ctx_t ctx;
    dc_store_t *store;
    dc_transport_t *tp = NULL;
    char val[64] = {0};
    size_t len;

    (void)state;
    snprintf(store_dir, sizeof(store_dir), "/tmp/dcomm-test-tcp-XXXXXX");
    assert_non_null(mkdtemp(store_dir));
    assert_int_equal(dc_filestore_open(store_dir, &store), DCOMM_OK);
    ctx_init(&ctx, 1, 2);
    ctx.boot.store = store;

    /* Bad input is refused with a clear status. */
    ctx.boot.local_addr = "not-an-address";
    assert_int_equal(tcp->open(&ctx.boot, &tp), DCOMM_ERR_INVALID_ARG);
    ctx.boot.local_addr = NULL;
    ctx.boot.ifname = "no-such-if0";
    assert_int_equal(tcp->open(&ctx.boot, &tp), DCOMM_ERR_INVALID_ARG);
    assert_non_null(strstr(dc_error_get(), "no-such-if0"));
    ctx.boot.ifname = NULL;
    ctx.boot.store = NULL;
    assert_int_equal(tcp->open(&ctx.boot, &tp), DCOMM_ERR_INVALID_ARG);
    ctx.boot.store = store;
    ctx.peers[0] = 1; /* itself */
    assert_int_equal(tcp->open(&ctx.boot, &tp), DCOMM_ERR_INVALID_ARG);
    ctx.peers[0] = 0;
    assert_null(tp);

    /* By interface name: lo is 127.0.0.1, published under tcp/<rank>. */
    ctx.boot.ifname = "lo";
    assert_int_equal(tcp->open(&ctx.boot, &tp), DCOMM_OK);
    assert_int_equal(dc_store_get(store, "tcp/1", val, sizeof(val) - 1, &len, 0), DCOMM_OK);
    assert_true(len < sizeof(val));
    assert_memory_equal(val, "127.0.0.1:", 10);
    assert_true(atoi(val + 10) > 0);
    /* A rank it does not serve. */
    dc_endpoint_t *ep = NULL;
    assert_int_equal(tcp->connect(tp, 5, &ep), DCOMM_ERR_INVALID_ARG);
    tcp->close(tp);
    store->ops->close(store);
    remove_store_dir();
}

/* ---- multi-process tests ---------------------------------------------------- */

static const size_t sizes[] = {0, 1, 65537, BIG};
#define NSIZES ((int)DC_ARRAY_SIZE(sizes))

/* Both ranks send every size to each other at once; then rank 0 streams 64 MiB
 * messages to rank 1 for a bandwidth figure. */
static void sizes_fn(rank_ctx_t *ctx)
{
    int peer = 1 - ctx->rank;
    dc_request_t reqs[2 * NSIZES];
    uint8_t *sbuf[NSIZES], *rbuf[NSIZES];

    for (int i = 0; i < NSIZES; i++) {
        sbuf[i] = malloc(DC_MAX(sizes[i], 1));
        rbuf[i] = malloc(DC_MAX(sizes[i], 1));
        CHECK(sbuf[i] != NULL && rbuf[i] != NULL);
        fill(sbuf[i], ctx->rank, sizes[i]);
        memset(rbuf[i], 0, DC_MAX(sizes[i], 1));
    }
    for (int i = 0; i < NSIZES; i++) {
        CHECK_EQ(tcp->irecv(ctx->eps[peer], rbuf[i], sizes[i], 100 + i, &reqs[i]), DCOMM_OK);
        CHECK_EQ(tcp->isend(ctx->eps[peer], sbuf[i], sizes[i], 100 + i, &reqs[NSIZES + i]),
                 DCOMM_OK);
    }
    /* Nothing completes outside progress(). */
    for (int i = 0; i < 2 * NSIZES; i++) {
        CHECK_EQ(reqs[i].status, DCOMM_INPROGRESS);
    }
    drive(ctx, reqs, 2 * NSIZES);
    for (int i = 0; i < NSIZES; i++) {
        CHECK_EQ(reqs[i].status, DCOMM_OK);
        CHECK_EQ(reqs[NSIZES + i].status, DCOMM_OK);
        CHECK_EQ(reqs[i].len, sizes[i]);
        verify(rbuf[i], peer, sizes[i]);
    }

    enum { REPS = 4 };
    dc_request_t bw[REPS + 1];
    uint8_t *big = ctx->rank == 0 ? sbuf[NSIZES - 1] : rbuf[NSIZES - 1];
    uint64_t t0 = dc_now_ns();

    for (int i = 0; i < REPS; i++) {
        if (ctx->rank == 0) {
            CHECK_EQ(tcp->isend(ctx->eps[1], big, BIG, 7, &bw[i]), DCOMM_OK);
        } else {
            CHECK_EQ(tcp->irecv(ctx->eps[0], big, BIG, 7, &bw[i]), DCOMM_OK);
        }
    }
    /* A zero-byte acknowledgement closes the timing on rank 0. */
    if (ctx->rank == 0) {
        CHECK_EQ(tcp->irecv(ctx->eps[1], NULL, 0, 8, &bw[REPS]), DCOMM_OK);
    } else {
        CHECK_EQ(tcp->isend(ctx->eps[0], NULL, 0, 8, &bw[REPS]), DCOMM_OK);
    }
    drive(ctx, bw, REPS + 1);
    for (int i = 0; i <= REPS; i++) {
        CHECK_EQ(bw[i].status, DCOMM_OK);
    }
    if (ctx->rank == 0) {
        double s = (double)(dc_now_ns() - t0) / 1e9;
        printf("[          ] tcp loopback%s: %d x 64 MiB in %.3f s = %.2f GB/s\n",
               ctx->boot.tcp_encrypt ? " (encrypted)" : "", REPS, s,
               REPS * (double)BIG / s / 1e9);
        fflush(stdout);
    } else {
        verify(big, 0, BIG);
    }
    for (int i = 0; i < NSIZES; i++) {
        free(sbuf[i]);
        free(rbuf[i]);
    }
}

static void test_sizes(void **state)
{
    test_spec_t spec = {.nranks = 2, .killed_rank = -1, .fn = sizes_fn};

    (void)state;
    run_procs(&spec);
}

/* The same over encrypted streams: 0 B to 64 MiB both ways at once, records
 * that straddle messages and messages that span a thousand records. */
static void test_sizes_encrypted(void **state)
{
    test_spec_t spec = {.nranks = 2, .killed_rank = -1, .encrypt = 3, .fn = sizes_fn};

    (void)state;
    run_procs(&spec);
}

/* Every rank sends many small messages with distinct tags to every other rank;
 * a tag or length out of order would fail the receive. */
enum { NSMALL = 1500, SMALL_MAX = 97 };

static void many_small_fn(rank_ctx_t *ctx)
{
    int npeers = ctx->size - 1, n = 2 * NSMALL * npeers, k = 0;
    dc_request_t *reqs = calloc((size_t)n, sizeof(*reqs));
    uint8_t *sbuf = malloc(SMALL_MAX), *rbuf = malloc((size_t)NSMALL * npeers * SMALL_MAX);

    CHECK(reqs != NULL && sbuf != NULL && rbuf != NULL);
    for (int i = 0; i < SMALL_MAX; i++) {
        sbuf[i] = (uint8_t)(ctx->rank * 50 + i);
    }
    /* Half the receives before the sends, half after some traffic. */
    for (int half = 0; half < 2; half++) {
        for (int p = 0, pi = 0; p < ctx->size; p++) {
            if (p == ctx->rank) {
                continue;
            }
            for (int i = half * NSMALL / 2; i < (half + 1) * NSMALL / 2; i++) {
                uint8_t *dst = rbuf + ((size_t)pi * NSMALL + i) * SMALL_MAX;
                CHECK_EQ(tcp->irecv(ctx->eps[p], dst, SMALL_MAX, ((uint64_t)i << 8) | p,
                                    &reqs[k++]),
                         DCOMM_OK);
            }
            pi++;
        }
        if (half == 0) {
            for (int p = 0; p < ctx->size; p++) {
                for (int i = 0; i < NSMALL && p != ctx->rank; i++) {
                    CHECK_EQ(tcp->isend(ctx->eps[p], sbuf, (size_t)i % SMALL_MAX,
                                        ((uint64_t)i << 8) | (uint64_t)ctx->rank, &reqs[k++]),
                             DCOMM_OK);
                }
            }
            for (int i = 0; i < 50; i++) {
                tcp->progress(ctx->tp);
            }
        }
    }
    CHECK_EQ(k, n);
    drive(ctx, reqs, n);
    for (int i = 0; i < n; i++) {
        CHECK_EQ(reqs[i].status, DCOMM_OK);
        if (reqs[i].buf != sbuf) { /* a receive */
            size_t off = (size_t)((uint8_t *)reqs[i].buf - rbuf) / SMALL_MAX;
            int idx = (int)(off % NSMALL), src = (int)(reqs[i].tag & 0xff);

            CHECK_EQ(reqs[i].tag >> 8, idx);
            CHECK_EQ(reqs[i].len, (size_t)idx % SMALL_MAX);
            for (size_t j = 0; j < reqs[i].len; j++) {
                CHECK_EQ(((uint8_t *)reqs[i].buf)[j], (uint8_t)(src * 50 + j));
            }
        }
    }
    free(reqs);
    free(sbuf);
    free(rbuf);
}

static void test_many_small(void **state)
{
    test_spec_t spec = {.nranks = 4, .killed_rank = -1, .fn = many_small_fn};

    (void)state;
    run_procs(&spec);
}

/* Many small messages gathered into shared records, 4 ranks, encrypted. */
static void test_many_small_encrypted(void **state)
{
    test_spec_t spec = {.nranks = 4, .killed_rank = -1, .encrypt = 0xf, .fn = many_small_fn};

    (void)state;
    run_procs(&spec);
}

/* Rank 1 posts its receives late: until then its transport must not read, so
 * rank 0's big send stays incomplete (TCP flow control, no buffering). */
static void late_recv_fn(rank_ctx_t *ctx)
{
    uint8_t *buf = malloc(BIG), small[3] = {0};
    dc_request_t reqs[2];

    CHECK(buf != NULL);
    if (ctx->rank == 0) {
        fill(buf, 0, BIG);
        CHECK_EQ(tcp->isend(ctx->eps[1], buf, BIG, 1, &reqs[0]), DCOMM_OK);
        CHECK_EQ(tcp->isend(ctx->eps[1], "abc", 3, 2, &reqs[1]), DCOMM_OK);
        CHECK(drive_for(ctx, reqs, 1, 400) < 0);
        CHECK_EQ(reqs[0].status, DCOMM_INPROGRESS);
        store_flag(ctx, "late/checked");
        drive(ctx, reqs, 2);
    } else {
        uint64_t until = dc_deadline_ms(300);

        while (dc_now_ns() < until) {
            CHECK_EQ(tcp->progress(ctx->tp), 0);
            usleep(1000);
        }
        store_wait(ctx, "late/checked");
        memset(buf, 0, BIG);
        CHECK_EQ(tcp->irecv(ctx->eps[0], buf, BIG, 1, &reqs[0]), DCOMM_OK);
        CHECK_EQ(tcp->irecv(ctx->eps[0], small, sizeof(small), 2, &reqs[1]), DCOMM_OK);
        drive(ctx, reqs, 2);
        verify(buf, 0, BIG);
        CHECK(memcmp(small, "abc", 3) == 0);
    }
    CHECK_EQ(reqs[0].status, DCOMM_OK);
    CHECK_EQ(reqs[1].status, DCOMM_OK);
    free(buf);
}

static void test_late_recv(void **state)
{
    test_spec_t spec = {.nranks = 2, .killed_rank = -1, .fn = late_recv_fn};

    (void)state;
    run_procs(&spec);
}

/* Mismatched tags and too-long messages fail their receive with
 * DCOMM_ERR_INTERNAL; the stream stays in step for the next message. Closing
 * with a receive pending completes it with DCOMM_ERR_SHUT_DOWN. */
static void mismatch_fn(rank_ctx_t *ctx)
{
    static const struct {
        uint64_t send_tag, recv_tag;
        size_t send_len, recv_len;
        dc_status_t expect;
    } cases[] = {
        {5, 4, 10, 10, DCOMM_ERR_INTERNAL},     /* wrong tag */
        {6, 6, 100, 50, DCOMM_ERR_INTERNAL},    /* too long */
        {7, 8, 0, 0, DCOMM_ERR_INTERNAL},       /* zero bytes still carry their tag */
        {9, 9, 8, 64, DCOMM_OK},                /* shorter than posted */
        {10, 11, 200000, 10, DCOMM_ERR_INTERNAL},
        {12, 12, 70000, 70000, DCOMM_OK},
        {13, 13, 0, 16, DCOMM_OK},
    };
    enum { N = (int)DC_ARRAY_SIZE(cases) };
    dc_request_t reqs[N], extra;
    uint8_t *bufs[N];

    for (int i = 0; i < N; i++) {
        size_t len = ctx->rank == 0 ? cases[i].send_len : cases[i].recv_len;

        bufs[i] = calloc(1, DC_MAX(len, 1));
        CHECK(bufs[i] != NULL);
        if (ctx->rank == 0) {
            fill(bufs[i], 0, len);
            CHECK_EQ(tcp->isend(ctx->eps[1], bufs[i], len, cases[i].send_tag, &reqs[i]),
                     DCOMM_OK);
        } else {
            CHECK_EQ(tcp->irecv(ctx->eps[0], bufs[i], len, cases[i].recv_tag, &reqs[i]),
                     DCOMM_OK);
        }
    }
    drive(ctx, reqs, N);
    for (int i = 0; i < N; i++) {
        if (ctx->rank == 0) {
            CHECK_EQ(reqs[i].status, DCOMM_OK); /* the sender cannot know */
            continue;
        }
        CHECK_EQ(reqs[i].status, cases[i].expect);
        if (cases[i].expect == DCOMM_OK) {
            CHECK_EQ(reqs[i].len, cases[i].send_len);
            verify(bufs[i], 0, cases[i].send_len);
        }
    }
    if (ctx->rank == 1) {
        CHECK_EQ(tcp->irecv(ctx->eps[0], bufs[0], 1, 99, &extra), DCOMM_OK);
        tcp->progress(ctx->tp);
        CHECK_EQ(extra.status, DCOMM_INPROGRESS);
        tcp->close(ctx->tp);
        ctx->tp = NULL;
        CHECK_EQ(extra.status, DCOMM_ERR_SHUT_DOWN);
        store_flag(ctx, "mismatch/closed");
    } else {
        store_wait(ctx, "mismatch/closed"); /* else rank 1 sees us leave first */
    }
    for (int i = 0; i < N; i++) {
        free(bufs[i]);
    }
}

static void test_mismatch(void **state)
{
    test_spec_t spec = {.nranks = 2, .killed_rank = -1, .fn = mismatch_fn};

    (void)state;
    run_procs(&spec);
    /* Mismatched messages are drained record by record when encrypted. */
    spec.encrypt = 3;
    run_procs(&spec);
}

/* ---- hostile clients ---------------------------------------------------------- */

static int raw_connect(rank_ctx_t *ctx, int target)
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

/* Reads until the server closes; returns the bytes it sent, -1 if it never
 * closed within timeout_ms. */
static long read_until_closed(int fd, uint8_t *buf, size_t cap, int timeout_ms)
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

/* The answer a client sends, signed with `secret`, claiming `claimed` rank. */
static void forge_answer_flags(const uint8_t *hello, const uint8_t *secret, uint32_t claimed,
                               uint32_t target, uint32_t flags,
                               uint8_t answer[DC_TCP_ANSWER_LEN])
{
    dc_tcp_put_u32(answer, DC_TCP_MAGIC);
    dc_tcp_put_u32(answer + 4, claimed);
    dc_tcp_put_u32(answer + 8, target);
    dc_tcp_put_u32(answer + 12, flags);
    dc_auth_random(answer + 16, DC_AUTH_NONCE_LEN);
    dc_auth_mac(secret, DC_TCP_LABEL_CLIENT, hello + 16, DC_AUTH_NONCE_LEN, answer,
                16 + DC_AUTH_NONCE_LEN, answer + 16 + DC_AUTH_NONCE_LEN);
}

static void forge_answer(const uint8_t *hello, const uint8_t *secret, uint32_t claimed,
                         uint32_t target, uint8_t answer[DC_TCP_ANSWER_LEN])
{
    forge_answer_flags(hello, secret, claimed, target, 0, answer);
}

static void rogue(rank_ctx_t *ctx)
{
    const int target = 2;
    uint8_t hello[DC_TCP_HELLO_LEN], answer[DC_TCP_ANSWER_LEN], junk[200], wrong[32];
    int fd;

    /* Garbage: the server says hello, then drops us without a proof. */
    fd = raw_connect(ctx, target);
    memset(junk, 0xab, sizeof(junk));
    CHECK(send(fd, junk, sizeof(junk), MSG_NOSIGNAL) == (ssize_t)sizeof(junk));
    CHECK(read_until_closed(fd, hello, sizeof(hello), 5000) >= 0);
    close(fd);

    /* Wrong secret, well-formed otherwise. */
    memset(wrong, 0x5a, sizeof(wrong));
    fd = raw_connect(ctx, target);
    CHECK(recv(fd, hello, sizeof(hello), MSG_WAITALL) == (ssize_t)sizeof(hello));
    CHECK_EQ(dc_tcp_get_u32(hello + 8), target);
    forge_answer(hello, wrong, 0, target, answer);
    CHECK(send(fd, answer, sizeof(answer), MSG_NOSIGNAL) == (ssize_t)sizeof(answer));
    CHECK_EQ(read_until_closed(fd, junk, sizeof(junk), 5000), 0);
    close(fd);

    /* Right secret, but a rank that does not connect to the target. */
    fd = raw_connect(ctx, target);
    CHECK(recv(fd, hello, sizeof(hello), MSG_WAITALL) == (ssize_t)sizeof(hello));
    forge_answer(hello, test_secret, 7, target, answer);
    CHECK(send(fd, answer, sizeof(answer), MSG_NOSIGNAL) == (ssize_t)sizeof(answer));
    CHECK_EQ(read_until_closed(fd, junk, sizeof(junk), 5000), 0);
    close(fd);

    /* Silence: dropped after the handshake deadline. */
    uint64_t t0 = dc_now_ns();
    fd = raw_connect(ctx, target);
    CHECK(recv(fd, hello, sizeof(hello), MSG_WAITALL) == (ssize_t)sizeof(hello));
    CHECK_EQ(read_until_closed(fd, junk, sizeof(junk), 3 * DC_TCP_HANDSHAKE_MS), 0);
    CHECK(dc_now_ns() - t0 >= (DC_TCP_HANDSHAKE_MS - 200) * 1000000ull);
    close(fd);

    store_flag(ctx, "rogue/done");
}

/* Rank 2 accepts; the rogue has its go first. Rank 1 reaches rank 2 before
 * rank 0 does, so rank 2 gets a connection before asking for it. */
static void bad_clients_fn(rank_ctx_t *ctx)
{
    dc_request_t reqs[2 * MAX_PROCS];
    int vals[MAX_PROCS], me = 1000 + ctx->rank, n = 0;

    if (ctx->rank >= ctx->size) {
        rogue(ctx);
        return;
    }
    if (ctx->rank == 0) {
        store_wait(ctx, "rogue/done");
        connect_peer(ctx, 1);
        store_wait(ctx, "bad/r1_at_r2");
        connect_peer(ctx, 2);
    } else if (ctx->rank == 1) {
        store_wait(ctx, "rogue/done");
        connect_peer(ctx, 0);
        connect_peer(ctx, 2);
        store_flag(ctx, "bad/r1_at_r2");
    } else {
        connect_all(ctx);
    }
    for (int p = 0; p < ctx->size; p++) {
        if (p != ctx->rank) {
            CHECK_EQ(tcp->irecv(ctx->eps[p], &vals[p], sizeof(int), 3, &reqs[n++]), DCOMM_OK);
            CHECK_EQ(tcp->isend(ctx->eps[p], &me, sizeof(int), 3, &reqs[n++]), DCOMM_OK);
        }
    }
    drive(ctx, reqs, n);
    for (int p = 0; p < ctx->size; p++) {
        if (p != ctx->rank) {
            CHECK_EQ(vals[p], 1000 + p);
        }
    }
}

static void test_bad_clients(void **state)
{
    test_spec_t spec = {.nranks = 3, .nextra = 1, .manual_connect = 1, .killed_rank = -1,
                        .fn = bad_clients_fn};

    (void)state;
    run_procs(&spec);
}

/* ---- silent strangers ------------------------------------------------------------ */

/* Six strangers connect to rank 1 and say nothing, ahead of rank 0. Handshakes
 * are served side by side: rank 0 gets through at once, not after six 2 s
 * handshake deadlines one after the other (12 s before the fix). */
enum { NSTRANGERS = 6 };

static void strangers_fn(rank_ctx_t *ctx)
{
    int fds[NSTRANGERS];

    if (ctx->rank >= ctx->size) {
        for (int i = 0; i < NSTRANGERS; i++) {
            fds[i] = raw_connect(ctx, 1);
        }
        dc_sleep_ns(100000000ull); /* in rank 1's backlog before rank 0 */
        store_flag(ctx, "strangers/open");
        store_wait(ctx, "strangers/done");
        for (int i = 0; i < NSTRANGERS; i++) {
            close(fds[i]);
        }
        return;
    }
    dc_request_t reqs[2];
    int mine = 7 + ctx->rank, theirs = 0;

    store_wait(ctx, "strangers/open");
    uint64_t t0 = dc_now_ns();
    connect_all(ctx);
    CHECK_EQ(tcp->irecv(ctx->eps[1 - ctx->rank], &theirs, sizeof(theirs), 4, &reqs[0]),
             DCOMM_OK);
    CHECK_EQ(tcp->isend(ctx->eps[1 - ctx->rank], &mine, sizeof(mine), 4, &reqs[1]), DCOMM_OK);
    drive(ctx, reqs, 2);
    uint64_t ms = (dc_now_ns() - t0) / 1000000ull;
    CHECK_EQ(theirs, 7 + (1 - ctx->rank));
    if (ms >= 1500) {
        child_fail(__LINE__, "connecting took %llu ms behind %d silent strangers",
                   (unsigned long long)ms, NSTRANGERS);
    }
    if (ctx->rank == 0) {
        store_flag(ctx, "strangers/done");
    }
}

static void test_silent_strangers(void **state)
{
    test_spec_t spec = {.nranks = 2, .nextra = 1, .manual_connect = 1, .killed_rank = -1,
                        .fn = strangers_fn};

    (void)state;
    run_procs(&spec);
}

/* ---- lost peer ------------------------------------------------------------------ */

/* Rank 1 dies of SIGKILL: rank 0's pending send and receive to it fail with
 * DCOMM_ERR_PEER_LOST naming rank 1, so does check(), and later requests too;
 * ranks 0 and 2 keep working. */
static void killed_fn(rank_ctx_t *ctx)
{
    dc_request_t reqs[3];
    int one = 1, got = 0;

    if (ctx->rank == 1) {
        CHECK_EQ(tcp->isend(ctx->eps[0], &one, sizeof(one), 1, &reqs[0]), DCOMM_OK);
        drive(ctx, reqs, 1);
        store_wait(ctx, "kill/posted");
        raise(SIGKILL);
        child_fail(__LINE__, "still alive");
    }
    if (ctx->rank == 2) {
        CHECK_EQ(tcp->irecv(ctx->eps[0], &got, sizeof(got), 2, &reqs[0]), DCOMM_OK);
        drive(ctx, reqs, 1);
        CHECK_EQ(got, 42);
        return;
    }
    uint8_t *big = calloc(1, BIG);
    CHECK(big != NULL);
    CHECK_EQ(tcp->irecv(ctx->eps[1], &got, sizeof(got), 1, &reqs[0]), DCOMM_OK);
    drive(ctx, reqs, 1);
    CHECK_EQ(got, 1);
    CHECK_EQ(tcp->irecv(ctx->eps[1], &got, sizeof(got), 1, &reqs[0]), DCOMM_OK);
    CHECK_EQ(tcp->isend(ctx->eps[1], big, BIG, 1, &reqs[1]), DCOMM_OK);
    tcp->progress(ctx->tp);
    store_flag(ctx, "kill/posted");
    drive(ctx, reqs, 2);
    CHECK_EQ(reqs[0].status, DCOMM_ERR_PEER_LOST);
    CHECK_EQ(reqs[1].status, DCOMM_ERR_PEER_LOST);
    CHECK(strstr(dc_error_get(), "rank 1") != NULL);
    CHECK_EQ(tcp->check(ctx->tp), DCOMM_ERR_PEER_LOST);
    CHECK(strstr(dc_error_get(), "rank 1") != NULL);
    CHECK_EQ(tcp->isend(ctx->eps[1], &one, sizeof(one), 1, &reqs[0]), DCOMM_OK);
    drive(ctx, reqs, 1);
    CHECK_EQ(reqs[0].status, DCOMM_ERR_PEER_LOST);
    /* The other peer is unaffected. */
    got = 42;
    CHECK_EQ(tcp->isend(ctx->eps[2], &got, sizeof(got), 2, &reqs[0]), DCOMM_OK);
    drive(ctx, reqs, 1);
    CHECK_EQ(reqs[0].status, DCOMM_OK);
    free(big);
}

static void test_peer_killed(void **state)
{
    test_spec_t spec = {.nranks = 3, .killed_rank = 1, .fn = killed_fn};

    (void)state;
    run_procs(&spec);
}

/* ---- encrypted streams ------------------------------------------------------------ */

/* Records on their own: round trip, every single-byte change anywhere in a
 * record fails, so do replay, reordering and another key; a partial record
 * asks for more; lengths out of range are refused before anything is read. */
static void records_check(int aes)
{
    static dc_tcp_crypt_t tx, rx, other, wrong_cipher;
    static uint8_t plain[DC_TCP_REC_MAX], rec[3][DC_TCP_REC_MAX + DC_TCP_REC_OVERHEAD];
    static uint8_t out[DC_TCP_REC_MAX], key[DC_AUTH_KEY_LEN];
    size_t lens[3] = {1, 1000, DC_TCP_REC_MAX}, reclen[3], plen, used;

    memset(key, 0x42, sizeof(key));
    dc_tcp_crypt_init(&tx, key, aes);
    dc_tcp_crypt_init(&rx, key, aes);
    dc_tcp_crypt_init(&wrong_cipher, key, !aes);
    assert_int_equal(tx.aes, aes);
    key[0] ^= 1;
    dc_tcp_crypt_init(&other, key, aes);
    for (size_t i = 0; i < sizeof(plain); i++) {
        plain[i] = (uint8_t)(i * 7 + 3);
    }
    for (int i = 0; i < 3; i++) {
        reclen[i] = dc_tcp_record_seal(&tx, plain, lens[i], rec[i]);
        assert_int_equal(reclen[i], lens[i] + DC_TCP_REC_OVERHEAD);
        /* Ciphertext, not the plaintext. */
        assert_true(lens[i] < 16 || memcmp(rec[i] + DC_TCP_REC_HDR, plain, 16) != 0);
    }
    assert_int_equal(tx.seq, 3);

    /* Partial: more needed, nothing consumed. */
    for (size_t avail = 0; avail < reclen[1]; avail += 97) {
        assert_int_equal(dc_tcp_record_open(&rx, rec[1], avail, out, sizeof(out), &plen, &used),
                         0);
    }
    /* Out of order (record 1 first), and another key. */
    assert_int_equal(dc_tcp_record_open(&rx, rec[1], reclen[1], out, sizeof(out), &plen, &used),
                     DCOMM_ERR_AUTH);
    assert_non_null(strstr(dc_error_get(), "failed authentication"));
    assert_int_equal(dc_tcp_record_open(&other, rec[0], reclen[0], out, sizeof(out), &plen,
                                        &used), DCOMM_ERR_AUTH);
    if (dc_tcp_aes_available()) { /* the same key under the other cipher */
        assert_int_equal(dc_tcp_record_open(&wrong_cipher, rec[0], reclen[0], out, sizeof(out),
                                            &plen, &used), DCOMM_ERR_AUTH);
    }
    assert_int_equal(rx.seq, 0);
    /* Every byte of record 0 flipped in turn: never opens (a changed length
     * may also just ask for bytes that never come). */
    for (size_t i = 0; i < reclen[0]; i++) {
        int rc;

        rec[0][i] ^= 0x01;
        rc = dc_tcp_record_open(&rx, rec[0], reclen[0], out, sizeof(out), &plen, &used);
        assert_true(i < DC_TCP_REC_HDR ? rc != 1 && rc <= 0 : rc == DCOMM_ERR_AUTH);
        rec[0][i] ^= 0x01;
    }
    /* Room too small for the plaintext. */
    assert_int_equal(dc_tcp_record_open(&rx, rec[0], reclen[0], out, 0, &plen, &used),
                     DCOMM_ERR_INVALID_ARG);
    /* In order: each opens once; a replay fails. */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(dc_tcp_record_open(&rx, rec[i], reclen[i], out, sizeof(out), &plen,
                                            &used), 1);
        assert_int_equal(plen, lens[i]);
        assert_int_equal(used, reclen[i]);
        assert_memory_equal(out, plain, lens[i]);
    }
    assert_int_equal(dc_tcp_record_open(&rx, rec[2], reclen[2], out, sizeof(out), &plen, &used),
                     DCOMM_ERR_AUTH);
    /* Lengths 0 and over the maximum: refused from the header alone. */
    dc_tcp_put_u32(rec[0], 0);
    assert_int_equal(dc_tcp_record_open(&rx, rec[0], DC_TCP_REC_HDR, out, sizeof(out), &plen,
                                        &used), DCOMM_ERR_AUTH);
    dc_tcp_put_u32(rec[0], DC_TCP_REC_MAX + 1);
    assert_int_equal(dc_tcp_record_open(&rx, rec[0], DC_TCP_REC_HDR, out, sizeof(out), &plen,
                                        &used), DCOMM_ERR_AUTH);
    assert_non_null(strstr(dc_error_get(), "out of range"));
    dc_tcp_put_u32(rec[0], 0xffffffffu);
    assert_int_equal(dc_tcp_record_open(&rx, rec[0], DC_TCP_REC_HDR, out, sizeof(out), &plen,
                                        &used), DCOMM_ERR_AUTH);
}

static void test_records(void **state)
{
    (void)state;
    records_check(0); /* ChaCha20-Poly1305 */
    if (dc_tcp_aes_available()) {
        records_check(1); /* AES-256-GCM */
    } else {
        printf("[          ] no AES-NI: AES-256-GCM records not tested\n");
    }
}

/* One end with DCOMM_TCP_ENCRYPT on, the other off: both fail the handshake
 * with DCOMM_ERR_INVALID_ARG naming the setting and the other rank, whichever
 * side encrypts. */
static void encrypt_mismatch_fn(rank_ctx_t *ctx)
{
    dc_endpoint_t *ep = NULL;
    char want[64];

    CHECK_EQ(tcp->connect(ctx->tp, 1 - ctx->rank, &ep), DCOMM_ERR_INVALID_ARG);
    CHECK(strstr(dc_error_get(), "DCOMM_TCP_ENCRYPT") != NULL);
    snprintf(want, sizeof(want), "rank %d has it", 1 - ctx->rank);
    CHECK(strstr(dc_error_get(), want) != NULL);
}

static void test_encrypt_mismatch(void **state)
{
    test_spec_t spec = {.nranks = 2, .manual_connect = 1, .killed_rank = -1,
                        .fn = encrypt_mismatch_fn};

    (void)state;
    spec.encrypt = 1; /* the client encrypts */
    run_procs(&spec);
    spec.encrypt = 2; /* the server encrypts */
    run_procs(&spec);
}

/* A man in the middle that knows the secret's handshake (here: a client that
 * has the secret, standing in for one that rewrites a real stream) sends rank 1
 * valid records, then a broken one; rank 1 must fail the receive with
 * DCOMM_ERR_AUTH naming rank 0, and never deliver changed bytes. */
typedef enum { TAMPER_FLIP, TAMPER_REPLAY, TAMPER_REORDER, TAMPER_LENGTH, TAMPER_TRUNCATE,
               TAMPER_NCASES } tamper_t;

static tamper_t tamper_case;
static int tamper_aes; /* the client offers AES-256-GCM */
static const char marker[] = "plaintext marker 0123456789";

/* A message {tag, 4-byte value} sealed as one record. */
static size_t seal_msg(dc_tcp_crypt_t *c, uint64_t tag, int32_t value, uint8_t *out)
{
    uint8_t plain[DC_TCP_HDR_LEN + 4];

    dc_tcp_put_u64(plain, tag);
    dc_tcp_put_u64(plain + 8, 4);
    memcpy(plain + DC_TCP_HDR_LEN, &value, 4);
    return dc_tcp_record_seal(c, plain, sizeof(plain), out);
}

static void tamper_client(rank_ctx_t *ctx)
{
    uint8_t hello[DC_TCP_HELLO_LEN], answer[DC_TCP_ANSWER_LEN], proof[DC_TCP_PROOF_LEN];
    uint8_t c2s[DC_AUTH_KEY_LEN], s2c[DC_AUTH_KEY_LEN], rec[3][64], in[256], out[256];
    static dc_tcp_crypt_t tx, rx;
    size_t len[3], got = 0, plen = 0, used = 0;
    int fd = raw_connect(ctx, 1);

    CHECK(recv(fd, hello, sizeof(hello), MSG_WAITALL) == (ssize_t)sizeof(hello));
    CHECK(dc_tcp_get_u32(hello + 12) & DC_TCP_FLAG_ENCRYPT);
    forge_answer_flags(hello, test_secret, 0, 1,
                       DC_TCP_FLAG_ENCRYPT | (tamper_aes ? DC_TCP_FLAG_AESGCM : 0), answer);
    CHECK(send(fd, answer, sizeof(answer), MSG_NOSIGNAL) == (ssize_t)sizeof(answer));
    CHECK(recv(fd, proof, sizeof(proof), MSG_WAITALL) == (ssize_t)sizeof(proof));
    CHECK(dc_auth_verify(test_secret, DC_TCP_LABEL_SERVER, answer + 16, DC_AUTH_NONCE_LEN,
                         hello, sizeof(hello), proof));
    dc_auth_session_keys(test_secret, DC_TCP_LABEL_C2S, DC_TCP_LABEL_S2C, hello, sizeof(hello),
                         answer, sizeof(answer), c2s, s2c);
    dc_tcp_crypt_init(&tx, c2s, tamper_aes);
    dc_tcp_crypt_init(&rx, s2c, tamper_aes);

    /* Rank 1's message arrives sealed under the server-to-client key: the
     * marker is not on the wire, and opens from it. */
    while (plen == 0) {
        ssize_t n = recv(fd, in + got, sizeof(in) - got, 0);
        int rc;

        CHECK(n > 0);
        got += (size_t)n;
        rc = dc_tcp_record_open(&rx, in, got, out, sizeof(out), &plen, &used);
        CHECK(rc >= 0);
    }
    CHECK(memmem(in, got, marker, sizeof(marker) - 1) == NULL);
    CHECK_EQ(plen, DC_TCP_HDR_LEN + sizeof(marker));
    CHECK_EQ(dc_tcp_get_u64(out), 9);
    CHECK(memcmp(out + DC_TCP_HDR_LEN, marker, sizeof(marker)) == 0);

    for (int i = 0; i < 3; i++) {
        len[i] = seal_msg(&tx, 5 + (uint64_t)i, 1000 + i, rec[i]);
    }
    switch (tamper_case) {
    case TAMPER_FLIP:   /* a bit of the second message's value */
        rec[1][DC_TCP_REC_HDR + DC_TCP_HDR_LEN] ^= 0x04;
        break;
    case TAMPER_REPLAY: /* the first record again in place of the second */
        memcpy(rec[1], rec[0], len[0]);
        break;
    case TAMPER_REORDER: /* third before second (all three have one length) */
        memcpy(in, rec[1], len[1]);
        memcpy(rec[1], rec[2], len[2]);
        memcpy(rec[2], in, len[1]);
        break;
    case TAMPER_LENGTH: /* a length the stream cannot have */
        dc_tcp_put_u32(rec[1], 0x7fffffffu);
        break;
    case TAMPER_TRUNCATE: /* half the second record, then the end of the stream */
        len[1] /= 2;
        len[2] = 0;
        break;
    default:
        break;
    }
    for (int i = 0; i < 3; i++) {
        CHECK(send(fd, rec[i], len[i], MSG_NOSIGNAL) == (ssize_t)len[i]);
    }
    if (tamper_case != TAMPER_TRUNCATE) {
        store_wait(ctx, "tamper/checked");
    }
    close(fd);
}

static void tamper_fn(rank_ctx_t *ctx)
{
    dc_request_t reqs[4];
    int32_t vals[3] = {0, 0, 0};
    char msg[sizeof(marker)];

    if (ctx->rank == 0) {
        tamper_client(ctx);
        return;
    }
    memcpy(msg, marker, sizeof(marker));
    connect_peer(ctx, 0);
    CHECK_EQ(tcp->isend(ctx->eps[0], msg, sizeof(msg), 9, &reqs[3]), DCOMM_OK);
    drive(ctx, &reqs[3], 1);
    CHECK_EQ(reqs[3].status, DCOMM_OK);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(tcp->irecv(ctx->eps[0], &vals[i], 4, 5 + (uint64_t)i, &reqs[i]), DCOMM_OK);
    }
    drive(ctx, reqs, 3);
    CHECK_EQ(reqs[0].status, DCOMM_OK); /* the first record is intact */
    CHECK_EQ(vals[0], 1000);
    if (tamper_case == TAMPER_TRUNCATE) {
        /* Cut short: a lost peer, as a killed rank is, saying where it broke. */
        for (int i = 1; i < 3; i++) {
            CHECK_EQ(reqs[i].status, DCOMM_ERR_PEER_LOST);
            CHECK(vals[i] == 0);
        }
        CHECK(strstr(dc_error_get(), "rank 0") != NULL);
        CHECK(strstr(dc_error_get(), "truncated") != NULL);
        CHECK_EQ(tcp->check(ctx->tp), DCOMM_ERR_PEER_LOST);
        return;
    }
    for (int i = 1; i < 3; i++) {
        CHECK_EQ(reqs[i].status, DCOMM_ERR_AUTH);
        CHECK(vals[i] == 0); /* nothing changed was delivered */
    }
    CHECK(strstr(dc_error_get(), "from rank 0") != NULL);
    CHECK(strstr(dc_error_get(), tamper_case == TAMPER_LENGTH ? "out of range"
                                                               : "failed authentication") != NULL);
    /* The connection is dead: check() says so, and so do later requests. */
    CHECK_EQ(tcp->check(ctx->tp), DCOMM_ERR_AUTH);
    CHECK(strstr(dc_error_get(), "rank 0") != NULL);
    CHECK_EQ(tcp->irecv(ctx->eps[0], &vals[0], 4, 8, &reqs[0]), DCOMM_OK);
    drive(ctx, reqs, 1);
    CHECK_EQ(reqs[0].status, DCOMM_ERR_AUTH);
    store_flag(ctx, "tamper/checked");
}

static void test_tamper(void **state)
{
    /* Rank 0 only publishes an address; its part is played by hand. */
    test_spec_t spec = {.nranks = 2, .manual_connect = 1, .killed_rank = -1, .encrypt = 3,
                        .fn = tamper_fn};

    (void)state;
    /* ChaCha20-Poly1305 (the client offers no AES), then AES-256-GCM. */
    for (tamper_aes = 0; tamper_aes <= dc_tcp_aes_available(); tamper_aes++) {
        for (tamper_case = 0; tamper_case < TAMPER_NCASES; tamper_case++) {
            run_procs(&spec);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query),       cmocka_unit_test(test_open_addresses),
        cmocka_unit_test(test_sizes),       cmocka_unit_test(test_many_small),
        cmocka_unit_test(test_late_recv),   cmocka_unit_test(test_mismatch),
        cmocka_unit_test(test_bad_clients),
        cmocka_unit_test(test_silent_strangers), cmocka_unit_test(test_peer_killed),
        cmocka_unit_test(test_sizes_encrypted), cmocka_unit_test(test_many_small_encrypted),
        cmocka_unit_test(test_records),         cmocka_unit_test(test_encrypt_mismatch),
        cmocka_unit_test(test_tamper),
    };

    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
