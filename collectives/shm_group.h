/*
 * A collective pattern: a shared segment for the ranks of one host, over any
 * transport whose peers share memory (its query()'s shared_memory), used by
 * shm-direct allreduce. Each
 * member has two input slots of one chunk, there are two result chunks, and
 * each member publishes per-chunk sequence numbers that the others wait on
 * (spinning briefly, yielding the core, then sleeping on the word's futex).
 * Created once, reused for every collective; the memory is a memfd shared
 * through /proc/<pid>/fd like the shm transport's segments, so nothing is left
 * in /dev/shm.
 */
#ifndef DC_SHM_GROUP_H
#define DC_SHM_GROUP_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "net.h"
#include "status.h"

/* Default chunk: as large as DC_SHM_GROUP_CHUNK_DEFAULT (every chunk costs
 * hand-offs, and a hand-off may wait for a descheduled peer), shrunk for large
 * groups so that the segment stays near DC_SHM_GROUP_SEGMENT_DEFAULT, but not
 * below DC_SHM_GROUP_CHUNK_FLOOR. */
#define DC_SHM_GROUP_CHUNK_DEFAULT   (1u << 20)
#define DC_SHM_GROUP_SEGMENT_DEFAULT (32u << 20)
#define DC_SHM_GROUP_CHUNK_FLOOR     (256u << 10)
#define DC_SHM_GROUP_CHUNK_MIN     4096u
#define DC_SHM_GROUP_CHUNK_MAX     (64u << 20)
#define DC_SHM_GROUP_MAX           256 /* members */
#define DC_SHM_GROUP_NBUF          2   /* double buffering: chunk k+1 fills while k reduces */
/* Shm-direct allreduce takes one phase (every member reduces every input, one
 * hand-off per chunk) while the input's bytes times the members are at most
 * this. Beyond, two phases win also with two members: at 1 MiB 77 us against
 * 128 us, at 64 MiB 6.3 ms against 11.8 ms (np=2, in place, quiet machine). */
#define DC_SHM_GROUP_ONEPHASE_MAX  (32u << 10)

/* What a member publishes: the last step (chunk number, counted across
 * collectives) for which it has ... */
typedef enum dc_shm_group_seq {
    DC_SHM_SEQ_IN = 0,  /* ... copied its input into its slot */
    DC_SHM_SEQ_RED = 1, /* ... reduced its slice into the result */
    DC_SHM_SEQ_OUT = 2, /* ... copied the result out (the buffer may be reused) */
    DC_SHM_SEQ_COUNT = 3
} dc_shm_group_seq_t;

/* One member's control block in the segment, on its own cache line. Steps are
 * 32-bit futex words compared with wrap-around. */
typedef struct dc_shm_group_ctl {
    _Alignas(DC_CACHE_LINE) _Atomic uint32_t seq[DC_SHM_SEQ_COUNT];
    _Atomic uint32_t sleepers; /* > 0 while a peer sleeps on one of seq[] */
    _Atomic uint32_t naps;     /* times this member went to sleep in a wait */
    int32_t pid;
    _Atomic uint32_t failed;   /* set by dc_shm_group_fail, after why */
    char why[192];             /* the failed member's cause, NUL-terminated */
} dc_shm_group_ctl_t;

struct dc_shm_group {
    int n, me;          /* members; this process's index */
    int *world_ranks;   /* [n] */
    size_t chunk;       /* bytes per slot (a multiple of 4096) */
    uint32_t step;      /* last step this member used; the same on every member */
    int timeout_ms;     /* <= 0: wait forever */
    int spin;           /* polls before yielding, adapted between the bounds below */
    int spin_min, spin_max;
    int yields;         /* yields of the core before sleeping */
    int failed;         /* an earlier collective failed: members are out of step */
    void *base;         /* the mapping */
    size_t size;
    dc_shm_group_ctl_t *ctl; /* [n] */
    uint8_t *data;           /* slots, then results */
    uint32_t *seen;          /* [n][DC_SHM_SEQ_COUNT]: each member's seq[] as last read
                              * (they only grow: a wait already met costs no shared read) */
    int32_t *pids;           /* [n] */
    int *pidfds;             /* [n], -1: fall back to kill(pid, 0) */
    dc_net_t *net;           /* checked while sleeping (peers' transports, dlaunch's
                              * events), as dc_net_wait does; NULL: not */
};
typedef struct dc_shm_group dc_shm_group_t;

/*
 * Collective over world_ranks[0 .. n-1] (all on this host; this process is
 * world_ranks[my_index]): member 0 creates the segment and passes its address
 * to the others through net (messages with tag), which map it; nobody returns
 * before everyone has mapped it or failed. chunk_bytes: the largest pipeline
 * chunk (0: the default above), rounded up to 4096; the segment holds
 * 2 * (n + 1) chunks, pre-faulted. timeout_ms: DCOMM_TIMEOUT for later waits.
 */
dc_status_t dc_shm_group_create(dc_net_t *net, const int *world_ranks, int n, int my_index,
                                size_t chunk_bytes, int timeout_ms, uint64_t tag,
                                dc_shm_group_t **group_p);
void dc_shm_group_destroy(dc_shm_group_t *g);

/* This member failed (why names it and the cause) but lives on: members
 * waiting on it wake at once and fail with DCOMM_ERR_PEER_LOST and this cause. */
void dc_shm_group_fail(dc_shm_group_t *g, const char *why);

/* Stops checking the net in waits (it is being closed). */
void dc_shm_group_forget_net(dc_shm_group_t *g);

/* 1 when the group is exactly these ranks in this order with this process at me. */
int dc_shm_group_matches(const dc_shm_group_t *g, const int *world_ranks, int n, int me);

static inline int dc_shm_group_onephase(int n, size_t bytes)
{
    return bytes * (size_t)n <= DC_SHM_GROUP_ONEPHASE_MAX;
}

/* Input slot of member r for buffer b, and the result chunk of buffer b. */
static inline uint8_t *dc_shm_group_slot(const dc_shm_group_t *g, int r, int b)
{
    return g->data + ((size_t)b * (size_t)(g->n + 1) + (size_t)r) * g->chunk;
}

static inline uint8_t *dc_shm_group_result(const dc_shm_group_t *g, int b)
{
    return dc_shm_group_slot(g, g->n, b);
}

/* Publishes this member's seq[which] = step (after the data it covers is
 * written) and wakes peers sleeping on it. */
void dc_shm_group_post(dc_shm_group_t *g, dc_shm_group_seq_t which, uint32_t step);

/* Waits until member r's seq[which] has reached step: spins briefly, yields
 * the core a few times (the peer may need it), then sleeps on the futex. DCOMM_ERR_TIMEOUT after timeout_ms, DCOMM_ERR_PEER_LOST
 * when r's process is gone; both name r. */
dc_status_t dc_shm_group_wait(dc_shm_group_t *g, int r, dc_shm_group_seq_t which,
                              uint32_t step);

#endif
