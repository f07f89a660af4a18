/*
 * Device (CUDA) tensors of the coordinator (coord_dev.c): per comm, NCCL is
 * tried on the first device collective; every member then knows whether it
 * serves the comm, or whether device data is staged through pinned host memory.
 */
#ifndef DC_COORD_DEV_H
#define DC_COORD_DEV_H

#include "coord_run.h"
#include "coord_work.h"

enum { DC_DEV_UNDECIDED = 0, DC_DEV_NCCL, DC_DEV_STAGED };

typedef struct coord_dev {
    dc_state_t *st;
    const struct dc_cuda_ops *cuda; /* NULL: the cuda module is not loaded */
    const struct dc_nccl_ops *nccl; /* NULL: not loaded, or not in DCOMM_TRANSPORTS */
    int ready;                      /* the fields above are set, the device chosen */
    int device;                     /* the CUDA device in use */
    void *stage;                    /* pinned host: staging and staged fusion */
    size_t stage_size;
    void *dbuf;                     /* device: NCCL fusion buffer and scratch */
    size_t dbuf_size;
    struct {
        int mode;                   /* DC_DEV_* */
        struct dc_nccl_comm *nccl;
        int failed;                 /* an operation failed: abort, do not close */
    } comms[DC_MAX_COMMS];
} coord_dev_t;

void dc_dev_init(coord_dev_t *d, dc_state_t *st);

/* Before the first device work of an item: the device, and the comm's mode
 * (NCCL opened on first use, agreed by the members through run; else staged).
 * Collective over the comm's members, on ctx's tag. */
dc_status_t dc_dev_prepare(coord_dev_t *d, dc_runner_t *run, const dc_coll_ctx_t *ctx,
                           int32_t comm, int *mode_p);
/* Whether device copies go through the cuda module (else plain memcpy). */
int dc_dev_has_cuda(const coord_dev_t *d);
/* Copies between any mix of host and device memory (plain memcpy host-host). */
dc_status_t dc_dev_copy(coord_dev_t *d, void *dst, const void *src, size_t bytes);
/* Persistent buffers, grown on demand: pinned host / device. */
dc_status_t dc_dev_stage(coord_dev_t *d, size_t bytes, void **buf_p);
dc_status_t dc_dev_dbuf(coord_dev_t *d, size_t bytes, void **buf_p);
/* Runs collective coll on comm's NCCL communicator: the selector's device
 * rows (coord_run.h), given this part's scratch, copies, and its wait for an
 * operation (see coord_dev.c for why it waits). args as prepared for the host
 * path (results into host memory; a joined rank's own buffers are ignored, it
 * sends zeros from the device). *algo_p: the row's name ("nccl"). */
dc_status_t dc_dev_run(coord_dev_t *d, dc_runner_t *run, int coll, int32_t comm, int joined,
                       const dc_coll_ctx_t *ctx, const dc_coll_args_t *args, const char *name,
                       const char **algo_p);
/* A staged device tensor of item it: this rank's input into pinned host
 * memory (args then point there), and the result back to the device. */
dc_status_t dc_dev_stage_in(coord_dev_t *d, const exec_item_t *it, const dc_comm_t *cm,
                            dc_coll_args_t *args);
dc_status_t dc_dev_stage_out(coord_dev_t *d, const exec_item_t *it, const dc_comm_t *cm,
                             const dc_coll_args_t *args);
/* Staged device tensors: AVG's final 1/size on the device. */
dc_status_t dc_dev_scale(coord_dev_t *d, void *buf, size_t count, int dtype, int size);
/* The NCCL communicator of a destroyed comm; everything at shutdown. */
void dc_dev_comm_close(coord_dev_t *d, int32_t comm);
void dc_dev_free(coord_dev_t *d);

#endif
