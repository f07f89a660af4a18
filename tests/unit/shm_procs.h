/*
 * Harness of the shm transport's unit tests (test_shm*.c; not a test itself):
 * a scenario forks its ranks, each opens the transport over a directory store
 * and runs the scenario's body; a failed check in a child prints where and
 * ends the child with 1, which fails the scenario, as does a file of dcomm's
 * left in /dev/shm.
 */
#ifndef SHM_PROCS_H
#define SHM_PROCS_H

#include <stddef.h>
#include <stdint.h>

#include "fork_ranks.h"
#include "transport.h"

#define MAX_PROCS   4
#define WAIT_MS     60000 /* per scenario; a bug fails the test instead of hanging */
#define DRIVE_MS    30000

static const dc_transport_ops_t *const ops = &dc_transport_shm_ops;

/* Says which check failed where (and in which rank), then ends the child
 * with 1; child_fail(__LINE__, fmt, ...) names the calling file. */
void child_fail_at(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));
#define child_fail(...) child_fail_at(__FILE__, __VA_ARGS__)

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

/* Progress until every request is done, sleeping on the doorbell when idle and
 * calling check() every 20 ms. Returns 0, or -1 at the deadline. The first
 * negative check() status goes to *check_p (may be NULL). */
int drive(ctx_t *c, dc_request_t *const *reqs, int n, int timeout_ms, dc_status_t *check_p);
/* drive for DRIVE_MS; the child fails, naming the caller's line, unless every
 * request completed with DCOMM_OK. */
void drive_ok_at(const char *file, ctx_t *c, dc_request_t *const *reqs, int n, int line);
#define drive_ok(...) drive_ok_at(__FILE__, __VA_ARGS__)
/* A pattern that says which message from which rank to which it is (byte i
 * of it: pattern()); verify returns 0 (after saying where) when buf differs. */
uint8_t pattern(int src, int dst, uint64_t msg, size_t i);
void fill(uint8_t *buf, size_t len, int src, int dst, uint64_t msg);
int verify(const uint8_t *buf, size_t len, int src, int dst, uint64_t msg);

typedef int (*body_fn_t)(ctx_t *c);

typedef struct scenario {
    int nprocs;
    uint64_t ring_size;    /* DCOMM_SHM_RING_SIZE in bytes, 0: default */
    int serve_self;        /* list this rank among its own peers */
    int killed_rank;       /* expected to die by SIGKILL, -1: none */
    body_fn_t body;
} scenario_t;

/* Forks the ranks, waits for them (killing them all at the deadline) and checks
 * their exits and that no file is left in /dev/shm. */
void run_scenario(const scenario_t *sc);

#endif
