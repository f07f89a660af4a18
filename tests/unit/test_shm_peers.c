/*
 * The shm transport when a peer goes wrong (shm_procs.c): killed with SIGKILL
 * (with requests pending, or half-way through a message in our ring), exiting
 * cleanly right after its send, failing while it stays alive, or publishing a
 * segment header that lies about its rings.
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

#include "shm/shm.h"
#include "shm_ptracer.h"
#include "shm_procs.h"

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
    scenario_t sc = {.nprocs = 3, .ring_size = 64u << 10, .killed_rank = 1, .body = body_killed};

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
    scenario_t sc = {.nprocs = 2, .ring_size = 4096, .killed_rank = 1,
                     .body = body_killed_mid_message};

    (void)state;
    run_scenario(&sc);
}

static void test_clean_exit(void **state)
{
    scenario_t sc = {.nprocs = 2, .ring_size = 64u << 10, .killed_rank = -1,
                     .body = body_clean_exit};

    (void)state;
    run_scenario(&sc);
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
        cmocka_unit_test(test_peer_killed),
        cmocka_unit_test(test_clean_exit),
        cmocka_unit_test(test_killed_mid_message),
        cmocka_unit_test(test_bad_header),
        cmocka_unit_test(test_failed_alive),
    };

    return cmocka_run_group_tests_name("shm_peers", tests, NULL, NULL);
}
