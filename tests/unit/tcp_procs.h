/*
 * Harness of the tcp transport's unit tests (test_tcp*.c; not a test itself):
 * ranks as forked processes that meet through a directory store on loopback,
 * checks in the children that end the child with a message (its exit status
 * fails the test), and the tools of hostile clients.
 */
#ifndef TCP_PROCS_H
#define TCP_PROCS_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

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

extern const uint8_t test_secret[DC_AUTH_SECRET_LEN];


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

extern char store_dir[PATH_MAX]; /* the store of the test running, under /tmp */

/* Says which check failed where (and in which rank), then ends the child;
 * child_fail(__LINE__, fmt, ...) names the calling file. */
void child_fail_at(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));
#define child_fail(...) child_fail_at(__FILE__, __VA_ARGS__)

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
int drive_for(rank_ctx_t *ctx, dc_request_t *reqs, int n, int timeout_ms);
/* drive_for with DRIVE_MS; the child fails at the deadline. */
void drive(rank_ctx_t *ctx, dc_request_t *reqs, int n);
/* A pattern of size bytes that says which rank sent it; verify fails the child
 * on the first byte that differs. */
void fill(uint8_t *buf, int src, size_t size);
void verify(const uint8_t *buf, int src, size_t size);
void connect_peer(rank_ctx_t *ctx, int peer);
void connect_all(rank_ctx_t *ctx);
/* A flag in the store, and waiting (DRIVE_MS) for one: ordering between ranks. */
void store_flag(rank_ctx_t *ctx, const char *key);
void store_wait(rank_ctx_t *ctx, const char *key);
/* A made-up topology: ranks alternate between two "hosts". */
void ctx_init(rank_ctx_t *ctx, int rank, int size);
void remove_store_dir(void);
/* Forks the ranks and helpers, waits for all of them (killing them at the
 * deadline) and checks how each ended. */
void run_procs(const test_spec_t *spec);

/* Hostile clients: a plain socket to rank target's listener ... */
int raw_connect(rank_ctx_t *ctx, int target);
/* ... reading until the server closes (the bytes it sent, -1 if it never
 * closed within timeout_ms) ... */
long read_until_closed(int fd, uint8_t *buf, size_t cap, int timeout_ms);
/* ... and the answer a client sends, signed with `secret`, claiming `claimed` rank. */
void forge_answer_flags(const uint8_t *hello, const uint8_t *secret, uint32_t claimed,
                        uint32_t target, uint32_t flags, uint8_t answer[DC_TCP_ANSWER_LEN]);
void forge_answer(const uint8_t *hello, const uint8_t *secret, uint32_t claimed,
                  uint32_t target, uint8_t answer[DC_TCP_ANSWER_LEN]);

#endif
