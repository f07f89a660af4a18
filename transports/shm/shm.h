/*
 * Layout of a shared-memory segment of the shm transport. Each process owns one
 * segment (a memfd, private to the job's user, gone with its last mapping): its
 * doorbell and one inbound SPSC byte ring per peer. Peers map it through
 * /proc/<pid>/fd/<fd>; the address record below travels through the store.
 */
#ifndef DC_SHM_H
#define DC_SHM_H

#include <stdatomic.h>
#include <stdint.h>

#include "futex.h"
#include "status.h"

#define DC_SHM_MAGIC        0x64636f6d6d73686dull /* "dcommshm" */
#define DC_SHM_VERSION      2
#define DC_SHM_WHY_MAX      256 /* a failed owner's reason, NUL-terminated */
#define DC_SHM_RING_DEFAULT (4u << 20)
#define DC_SHM_RING_MIN     4096u
#define DC_SHM_RING_MAX     (1u << 30)
#define DC_SHM_SEG_BUDGET   (256u << 20) /* default ring size shrinks to stay under */

/* Control block of one ring. head/tail count bytes ever written/read, so
 * head - tail is the fill level; each lives on its own cache line. */
typedef struct dc_shm_ring {
    _Alignas(DC_CACHE_LINE) _Atomic uint64_t head; /* written by the sender */
    _Alignas(DC_CACHE_LINE) _Atomic uint64_t tail; /* written by the receiver (owner) */
    _Atomic uint32_t sender_waiting; /* sender found the ring full: ring its doorbell */
    _Alignas(DC_CACHE_LINE) int32_t sender;        /* world rank writing this ring */
    uint32_t reserved;
    uint64_t data_offset; /* from the segment start */
} dc_shm_ring_t;

typedef struct dc_shm_seg {
    uint64_t magic;
    uint32_t version;
    int32_t rank;
    int32_t pid;
    uint32_t nrings;
    uint64_t ring_size; /* power of two */
    uint64_t size;      /* whole segment */
    _Atomic uint32_t closed; /* set by the owner in close(): a clean exit */
    _Atomic uint32_t failed; /* set by the owner in fail(), after why */
    char why[DC_SHM_WHY_MAX];
    _Alignas(DC_CACHE_LINE) dc_doorbell_t doorbell;
    _Alignas(DC_CACHE_LINE) dc_shm_ring_t rings[];
} dc_shm_seg_t;

/* Framing inside a ring: this header, then len payload bytes (no padding). */
typedef struct dc_shm_msg_hdr {
    uint64_t tag;
    uint64_t len;
} dc_shm_msg_hdr_t;

/* What a process publishes under "shm/<rank>". */
typedef struct dc_shm_addr {
    uint64_t magic;
    int32_t pid;
    int32_t fd;
    uint64_t size;
} dc_shm_addr_t;

/* Checks the header of a peer's segment, mapped at seg (size bytes, from its
 * address record), against what the record says (peer's rank and pid) and
 * against size (ring count, ring size, the ring's data inside the segment), and
 * finds the ring it keeps for rank me: that ring's index, or a negative status
 * with a message naming path and peer. Pure; fuzzed by tests/fuzz. */
int dc_shm_seg_find_ring(const dc_shm_seg_t *seg, size_t size, int peer, int32_t pid, int me,
                         const char *path);

#endif
