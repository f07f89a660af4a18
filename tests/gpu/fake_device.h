/* The fake cuda module's memory (fake_cuda_module.c), for the fake nccl
 * module built into the same library (fake_nccl_module.c). */
#ifndef DC_FAKE_DEVICE_H
#define DC_FAKE_DEVICE_H

#include <stddef.h>

#include "status.h"

/* The module's read-write view of len bytes at ptr: the shadow of fake device
 * memory, ptr itself for host memory. NULL, with *status set, where the range
 * overruns a device allocation. */
void *dc_fake_view(const void *ptr, size_t len, dc_status_t *status);

#endif
