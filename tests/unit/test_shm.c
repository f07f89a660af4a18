/*
 * The shm transport between forked processes: message sizes around the ring
 * size, bursts (FIFO order and tags), tag/length mismatches, a peer killed with
 * SIGKILL, a peer that exits cleanly after sending, shutdown with pending
 * requests, bad input, and a rough 64 MiB bandwidth figure.
 */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "fork_ranks.h"

#include "shm/shm.h"
#include "shm_ptracer.h"
#include "dc_time.h"
#include "transport.h"

#define MAX_PROCS   4
#define WAIT_MS     60000 /* per scenario; a bug fails the test instead of hanging */
#define DRIVE_MS    30000

static const dc_transport_ops_t *const ops = &dc_transport_shm_ops;

/* ---- child-side helpers: a failed check prints and ends the child with 1 ---- */

static int g_rank = -1;

__attribute__((noreturn, format(printf, 2, 3))) static void child_fail(int line, const char *fmt,
                                                                         ...)
{
    va_list ap;

    fprintf(stderr, "rank %d, test_shm.c:%d: ", g_rank, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (last error: %s)\n", dc_error_get());
    _exit(1);
}

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            child_fail(__LINE__, "check failed: %s", #cond);                               \
        }                                                                                  \
    } while (0)

typedef struct ctx {
    int rank, nprocs;
    dc_transport_t *tp;
    dc_endpoint_t *eps[MAX_PROCS]; /* by rank; NULL for self unless served */
    dc_store_t *store;
} ctx_t;

static int all_done(dc_request_t *const *reqs, int n)
{
    for (int i = 0; i < n; i++) {
        if (reqs[i]->status == DCOMM_INPROGRESS) {
            return 0;
        }
    }
    return 1;
}

/* Progress until every request is done, sleeping on the doorbell when idle and
 * calling check() every 20 ms. Returns 0, or -1 at the deadline. The first
 * negative check() status goes to *check_p (may be NULL). */
static int drive(ctx_t *c, dc_request_t *const *reqs, int n, int timeout_ms,
                 dc_status_t *check_p)
{
    dc_doorbell_t *db = ops->doorbell(c->tp);
    uint64_t deadline = dc_deadline_ms(timeout_ms), next_check = 0;

    for (;;) {
        int events = ops->progress(c->tp);
        uint64_t now = dc_now_ns();

        if (all_done(reqs, n)) {
            return 0;
        }
        if (now >= deadline) {
            return -1;
        }
        if (now >= next_check) {
            dc_status_t st = ops->check(c->tp);
            if (st < 0 && check_p != NULL && *check_p == DCOMM_OK) {
                *check_p = st;
            }
            next_check = now + 20000000ull;
            continue;
        }
        if (events == 0) {
            uint32_t seq = atomic_load(&db->seq);
            atomic_fetch_add(&db->sleepers, 1);
            if (ops->progress(c->tp) == 0) {
                dc_futex_wait(&db->seq, seq, 5000000ull);
            }
            atomic_fetch_sub(&db->sleepers, 1);
        }
    }
}

static void drive_ok(ctx_t *c, dc_request_t *const *reqs, int n, int line)
{
    if (drive(c, reqs, n, DRIVE_MS, NULL) != 0) {
        child_fail(line, "requests not done within %d ms", DRIVE_MS);
    }
    for (int i = 0; i < n; i++) {
        if (reqs[i]->status != DCOMM_OK) {
            child_fail(line, "request %d (tag 0x%llx) failed with %d", i,
                       (unsigned long long)reqs[i]->tag, reqs[i]->status);
        }
    }
}

static uint8_t pattern(int src, int dst, uint64_t msg, size_t i)
{
    return (uint8_t)((uint64_t)src * 131 + (uint64_t)dst * 31 + msg * 17 + i * 7 + (i >> 12));
}

static void fill(uint8_t *buf, size_t len, int src, int dst, uint64_t msg)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = pattern(src, dst, msg, i);
    }
}

static int verify(const uint8_t *buf, size_t len, int src, int dst, uint64_t msg)
{
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != pattern(src, dst, msg, i)) {
            fprintf(stderr, "rank %d: message %llu from %d: byte %zu is %u, want %u\n", dst,
                    (unsigned long long)msg, src, i, buf[i], pattern(src, dst, msg, i));
            return 0;
        }
    }
    return 1;
}

/* ---- parent-side harness ---- */

typedef int (*body_fn_t)(ctx_t *c);

typedef struct scenario {
    int nprocs;
    const char *ring_size; /* DCOMM_SHM_RING_SIZE, NULL: default */
    int serve_self;        /* list this rank among its own peers */
    int killed_rank;       /* expected to die by SIGKILL, -1: none */
    body_fn_t body;
} scenario_t;

static void child_main(const scenario_t *sc, int rank, const char *dir)
{
    int host_of[MAX_PROCS] = {0}, local_rank_of[MAX_PROCS], peers[MAX_PROCS];
    dc_topo_t topo = {.rank = rank, .size = sc->nprocs, .nhosts = 1, .host_of = host_of,
                      .local_rank_of = local_rank_of, .local_size = sc->nprocs, .ncores = 2};
    uint8_t secret[32] = {0};
    dc_bootstrap_t boot = {.topo = &topo, .secret = secret, .timeout_ms = 20000, .peers = peers};
    ctx_t c = {.rank = rank, .nprocs = sc->nprocs};

    g_rank = rank;
    if (sc->ring_size != NULL) {
        setenv("DCOMM_SHM_RING_SIZE", sc->ring_size, 1);
    }
    for (int r = 0; r < sc->nprocs; r++) {
        local_rank_of[r] = r;
        if (r != rank || sc->serve_self) {
            peers[boot.npeers++] = r;
        }
    }
    CHECK(dc_filestore_open(dir, &c.store) == DCOMM_OK);
    boot.store = c.store;
    CHECK(ops->open(&boot, &c.tp) == DCOMM_OK);
    CHECK(dc_shm_ptracer_windows() == 0); /* every peer has opened our segment */
    for (int i = 0; i < boot.npeers; i++) {
        CHECK(ops->connect(c.tp, peers[i], &c.eps[peers[i]]) == DCOMM_OK);
        CHECK(c.eps[peers[i]]->peer == peers[i]);
    }
    int rc = sc->body(&c);
    if (c.tp != NULL) {
        ops->close(c.tp);
    }
    c.store->ops->close(c.store);
    _exit(rc);
}

/* Forks the ranks, waits for them (killing them all at the deadline) and checks
 * their exits and that no file is left in /dev/shm. */
static void run_scenario(const scenario_t *sc)
{
    char dir[] = "/tmp/dcomm-test-shm-XXXXXX";
    pid_t pids[MAX_PROCS];
    int failed, shm_before = count_dcomm_shm_files();

    assert_non_null(mkdtemp(dir));
    fflush(NULL);
    for (int r = 0; r < sc->nprocs; r++) {
        pids[r] = fork();
        assert_true(pids[r] >= 0);
        if (pids[r] == 0) {
            child_main(sc, r, dir);
        }
    }
    failed = reap_ranks(pids, sc->nprocs, sc->killed_rank, WAIT_MS);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    assert_int_equal(count_dcomm_shm_files(), shm_before);
    assert_false(failed);
}

/* ---- scenarios ---- */

#define TEST_RING (1u << 20)

static int body_sizes(ctx_t *c)
{
    const size_t sizes[] = {0, 1, 4095, TEST_RING - 1, TEST_RING + 1, 64u << 20};
    enum { N = DC_ARRAY_SIZE(sizes), CANARY = 16 };
    int peer = 1 - c->rank;
    uint8_t *sbuf[N], *rbuf[N];
    dc_request_t sreq[N], rreq[N];
    dc_request_t *reqs[2 * N];

    for (int i = 0; i < N; i++) {
        sbuf[i] = malloc(sizes[i] + 1);
        rbuf[i] = malloc(sizes[i] + CANARY);
        CHECK(sbuf[i] != NULL && rbuf[i] != NULL);
        fill(sbuf[i], sizes[i], c->rank, peer, (uint64_t)i);
        memset(rbuf[i], 0xa5, sizes[i] + CANARY);
    }
    /* receives posted longer than the message: len must come back as the actual */
    for (int i = 0; i < N; i++) {
        CHECK(ops->irecv(c->eps[peer], rbuf[i], sizes[i] + CANARY, 100 + (uint64_t)i,
                         &rreq[i]) == DCOMM_OK);
        CHECK(rreq[i].status == DCOMM_INPROGRESS);
        reqs[i] = &rreq[i];
    }
    for (int i = 0; i < N; i++) {
        CHECK(ops->isend(c->eps[peer], sbuf[i], sizes[i], 100 + (uint64_t)i, &sreq[i]) ==
              DCOMM_OK);
        CHECK(sreq[i].status == DCOMM_INPROGRESS); /* only progress() completes */
        reqs[N + i] = &sreq[i];
    }
    drive_ok(c, reqs, 2 * N, __LINE__);
    for (int i = 0; i < N; i++) {
        CHECK(rreq[i].len == sizes[i]);
        CHECK(verify(rbuf[i], sizes[i], peer, c->rank, (uint64_t)i));
        for (int k = 0; k < CANARY; k++) {
            CHECK(rbuf[i][sizes[i] + (size_t)k] == 0xa5);
        }
        free(sbuf[i]);
        free(rbuf[i]);
    }
    return 0;
}

static void test_sizes(void **state)
{
    scenario_t sc = {.nprocs = 2, .ring_size = "1M", .killed_rank = -1, .body = body_sizes};

    (void)state;
    run_scenario(&sc);
}

/* Many small messages to every peer at once through a 4 KiB ring: sends queue
 * up at the sender, order and tags must hold. */
#define BURST 2000

static size_t burst_len(uint64_t i)
{
    return (size_t)((i * 37) % 300);
}

static int body_burst(ctx_t *c)
{
    int n = 0;
    dc_request_t *sreq = calloc(MAX_PROCS * BURST, sizeof(*sreq));
    dc_request_t *rreq = calloc(MAX_PROCS * BURST, sizeof(*rreq));
    dc_request_t **reqs = calloc(2 * MAX_PROCS * BURST, sizeof(*reqs));
    uint8_t *sbuf = malloc((size_t)MAX_PROCS * BURST * 300);
    uint8_t *rbuf = malloc((size_t)MAX_PROCS * BURST * 300);

    CHECK(sreq && rreq && reqs && sbuf && rbuf);
    for (int p = 0; p < c->nprocs; p++) {
        if (p == c->rank) {
            continue;
        }
        for (uint64_t i = 0; i < (uint64_t)BURST; i++) {
            size_t off = ((size_t)p * BURST + i) * 300;
            dc_request_t *r = &rreq[p * BURST + (int)i], *s = &sreq[p * BURST + (int)i];

            CHECK(ops->irecv(c->eps[p], rbuf + off, 300, ((uint64_t)p << 32) | i, r) ==
                  DCOMM_OK);
            fill(sbuf + off, burst_len(i), c->rank, p, i);
            CHECK(ops->isend(c->eps[p], sbuf + off, burst_len(i),
                             ((uint64_t)c->rank << 32) | i, s) == DCOMM_OK);
            reqs[n++] = r;
            reqs[n++] = s;
        }
    }
    drive_ok(c, reqs, n, __LINE__);
    for (int p = 0; p < c->nprocs; p++) {
        for (uint64_t i = 0; p != c->rank && i < (uint64_t)BURST; i++) {
            CHECK(rreq[p * BURST + (int)i].len == burst_len(i));
            CHECK(verify(rbuf + ((size_t)p * BURST + i) * 300, burst_len(i), p, c->rank, i));
        }
    }
    free(sreq);
    free(rreq);
    free(reqs);
    free(sbuf);
    free(rbuf);
    return 0;
}

static void test_burst(void **state)
{
    scenario_t sc = {.nprocs = 4, .ring_size = "4K", .killed_rank = -1, .body = body_burst};

    (void)state;
    run_scenario(&sc);
}

/* A wrong tag or a message longer than the receive fails that receive with
 * DCOMM_ERR_INTERNAL; the stream stays in step for the next ones. */
static int body_mismatch(ctx_t *c)
{
    static const struct {
        uint64_t send_tag;
        size_t send_len;
        uint64_t recv_tag;
        size_t recv_len;
        dc_status_t want;
    } msgs[] = {
        {1, 100, 9, 100, DCOMM_ERR_INTERNAL},     /* wrong tag */
        {2, 10000, 2, 9999, DCOMM_ERR_INTERNAL},  /* too long, and longer than the ring */
        {3, 50, 3, 64, DCOMM_OK},
        {4, 0, 5, 0, DCOMM_ERR_INTERNAL},         /* empty message, wrong tag */
        {6, 0, 6, 8, DCOMM_OK},
        {7, 5000, 7, 5000, DCOMM_OK},
    };
    enum { N = DC_ARRAY_SIZE(msgs) };
    static uint8_t bufs[N][10000];
    dc_request_t req[N];
    dc_request_t *reqs[N];

    for (int i = 0; i < N; i++) {
        reqs[i] = &req[i];
        if (c->rank == 0) {
            fill(bufs[i], msgs[i].send_len, 0, 1, (uint64_t)i);
            CHECK(ops->isend(c->eps[1], bufs[i], msgs[i].send_len, msgs[i].send_tag, &req[i]) ==
                  DCOMM_OK);
        } else {
            CHECK(ops->irecv(c->eps[0], bufs[i], msgs[i].recv_len, msgs[i].recv_tag, &req[i]) ==
                  DCOMM_OK);
        }
    }
    if (c->rank == 0) {
        drive_ok(c, reqs, N, __LINE__); /* the sender never knows */
        return 0;
    }
    CHECK(drive(c, reqs, N, DRIVE_MS, NULL) == 0);
    for (int i = 0; i < N; i++) {
        if (req[i].status != msgs[i].want) {
            child_fail(__LINE__, "receive %d: status %d, want %d", i, req[i].status,
                       msgs[i].want);
        }
        if (msgs[i].want == DCOMM_OK) {
            CHECK(req[i].len == msgs[i].send_len);
            CHECK(verify(bufs[i], msgs[i].send_len, 0, 1, (uint64_t)i));
        }
    }
    return 0;
}

static void test_mismatch(void **state)
{
    scenario_t sc = {.nprocs = 2, .ring_size = "4K", .killed_rank = -1, .body = body_mismatch};

    (void)state;
    run_scenario(&sc);
}

/* Rank 1 dies by SIGKILL with a receive and a send of rank 0 pending on it:
 * check() reports the loss, both fail with DCOMM_ERR_PEER_LOST naming the rank,
 * and rank 0 still talks to rank 2. */
static int body_killed(ctx_t *c)
{
    static uint8_t big[1 << 20], small[64];
    dc_request_t recv, send, *reqs[2] = {&recv, &send};
    dc_status_t check = DCOMM_OK;
    size_t len;
    char flag;

    if (c->rank == 1) {
        CHECK(dc_store_get(c->store, "test/posted", &flag, 1, &len, 20000) == DCOMM_OK);
        raise(SIGKILL);
    }
    if (c->rank == 0) {
        CHECK(ops->irecv(c->eps[1], small, sizeof(small), 7, &recv) == DCOMM_OK);
        CHECK(ops->isend(c->eps[1], big, sizeof(big), 8, &send) == DCOMM_OK); /* > ring */
        CHECK(ops->check(c->tp) == DCOMM_OK);
        CHECK(dc_store_set(c->store, "test/posted", "1", 1) == DCOMM_OK);
        CHECK(drive(c, reqs, 2, DRIVE_MS, &check) == 0);
        CHECK(check == DCOMM_ERR_PEER_LOST);
        CHECK(recv.status == DCOMM_ERR_PEER_LOST);
        CHECK(send.status == DCOMM_ERR_PEER_LOST);
        CHECK(strstr(dc_error_get(), "rank 1 (pid") != NULL);
        CHECK(strstr(dc_error_get(), "is gone") != NULL);
        CHECK(ops->check(c->tp) == DCOMM_ERR_PEER_LOST);
        CHECK(ops->isend(c->eps[1], small, 1, 9, &send) == DCOMM_ERR_PEER_LOST);
        CHECK(send.status == DCOMM_ERR_PEER_LOST);
    }
    /* ranks 0 and 2 go on */
    int peer = 2 - c->rank;
    uint8_t out[100], in[100];
    fill(out, sizeof(out), c->rank, peer, 1);
    CHECK(ops->irecv(c->eps[peer], in, sizeof(in), 1, &recv) == DCOMM_OK);
    CHECK(ops->isend(c->eps[peer], out, sizeof(out), 1, &send) == DCOMM_OK);
    drive_ok(c, reqs, 2, __LINE__);
    CHECK(verify(in, sizeof(in), peer, c->rank, 1));
    return 0;
}

static void test_peer_killed(void **state)
{
    scenario_t sc = {.nprocs = 3, .ring_size = "64K", .killed_rank = 1, .body = body_killed};

    (void)state;
    run_scenario(&sc);
}

/* A sender that closes and exits right after its send completed: the message is
 * still delivered, even to a receive posted after check() saw the exit, and
 * check() does not call that a loss until a request fails. */
static int body_clean_exit(ctx_t *c)
{
    uint8_t buf[3000];
    dc_request_t req, *reqs[1] = {&req};
    dc_status_t check = DCOMM_OK;
    dc_shm_addr_t addr;
    size_t len;

    if (c->rank == 1) {
        fill(buf, sizeof(buf), 1, 0, 5);
        CHECK(ops->isend(c->eps[0], buf, sizeof(buf), 5, &req) == DCOMM_OK);
        drive_ok(c, reqs, 1, __LINE__);
        return 0;
    }
    CHECK(dc_store_get(c->store, "shm/1", &addr, sizeof(addr), &len, 1000) == DCOMM_OK);
    uint64_t deadline = dc_deadline_ms(20000);
    while (kill(addr.pid, 0) == 0 && dc_now_ns() < deadline) {
        dc_sleep_ns(1000000);
    }
    CHECK(kill(addr.pid, 0) != 0);
    CHECK(ops->check(c->tp) == DCOMM_OK); /* noticed, but a clean exit */
    CHECK(ops->irecv(c->eps[1], buf, sizeof(buf), 5, &req) == DCOMM_OK);
    CHECK(drive(c, reqs, 1, DRIVE_MS, &check) == 0);
    CHECK(req.status == DCOMM_OK);
    CHECK(verify(buf, sizeof(buf), 1, 0, 5));
    CHECK(check == DCOMM_OK);
    CHECK(ops->check(c->tp) == DCOMM_OK);
    /* a receive the departed rank can no longer satisfy fails, and so do sends */
    CHECK(ops->irecv(c->eps[1], buf, sizeof(buf), 6, &req) == DCOMM_OK);
    CHECK(drive(c, reqs, 1, DRIVE_MS, NULL) == 0);
    CHECK(req.status == DCOMM_ERR_PEER_LOST);
    CHECK(strstr(dc_error_get(), "rank 1 (pid") != NULL);
    CHECK(ops->check(c->tp) == DCOMM_ERR_PEER_LOST);
    CHECK(ops->isend(c->eps[1], buf, 1, 7, &req) == DCOMM_ERR_PEER_LOST);
    return 0;
}

/* The sender dies with a message half in our ring: the receive fails with
 * PEER_LOST, and later progress (the half message still active, its receive
 * gone from the list) must neither touch the failed request nor hand the rest
 * to a receive posted afterwards. Before the fix, the second progress call
 * dereferenced the emptied receive list. */
static int body_killed_mid_message(ctx_t *c)
{
    enum { BIG = 64 << 10 }; /* 16 rings' worth of a 4 KiB ring */
    static uint8_t buf[BIG];
    dc_request_t req, *reqs[1] = {&req};
    dc_shm_addr_t addr;
    size_t len;

    if (c->rank == 1) {
        fill(buf, sizeof(buf), 1, 0, 9);
        CHECK(ops->isend(c->eps[0], buf, sizeof(buf), 9, &req) == DCOMM_OK);
        for (int i = 0; i < 100; i++) {
            ops->progress(c->tp); /* the ring fills; nobody reads it yet */
        }
        kill(getpid(), SIGKILL);
    }
    CHECK(dc_store_get(c->store, "shm/1", &addr, sizeof(addr), &len, 1000) == DCOMM_OK);
    uint64_t deadline = dc_deadline_ms(20000);
    while (kill(addr.pid, 0) == 0 && dc_now_ns() < deadline) {
        dc_sleep_ns(1000000);
    }
    CHECK(ops->irecv(c->eps[1], buf, sizeof(buf), 9, &req) == DCOMM_OK);
    CHECK(drive(c, reqs, 1, DRIVE_MS, NULL) == 0);
    CHECK(req.status == DCOMM_ERR_PEER_LOST);
    for (int i = 0; i < 10; i++) {
        ops->progress(c->tp);
        ops->check(c->tp);
    }
    CHECK(ops->irecv(c->eps[1], buf, sizeof(buf), 10, &req) == DCOMM_OK);
    CHECK(drive(c, reqs, 1, DRIVE_MS, NULL) == 0);
    CHECK(req.status == DCOMM_ERR_PEER_LOST);
    return 0;
}

static void test_killed_mid_message(void **state)
{
    scenario_t sc = {.nprocs = 2, .ring_size = "4K", .killed_rank = 1,
                     .body = body_killed_mid_message};

    (void)state;
    run_scenario(&sc);
}

static void test_clean_exit(void **state)
{
    scenario_t sc = {.nprocs = 2, .ring_size = "64K", .killed_rank = -1,
                     .body = body_clean_exit};

    (void)state;
    run_scenario(&sc);
}

/* One process that serves itself: loopback through its own ring, then close()
 * with requests pending fails them with DCOMM_ERR_SHUT_DOWN. */
static int body_self_close(ctx_t *c)
{
    static uint8_t out[100000], in[100000];
    dc_request_t s, r, *reqs[2] = {&s, &r};

    fill(out, sizeof(out), 0, 0, 3);
    CHECK(ops->isend(c->eps[0], out, sizeof(out), 3, &s) == DCOMM_OK); /* > 64K ring */
    CHECK(ops->irecv(c->eps[0], in, sizeof(in), 3, &r) == DCOMM_OK);
    drive_ok(c, reqs, 2, __LINE__);
    CHECK(verify(in, sizeof(in), 0, 0, 3));
    /* no progress() from here on: neither can complete */
    CHECK(ops->irecv(c->eps[0], in, sizeof(in), 4, &r) == DCOMM_OK);
    CHECK(ops->isend(c->eps[0], out, sizeof(out), 4, &s) == DCOMM_OK);
    CHECK(r.status == DCOMM_INPROGRESS && s.status == DCOMM_INPROGRESS);
    ops->close(c->tp);
    c->tp = NULL;
    CHECK(r.status == DCOMM_ERR_SHUT_DOWN);
    CHECK(s.status == DCOMM_ERR_SHUT_DOWN);
    return 0;
}

static void test_self_and_close(void **state)
{
    scenario_t sc = {.nprocs = 1, .ring_size = "64K", .serve_self = 1, .killed_rank = -1,
                     .body = body_self_close};

    (void)state;
    run_scenario(&sc);
}

/* Rough one-way bandwidth of 64 MiB messages between two processes. */
static int body_bandwidth(ctx_t *c)
{
    const size_t size = 64u << 20;
    enum { ITERS = 5 };
    uint8_t *buf = malloc(size), ack = 0;
    dc_request_t data, ackreq, *reqs[1];
    uint64_t t0 = 0;

    CHECK(buf != NULL);
    if (c->rank == 0) {
        fill(buf, size, 0, 1, 0);
    } else {
        memset(buf, 0, size); /* fault the pages in before timing */
    }
    for (int it = -1; it < ITERS; it++) { /* iteration -1 warms up */
        if (it == 0) {
            t0 = dc_now_ns();
        }
        /* stamp each iteration so a message that did not move cannot pass */
        const size_t at[3] = {0, size / 2, size - 1};
        if (c->rank == 0) {
            for (int k = 0; k < 3; k++) {
                buf[at[k]] = (uint8_t)(it + 11 * k + 1);
            }
            CHECK(ops->isend(c->eps[1], buf, size, 1, &data) == DCOMM_OK);
            CHECK(ops->irecv(c->eps[1], &ack, 0, 2, &ackreq) == DCOMM_OK);
        } else {
            CHECK(ops->irecv(c->eps[0], buf, size, 1, &data) == DCOMM_OK);
            reqs[0] = &data;
            drive_ok(c, reqs, 1, __LINE__);
            for (int k = 0; k < 3; k++) {
                CHECK(buf[at[k]] == (uint8_t)(it + 11 * k + 1));
                buf[at[k]] = pattern(0, 1, 0, at[k]);
            }
            CHECK(ops->isend(c->eps[0], &ack, 0, 2, &ackreq) == DCOMM_OK);
        }
        dc_request_t *both[2] = {&data, &ackreq};
        drive_ok(c, both, 2, __LINE__);
    }
    if (c->rank == 1) {
        double s = (double)(dc_now_ns() - t0) / 1e9;
        printf("[ shm bw   ] 64 MiB x %d: %.3f s, %.2f GB/s (ring %s)\n", ITERS, s,
               (double)size * ITERS / s / 1e9,
               getenv("DCOMM_SHM_RING_SIZE") ? getenv("DCOMM_SHM_RING_SIZE") : "default");
        fflush(stdout);
        CHECK(verify(buf, size, 0, 1, 0));
    }
    free(buf);
    return 0;
}

static void test_bandwidth(void **state)
{
    scenario_t sc = {.nprocs = 2, .killed_rank = -1, .body = body_bandwidth};

    (void)state;
    run_scenario(&sc);
}

/* ---- in-process checks of bad input ---- */

static void test_bad_input(void **state)
{
    char dir[] = "/tmp/dcomm-test-shm-XXXXXX";
    int host_of[3] = {0, 0, 1}, local_rank_of[3] = {0, 1, 0}, peers[2];
    dc_topo_t topo = {.rank = 0, .size = 3, .nhosts = 2, .host_of = host_of,
                      .local_rank_of = local_rank_of, .local_size = 2, .ncores = 2};
    dc_bootstrap_t boot = {.topo = &topo, .timeout_ms = 100, .peers = peers};
    dc_transport_attr_t attr;
    dc_transport_t *tp;
    dc_endpoint_t *ep;
    dc_store_t *store;
    dc_request_t req;

    (void)state;
    assert_int_equal(ops->abi_version, DC_TRANSPORT_ABI_VERSION);
    assert_string_equal(ops->name, "shm");
    assert_int_equal(ops->query(&topo, &attr), DCOMM_OK);
    assert_int_equal(attr.usable, 1);
    assert_int_equal(attr.same_host_only, 1);
    assert_true(attr.priority > 0);

    assert_non_null(mkdtemp(dir));
    assert_int_equal(dc_filestore_open(dir, &store), DCOMM_OK);
    boot.store = store;

    peers[0] = 2; /* other host */
    boot.npeers = 1;
    assert_int_equal(ops->open(&boot, &tp), DCOMM_ERR_INVALID_ARG);
    assert_non_null(strstr(dc_error_get(), "rank 2"));
    peers[0] = 5; /* no such rank */
    assert_int_equal(ops->open(&boot, &tp), DCOMM_ERR_INVALID_ARG);
    peers[0] = peers[1] = 1; /* twice */
    boot.npeers = 2;
    assert_int_equal(ops->open(&boot, &tp), DCOMM_ERR_INVALID_ARG);

    setenv("DCOMM_SHM_RING_SIZE", "12Q", 1);
    boot.npeers = 0;
    assert_int_equal(ops->open(&boot, &tp), DCOMM_ERR_INVALID_ARG);
    assert_non_null(strstr(dc_error_get(), "DCOMM_SHM_RING_SIZE"));
    unsetenv("DCOMM_SHM_RING_SIZE");

    /* rank 1 never shows up: open times out instead of hanging */
    peers[0] = 1;
    boot.npeers = 1;
    assert_int_equal(ops->open(&boot, &tp), DCOMM_ERR_TIMEOUT);
    assert_int_equal(dc_shm_ptracer_windows(), 0); /* a failed open withdraws it too */

    /* no peers: still a doorbell to sleep on */
    boot.npeers = 0;
    assert_int_equal(ops->open(&boot, &tp), DCOMM_OK);
    assert_non_null(ops->doorbell(tp));
    int fd = 0;
    assert_int_equal(ops->wait_fd(tp, &fd), DCOMM_OK);
    assert_int_equal(fd, -1);
    assert_int_equal(ops->connect(tp, 1, &ep), DCOMM_ERR_INVALID_ARG);
    assert_int_equal(ops->progress(tp), 0);
    assert_int_equal(ops->check(tp), DCOMM_OK);
    ops->close(tp);

    /* NULL buffer with a length */
    peers[0] = 0;
    boot.npeers = 1;
    assert_int_equal(ops->open(&boot, &tp), DCOMM_OK);
    assert_int_equal(ops->connect(tp, 0, &ep), DCOMM_OK);
    assert_int_equal(ops->isend(ep, NULL, 10, 1, &req), DCOMM_ERR_INVALID_ARG);
    assert_int_equal(ops->irecv(ep, NULL, 10, 1, &req), DCOMM_ERR_INVALID_ARG);
    assert_int_equal(ops->isend(ep, NULL, 0, 1, NULL), DCOMM_ERR_INVALID_ARG);
    ops->close(tp);

    store->ops->close(store);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* Rank 1 fails with an error but stays alive: a message it sent before still
 * arrives, and rank 0's next receive fails with PEER_LOST naming rank 1 and its
 * cause within a second (before, it waited for the rank that never sends). */
static int body_failed_alive(ctx_t *c)
{
    uint8_t buf[100];
    dc_request_t req, *reqs[1] = {&req};
    dc_status_t check = DCOMM_OK;

    if (c->rank == 1) {
        fill(buf, sizeof(buf), 1, 0, 3);
        CHECK(ops->isend(c->eps[0], buf, sizeof(buf), 3, &req) == DCOMM_OK);
        drive_ok(c, reqs, 1, __LINE__);
        dc_sleep_ns(200000000ull); /* rank 0 is asleep in its wait by now */
        ops->notify_failure(c->tp, "rank 1: injected failure (a test)");
        dc_sleep_ns(3000000000ull); /* alive until rank 0 is done */
        return 0;
    }
    CHECK(ops->irecv(c->eps[1], buf, sizeof(buf), 3, &req) == DCOMM_OK);
    drive_ok(c, reqs, 1, __LINE__);
    CHECK(verify(buf, sizeof(buf), 1, 0, 3));
    CHECK(ops->irecv(c->eps[1], buf, sizeof(buf), 4, &req) == DCOMM_OK);
    uint64_t t0 = dc_now_ns();
    CHECK(drive(c, reqs, 1, 10000, &check) == 0);
    uint64_t ms = (dc_now_ns() - t0) / 1000000ull;
    CHECK(req.status == DCOMM_ERR_PEER_LOST);
    CHECK(check == DCOMM_ERR_PEER_LOST);
    if (strstr(dc_error_get(), "rank 1") == NULL ||
        strstr(dc_error_get(), "injected failure") == NULL || ms >= 1000) {
        fprintf(stderr, "rank 0: after %llu ms: %s\n", (unsigned long long)ms, dc_error_get());
        CHECK(0);
    }
    return 0;
}

static void test_failed_alive(void **state)
{
    scenario_t sc = {.nprocs = 2, .killed_rank = -1, .body = body_failed_alive};

    (void)state;
    run_scenario(&sc);
}

/* A peer whose segment header lies about its rings: every field is checked
 * against the mapped size before use (before the fix, nrings led the ring scan
 * past the mapping, and data_offset put tx_data anywhere). */
static void publish_fake_segment(dc_store_t *store, int memfd, uint32_t nrings,
                                 uint64_t ring_size, uint64_t data_offset)
{
    enum { SIZE = 8192 };
    dc_shm_seg_t *seg;
    dc_shm_addr_t addr = {.magic = DC_SHM_MAGIC, .pid = (int32_t)getpid(), .fd = memfd,
                          .size = SIZE};

    assert_int_equal(ftruncate(memfd, SIZE), 0);
    seg = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    assert_true(seg != MAP_FAILED);
    memset(seg, 0, SIZE);
    seg->magic = DC_SHM_MAGIC;
    seg->version = DC_SHM_VERSION;
    seg->rank = 1;
    seg->pid = (int32_t)getpid();
    seg->size = SIZE;
    seg->nrings = nrings;
    seg->ring_size = ring_size;
    seg->rings[0].sender = 0;
    seg->rings[0].data_offset = data_offset;
    munmap(seg, SIZE);
    assert_int_equal(dc_store_set(store, "shm/1", &addr, sizeof(addr)), DCOMM_OK);
}

static void test_bad_header(void **state)
{
    char dir[] = "/tmp/dcomm-test-shm-XXXXXX";
    int host_of[2] = {0, 0}, local_rank_of[2] = {0, 1}, peers[1] = {1};
    dc_topo_t topo = {.rank = 0, .size = 2, .nhosts = 1, .host_of = host_of,
                      .local_rank_of = local_rank_of, .local_size = 2, .ncores = 2};
    dc_bootstrap_t boot = {.topo = &topo, .timeout_ms = 500, .peers = peers, .npeers = 1};
    const struct {
        uint32_t nrings;
        uint64_t ring_size, data_offset;
        const char *error;
    } cases[] = {
        {1000000, 4096, 4096, "claims 1000000 rings"},
        {1, 4096, 1ull << 40, "outside its segment"},
        {1, 4096, 4097, "outside its segment"},
        {1, 4096, 64, "outside its segment"}, /* inside the header */
        {1, 3, 4096, "ring size 3"},
        {1, 1ull << 62, 4096, "ring size"},
    };
    dc_transport_t *tp;
    dc_store_t *store;
    int memfd = memfd_create("test-fake-seg", MFD_CLOEXEC);

    (void)state;
    assert_true(memfd >= 0);
    assert_non_null(mkdtemp(dir));
    assert_int_equal(dc_filestore_open(dir, &store), DCOMM_OK);
    boot.store = store;
    for (size_t i = 0; i < DC_ARRAY_SIZE(cases); i++) {
        publish_fake_segment(store, memfd, cases[i].nrings, cases[i].ring_size,
                             cases[i].data_offset);
        assert_int_equal(ops->open(&boot, &tp), DCOMM_ERR_TRANSPORT);
        if (strstr(dc_error_get(), cases[i].error) == NULL) {
            fail_msg("case %zu: '%s' lacks '%s'", i, dc_error_get(), cases[i].error);
        }
    }
    /* The same segment told the truth is accepted as far as the header goes
     * (the open then waits for rank 1 at the barrier and times out). */
    publish_fake_segment(store, memfd, 1, 4096, 4096);
    assert_int_equal(ops->open(&boot, &tp), DCOMM_ERR_TIMEOUT);
    close(memfd);
    store->ops->close(store);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_self_and_close),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_burst),
        cmocka_unit_test(test_mismatch),
        cmocka_unit_test(test_peer_killed),
        cmocka_unit_test(test_clean_exit),
        cmocka_unit_test(test_killed_mid_message),
        cmocka_unit_test(test_bad_header),
        cmocka_unit_test(test_failed_alive),
        cmocka_unit_test(test_bandwidth),
    };

    return cmocka_run_group_tests_name("shm", tests, NULL, NULL);
}
