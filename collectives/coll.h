/*
 * Collective algorithms over endpoints. Each algorithm is one file with a row
 * {name, doc, supported, run, cost}; select.c ranks the rows by cost, and an
 * algorithm that declines via supported() passes to the next.
 */
#ifndef DC_COLL_H
#define DC_COLL_H

#include <stddef.h>
#include <stdint.h>

#include "dcomm.h"
#include "module.h"
#include "net.h"

/* Everything an algorithm may use: the comm's ranks, one tag for the whole
 * collective (messages are FIFO per peer, so one tag suffices), and persistent,
 * pre-faulted scratch memory owned by the caller. */
typedef struct dc_shm_group dc_shm_group_t; /* transports/shm: a host's shared segment */
typedef struct dc_coll_dev dc_coll_dev_t;   /* device buffers: below */

typedef struct dc_coll_ctx {
    dc_net_t *net;
    int rank, size;      /* within the comm */
    const int *ranks;    /* comm rank -> world rank */
    const int *host_of;  /* comm rank -> host index (0 .. nhosts-1) */
    int nhosts;          /* hosts spanned by the comm */
    uint64_t tag;
    void *scratch;
    size_t scratch_size; /* at least DC_COLL_SCRATCH_MIN */
    size_t chunk_bytes;  /* pipeline chunk; 0: the algorithm's default */
    /* Request storage that outlives the call: after an error, requests may
     * still be posted until the caller closes the network. */
    dc_request_t *reqs;  /* [DC_COLL_MAX_REQS] */
    /* Shared segment of the comm's ranks when they all live on one host and
     * the shm transport is in use (shm-direct); NULL otherwise. */
    dc_shm_group_t *shm_group;
    /* Set only where the buffers are device memory and a device library runs
     * the collective (the device rows, coll_nccl.c); NULL otherwise. */
    const dc_coll_dev_t *dev;
} dc_coll_ctx_t;

/*
 * What a device row needs besides its arguments: the device library's ops and
 * the comm's communicator, and the caller's services, each called with owner:
 * persistent device scratch (grown on demand, reused by the next call),
 * copies between any mix of host and device memory, zeros in device memory,
 * and the end of an enqueued operation, where the caller's deadline, liveness
 * checks and failure policy apply (a row never waits on its own).
 */
struct dc_coll_dev {
    const dc_nccl_ops_t *nccl;
    dc_nccl_comm_t *nccl_comm; /* the comm's; NULL: none */
    /* This rank submitted nothing (it joined): the arguments' buffers are host
     * memory; it contributes zeros from the device and its result is dropped. */
    int joined;
    void *owner;
    dc_status_t (*scratch)(void *owner, size_t bytes, void **buf_p);
    dc_status_t (*copy)(void *owner, void *dst, const void *src, size_t bytes);
    dc_status_t (*zero)(void *owner, void *dptr, size_t bytes);
    /* status: the enqueue's (or of what prepared it); ticket: its ticket;
     * bytes: its size, for the deadline. Waits for the operation when status
     * is DCOMM_OK; returns its outcome. */
    dc_status_t (*finish)(void *owner, dc_status_t status, uint64_t ticket, int coll, size_t bytes);
};

#define DC_COLL_MAX_REQS 64

#define DC_COLL_SCRATCH_MIN (4u << 20)

/*
 * What one collective works on. Counts are in elements; buffers are the
 * caller's (user buffers, or result buffers the coordinator allocated).
 *  allreduce:     sendbuf -> recvbuf, count elements (sendbuf == recvbuf: in place)
 *  broadcast:     recvbuf, count elements, from comm rank root
 *  allgather:     sendbuf holds counts[rank] elements; recvbuf receives
 *                 counts[0] + ... + counts[size-1] elements in rank order
 *  reducescatter: sendbuf holds count elements; recvbuf receives this rank's
 *                 segment (dc_ring_segment(count, size, rank)) reduced by op
 *  alltoall:      sendbuf holds counts[r] elements for each comm rank r, in
 *                 rank order; recvbuf receives recv_counts[r] from each r, in
 *                 rank order (recv_counts from dc_alltoall_counts)
 *  barrier:       no data
 * A fused allreduce may come as segments instead (nsegs > 0, sendbuf and
 * recvbuf NULL): the data is the concatenation of the segments' buffers, so
 * that tensors are fused without a copy into a fusion buffer. Only algorithms
 * with .segments set are given such arguments.
 */
typedef struct dc_coll_seg {
    const void *sendbuf; /* NULL: contributes zeros (a rank that joined) */
    void *recvbuf;       /* NULL: the result is dropped */
    size_t off;          /* first element within the concatenation */
    size_t count;
} dc_coll_seg_t;

typedef struct dc_coll_args {
    const void *sendbuf;
    void *recvbuf;
    size_t count;
    dcomm_dtype_t dtype;
    dcomm_op_t op;
    int root;                 /* broadcast: comm rank of the root */
    const size_t *counts;     /* allgather, alltoall: [size], see above */
    const size_t *recv_counts;/* alltoall: [size] */
    const dc_coll_seg_t *segs;/* allreduce: segments in order of off, or NULL */
    size_t nsegs;
} dc_coll_args_t;

typedef struct dc_cost_in dc_cost_in_t; /* coll_cost.h */

typedef struct dc_coll_algo {
    const char *name;
    const char *doc;
    int (*supported)(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args);
    dc_status_t (*run)(const dc_coll_ctx_t *ctx, const dc_coll_args_t *args);
    /* Predicted seconds, INFINITY where the algorithm does not apply; the
     * formula is documented beside it, in coll_cost.h's notation. Same result
     * on every rank (it sees only what select.c gives it). */
    double (*cost)(const dc_cost_in_t *in);
    int segments; /* runs arguments given as segments (dc_coll_args_t.segs) */
} dc_coll_algo_t;

/* Every algorithm, one row each (one file each). */
extern const dc_coll_algo_t dc_allreduce_ring_algo;      /* "ring" */
extern const dc_coll_algo_t dc_allreduce_rd_algo;        /* "rd": recursive doubling */
extern const dc_coll_algo_t dc_allreduce_rab_algo;       /* "rab": Rabenseifner, any size */
extern const dc_coll_algo_t dc_allreduce_dbtree_algo;    /* "dbtree": double binary tree */
extern const dc_coll_algo_t dc_allreduce_shmdirect_algo; /* "shmdirect" */
extern const dc_coll_algo_t dc_allreduce_hier_algo;      /* "hier": hierarchical */
extern const dc_coll_algo_t dc_allgather_ring_algo;      /* "ring" */
extern const dc_coll_algo_t dc_allgather_bruck_algo;     /* "bruck" */
extern const dc_coll_algo_t dc_allgather_hier_algo;      /* "hier": hierarchical */
extern const dc_coll_algo_t dc_bcast_binomial_algo;      /* "binomial" */
extern const dc_coll_algo_t dc_bcast_chain_algo;         /* "chain": pipelined */
extern const dc_coll_algo_t dc_reducescatter_ring_algo;  /* "ring" */
extern const dc_coll_algo_t dc_reducescatter_rhalving_algo; /* "rhalving" */
extern const dc_coll_algo_t dc_alltoall_pairwise_algo;   /* "pairwise" */
extern const dc_coll_algo_t dc_barrier_dissemination_algo; /* "dissemination" */
/* "mpi": the collective run by MPI itself (mpi module), every peer over mpi. */
extern const dc_coll_algo_t dc_allreduce_mpi_algo;
extern const dc_coll_algo_t dc_allgather_mpi_algo;
extern const dc_coll_algo_t dc_bcast_mpi_algo;
/* "nccl": the collective run by NCCL on device buffers (ctx->dev; nccl module). */
extern const dc_coll_algo_t dc_allreduce_nccl_algo;
extern const dc_coll_algo_t dc_bcast_nccl_algo;
extern const dc_coll_algo_t dc_allgather_nccl_algo;
extern const dc_coll_algo_t dc_reducescatter_nccl_algo;
extern const dc_coll_algo_t dc_alltoall_nccl_algo;

/* Alltoall prelude: every rank learns how many elements each peer sends it
 * (pairwise exchange of one size_t per pair). recv_counts: [size]. */
dc_status_t dc_alltoall_counts(const dc_coll_ctx_t *ctx, const size_t *send_counts,
                               size_t *recv_counts);

/* Element range [off, off + len) of an allreduce's input or output, whether
 * given as one buffer or as segments (coll_seg.c). gather copies the input
 * into dst (zeros for a segment without input); scatter copies src into the
 * output with copy (memcpy or a streaming copy); input returns a pointer to
 * the range where it lies in one buffer, else gathers it into scratch. */
void dc_coll_gather(const dc_coll_args_t *args, size_t esize, size_t off, size_t len, void *dst);
void dc_coll_scatter(const dc_coll_args_t *args, size_t esize, size_t off, size_t len,
                     const void *src, void (*copy)(void *, const void *, size_t));
const void *dc_coll_input(const dc_coll_args_t *args, size_t esize, size_t off, size_t len,
                          void *scratch);

/* The ring pattern (coll_ring.c), used by several algorithms and by the
 * coordinator. Ring schedule of the reduce-scatter phase: at step s
 * (0 .. size-2) rank r sends segment send_seg and receives recv_seg. */
void dc_ring_rs_step(int rank, int size, int step, int *send_seg_p, int *recv_seg_p);
/* Segment i of count elements split over size ranks: the first count % size
 * segments get one element more. */
void dc_ring_segment(size_t count, int size, int i, size_t *offset_p, size_t *len_p);

#endif
