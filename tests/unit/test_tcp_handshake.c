/*
 * Tests of the tcp transport's connection set-up with real processes
 * (tcp_procs.c): hostile clients (garbage, a wrong secret, a rank that does not
 * connect there, silence) are dropped while the ranks connect, silent strangers
 * do not hold up the ranks behind them, and ends that disagree on
 * DCOMM_TCP_ENCRYPT both fail naming the setting.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tcp_procs.h"

/* ---- hostile clients ---------------------------------------------------------- */

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

/* ---- encryption settings that differ --------------------------------------- */

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_clients),
        cmocka_unit_test(test_silent_strangers),
        cmocka_unit_test(test_encrypt_mismatch),
    };

    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
