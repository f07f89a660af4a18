/* The harness of the shm transport's tests (shm_procs.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "shm_ptracer.h"
#include "shm_procs.h"

/* ---- child-side helpers: a failed check prints and ends the child with 1 ---- */

static int g_rank = -1;

void child_fail_at(const char *file, int line, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "rank %d, %s:%d: ", g_rank, file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (last error: %s)\n", dc_error_get());
    _exit(1);
}

static int all_done(dc_request_t *const *reqs, int n)
{
    for (int i = 0; i < n; i++) {
        if (reqs[i]->status == DCOMM_INPROGRESS) {
            return 0;
        }
    }
    return 1;
}

int drive(ctx_t *c, dc_request_t *const *reqs, int n, int timeout_ms, dc_status_t *check_p)
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

void drive_ok_at(const char *file, ctx_t *c, dc_request_t *const *reqs, int n, int line)
{
    if (drive(c, reqs, n, DRIVE_MS, NULL) != 0) {
        child_fail_at(file, line, "requests not done within %d ms", DRIVE_MS);
    }
    for (int i = 0; i < n; i++) {
        if (reqs[i]->status != DCOMM_OK) {
            child_fail_at(file, line, "request %d (tag 0x%llx) failed with %d", i,
                       (unsigned long long)reqs[i]->tag, reqs[i]->status);
        }
    }
}

uint8_t pattern(int src, int dst, uint64_t msg, size_t i)
{
    return (uint8_t)((uint64_t)src * 131 + (uint64_t)dst * 31 + msg * 17 + i * 7 + (i >> 12));
}

void fill(uint8_t *buf, size_t len, int src, int dst, uint64_t msg)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = pattern(src, dst, msg, i);
    }
}

int verify(const uint8_t *buf, size_t len, int src, int dst, uint64_t msg)
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

static void child_main(const scenario_t *sc, int rank, const char *dir)
{
    int host_of[MAX_PROCS] = {0}, local_rank_of[MAX_PROCS], peers[MAX_PROCS];
    dc_topo_t topo = {.rank = rank, .size = sc->nprocs, .nhosts = 1, .host_of = host_of,
                      .local_rank_of = local_rank_of, .local_size = sc->nprocs, .ncores = 2};
    uint8_t secret[32] = {0};
    dc_bootstrap_t boot = {.topo = &topo, .secret = secret, .timeout_ms = 20000, .peers = peers};
    ctx_t c = {.rank = rank, .nprocs = sc->nprocs};

    g_rank = rank;
    boot.shm_ring_size = sc->ring_size;
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

void run_scenario(const scenario_t *sc)
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
