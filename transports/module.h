/*
 * Loadable modules (libdcomm-mpi.so, -ucx, -cuda, -nccl): each exports one
 * versioned table, dcomm_module_v1_<name>, that the core finds with dlopen at init
 * (NCCL's net-plugin idea), so libdcomm itself links none of their libraries.
 * The core hands each module its logger and error recorder.
 */
#ifndef DC_MODULE_H
#define DC_MODULE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "log.h"
#include "transport.h"

#define DC_MODULE_ABI_VERSION 1
/* Each module exports its table as dcomm_module_v1_<name> (distinct names, so
 * several modules can share the global namespace RTLD_GLOBAL gives them). */
#define DC_MODULE_SYMBOL_PREFIX "dcomm_module_v1_"

/* What the core gives a module at init. */
typedef struct dc_module_host {
    uint32_t abi_version;
    dc_log_fn_t log;
    dc_log_level_t log_level;
    /* Records the calling thread's last error in the core (dc_error_set). */
    void (*error_vset)(const char *fmt, va_list ap);
    const char *(*error_get)(void);
} dc_module_host_t;

/* Device memory services (cuda module). All calls from the coordinator thread. */
typedef struct dc_cuda_ops {
    /* 1 when ptr is device (or managed) memory, 0 for host memory. */
    int (*is_device_ptr)(const void *ptr);
    /* dst[i] = dst[i] op src[i], both device pointers, on the module's stream;
     * returns when done. */
    dc_status_t (*reduce)(void *dst, const void *src, size_t count, int dtype, int op);
    /* buf[i] *= factor for floating dtypes (AVG's final 1/size), on the device. */
    dc_status_t (*scale)(void *buf, size_t count, int dtype, double factor);
    /* Copies between host and device (either direction), synchronously. */
    dc_status_t (*memcpy)(void *dst, const void *src, size_t len);
    /* Pinned host buffer for staging (freed with host_free). */
    dc_status_t (*host_alloc)(size_t len, void **ptr_p);
    void (*host_free)(void *ptr);
    dc_status_t (*device_alloc)(size_t len, void **ptr_p);
    void (*device_free)(void *ptr);
    /* How many devices this process sees (0: none; the module then declines). */
    int (*device_count)(void);
    /* The CUDA ordinal of the device ptr is on; -1 for host memory. Any thread. */
    int (*device_of)(const void *ptr);
    /* Makes device the calling thread's current device and the module's stream
     * one of that device (the coordinator calls it before any device work). */
    dc_status_t (*use_device)(int device);
} dc_cuda_ops_t;

/* Device-buffer collectives (nccl module). Every call is from the coordinator
 * thread and only enqueues work on the comm's own stream; completion is polled
 * through CUDA events, so the coordinator never blocks on the GPU. */
typedef struct dc_nccl_comm dc_nccl_comm_t;
typedef struct dc_nccl_ops {
    /* Collective over nranks: rank 0 makes the unique id and sets it at key in
     * store; the others wait up to timeout_ms for it (one rank: no store
     * needed, it may be NULL). device: CUDA ordinal. */
    dc_status_t (*comm_open)(dc_store_t *store, const char *key, int rank, int nranks, int device,
                             int timeout_ms, dc_nccl_comm_t **comm_p);
    void (*comm_close)(dc_nccl_comm_t *comm);
    /* Enqueue; *ticket_p names the operation for test(). Counts in elements;
     * dtype/op are dcomm's. allgather/alltoall: count per rank;
     * reducescatter: count is the per-rank result. */
    dc_status_t (*allreduce)(dc_nccl_comm_t *c, const void *send, void *recv, size_t count,
                             int dtype, int op, uint64_t *ticket_p);
    dc_status_t (*broadcast)(dc_nccl_comm_t *c, void *buf, size_t count, int dtype, int root,
                             uint64_t *ticket_p);
    dc_status_t (*allgather)(dc_nccl_comm_t *c, const void *send, void *recv, size_t count,
                             int dtype, uint64_t *ticket_p);
    dc_status_t (*reducescatter)(dc_nccl_comm_t *c, const void *send, void *recv, size_t count,
                                 int dtype, int op, uint64_t *ticket_p);
    dc_status_t (*alltoall)(dc_nccl_comm_t *c, const void *send, void *recv, size_t count,
                            int dtype, uint64_t *ticket_p);
    /* Uneven forms: counts[r] elements from/to comm rank r, packed in rank order
     * (send and recv may be NULL where their counts add up to 0). */
    dc_status_t (*allgatherv)(dc_nccl_comm_t *c, const void *send, void *recv,
                              const size_t *counts, int dtype, uint64_t *ticket_p);
    dc_status_t (*alltoallv)(dc_nccl_comm_t *c, const void *send, const size_t *sendcounts,
                             void *recv, const size_t *recvcounts, int dtype,
                             uint64_t *ticket_p);
    /* DCOMM_OK when the operation is done, DCOMM_INPROGRESS when not yet, or an
     * error (NCCL's asynchronous error included). Never blocks. */
    dc_status_t (*test)(dc_nccl_comm_t *c, uint64_t ticket);
    /* Frees comm without waiting for its operations or its peers
     * (ncclCommAbort): after a failed operation or a lost peer, where
     * comm_close could wait forever. */
    void (*comm_abort)(dc_nccl_comm_t *comm);
} dc_nccl_ops_t;

typedef struct dc_module {
    uint32_t abi_version; /* DC_MODULE_ABI_VERSION */
    const char *name;     /* "mpi", "ucx", "cuda", "nccl" */
    /* Called once after dlopen. A negative status (reason via error_vset) means
     * the module cannot run here; it is then skipped. */
    dc_status_t (*init)(const dc_module_host_t *host);
    const dc_transport_ops_t *transport; /* or NULL */
    const dc_cuda_ops_t *cuda;           /* or NULL */
    const dc_nccl_ops_t *nccl;           /* or NULL */
    /* Optional, for jobs started by a foreign launcher (mpirun): 1 when this
     * process was started by it, and a broadcast from root over its runtime. */
    int (*launched_by)(void);
    dc_status_t (*boot_bcast)(void *buf, size_t len, int root);
} dc_module_t;

/* Loads every module once per process (later calls return at once, whatever
 * their path). path: colon-separated directories searched before the one
 * holding libdcomm (DCOMM_MODULE_PATH), or NULL. Never fails: a module that
 * cannot be loaded is logged once at info level. */
void dc_modules_load(const char *path);

/* Loaded modules: count, and each (NULL past the end). */
int dc_modules_count(void);
const dc_module_t *dc_module_get(int i);
/* The loaded module called name, or NULL. */
const dc_module_t *dc_module_find(const char *name);

/* Every module looked for, loaded or not: name, and the path or the reason it
 * was not loaded (for dcomm-info). Returns 0 past the end. */
int dc_module_report(int i, const char **name_p, int *loaded_p, const char **detail_p);

#endif
