/* What the files of the public C ABI (api*.c) share. */
#ifndef DC_API_H
#define DC_API_H

#include "core.h"

/* The status and message of a call before dcomm_init. */
dc_status_t dc_api_not_initialized(void);

/* api_submit.c: checks name (NULL: "<op>.noname.<n>") and the comm, copies
 * counts (alltoall), queues the request for the coordinator and gives its
 * handle; fn names the calling function in messages. */
/* Set by the blocking forms around their submission (api_handle.c). */
extern _Thread_local int dc_api_wait_follows;

dc_status_t dc_api_submit(dc_wire_req_t *req, const char *name, const void *sendbuf,
                          void *recvbuf, size_t *counts, dcomm_handle_t *handle_p,
                          const char *fn);

/* api_handle.c: the blocking forms' end: waits for handle (when status is
 * not an error), releases it, returns the operation's status. */
dc_status_t dc_api_wait_release(dc_status_t status, dcomm_handle_t handle);

#endif
