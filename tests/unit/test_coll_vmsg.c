/*
 * collectives/coll_vmsg.c: length-prefixed gather to a root and broadcast
 * from it (the negotiation's pattern) on 1 to 5 ranks over shm and tcp,
 * threads of this process (coll_harness), with every root and messages of
 * different lengths (0 included); and a peer announcing more than the
 * receiver's bound is refused, naming the peer, before any buffer is sized.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "coll_harness.h"
#include "coll_p2p.h"
#include "coll_vmsg.h"

#define MSG_MAX 4096

typedef struct rank_bufs {
    uint8_t in[COLL_MAX_RANKS][MSG_MAX]; /* root: each rank's message */
    uint8_t down[MSG_MAX];               /* others: the root's message */
    int reserved;                        /* reserve() calls */
} rank_bufs_t;

typedef struct vcase {
    int root;
    uint64_t max; /* the receivers' bound */
    int liar;     /* comm rank announcing max + 1 bytes (-1: none) */
} vcase_t;

static void *reserve(void *arg, int rank, size_t len)
{
    rank_bufs_t *b = arg;

    b->reserved++;
    return len <= MSG_MAX ? b->in[rank] : NULL;
}

static void *reserve_down(void *arg, int rank, size_t len)
{
    rank_bufs_t *b = arg;

    (void)rank;
    b->reserved++;
    return len <= MSG_MAX ? b->down : NULL;
}

/* Rank r's message: (r * 37) % 300 bytes (rank 0 sends none), each byte
 * naming its sender and position. */
static size_t msg_len(int r)
{
    return (size_t)(r * 37) % 300;
}

static uint8_t msg_byte(int r, size_t i)
{
    return (uint8_t)(r * 31 + i * 7 + 1);
}

static int check_msg(const uint8_t *buf, size_t len, int r)
{
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != msg_byte(r, i)) {
            return -1;
        }
    }
    return 0;
}

static int rank_main(coll_rank_t *rk, void *arg)
{
    const vcase_t *vc = arg;
    rank_bufs_t *b = calloc(1, sizeof(*b));
    uint64_t lens[COLL_MAX_RANKS] = {0};
    dc_request_t reqs[2 * COLL_MAX_RANKS];
    dc_request_t *wait[2 * COLL_MAX_RANKS];
    dc_coll_vmsg_t v = {.ctx = &rk->ctx, .root = vc->root, .max = vc->max, .what = "list",
                        .reserve = rk->rank == vc->root ? reserve : reserve_down, .arg = b,
                        .lens = lens, .reqs = reqs, .wait = wait};
    uint8_t mine[MSG_MAX];
    size_t len = msg_len(rk->rank);
    int rc = -1;

    if (b == NULL) {
        return -1;
    }
    rk->ctx.tag = 21;
    for (size_t i = 0; i < len; i++) {
        mine[i] = msg_byte(rk->rank, i);
    }
    if (vc->liar >= 0 && rk->rank != vc->root) {
        /* The refused round: every rank announces its length, only; the liar
         * more than the root takes. */
        uint64_t announce = rk->rank == vc->liar ? vc->max + 1 : len;
        dc_request_t *w = &reqs[0];

        rc = dc_ep_isend(dc_coll_ep(&rk->ctx, vc->root), &announce, sizeof(announce),
                         rk->ctx.tag, &reqs[0]) == DCOMM_OK &&
                     dc_net_wait(rk->net, &w, 1, NULL, NULL) == DCOMM_OK
                 ? 0
                 : -1;
    } else if (rk->rank == vc->root) {
        dc_status_t status = dc_coll_vmsg_gather_post(&v);

        if (status == DCOMM_OK) {
            status = dc_coll_vmsg_gather_wait(&v);
        }
        if (vc->liar >= 0) {
            char want[128];

            snprintf(want, sizeof(want), "rank %d announced a %llu-byte list (at most %llu)",
                     rk->ranks[vc->liar], (unsigned long long)vc->max + 1,
                     (unsigned long long)vc->max);
            /* Refused before any buffer was sized (the liar is rank 0, the first). */
            rc = status == DCOMM_ERR_TRANSPORT && strstr(dc_error_get(), want) != NULL &&
                         b->reserved == 0
                     ? 0
                     : -1;
            if (rc != 0) {
                fprintf(stderr, "root: status %d, '%s', want '%s'\n", status, dc_error_get(),
                        want);
            }
        } else {
            rc = status == DCOMM_OK ? 0 : -1;
            for (int r = 0; rc == 0 && r < rk->size; r++) {
                if (r != vc->root && (lens[r] != msg_len(r) || check_msg(b->in[r], lens[r], r))) {
                    fprintf(stderr, "root %d: rank %d's message wrong\n", vc->root, r);
                    rc = -1;
                }
            }
            rc = rc == 0 && b->reserved == rk->size - 1 ? 0 : -1;
            if (rc == 0 && dc_coll_vmsg_bcast(&v, mine, len) != DCOMM_OK) {
                rc = -1;
            }
        }
    } else {
        uint64_t down = 0;

        rc = dc_coll_vmsg_exchange(&v, mine, len, &down) == DCOMM_OK && b->reserved == 1 &&
                     down == msg_len(vc->root) && check_msg(b->down, down, vc->root) == 0
                 ? 0
                 : -1;
    }
    free(b);
    return rc;
}

static void run_case(int np, const char *spec, const vcase_t *vc)
{
    coll_world_t *w;

    assert_int_equal(coll_world_open(np, spec, 1u << 20, 1, &w), 0);
    assert_int_equal(coll_world_run(w, rank_main, (void *)vc), 0);
    coll_world_close(w);
}

static void test_gather_bcast(void **state)
{
    static const char *const specs[] = {"shm", "tcp"};

    (void)state;
    for (size_t s = 0; s < 2; s++) {
        for (int np = 1; np <= 5; np++) {
            for (int root = 0; root < np; root++) {
                vcase_t vc = {.root = root, .max = MSG_MAX, .liar = -1};

                run_case(np, specs[s], &vc);
            }
        }
    }
}

static void test_bound(void **state)
{
    (void)state;
    for (int np = 2; np <= 4; np++) {
        vcase_t vc = {.root = np - 1, .max = 200, .liar = 0};

        run_case(np, "shm", &vc);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gather_bcast),
        cmocka_unit_test(test_bound),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
