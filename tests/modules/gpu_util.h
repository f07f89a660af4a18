/* Shared by the GPU module tests: load the modules, and skip (exit 77, ctest's
 * SKIP_RETURN_CODE) with a clear message where no GPU is present. */
#ifndef DC_TEST_GPU_UTIL_H
#define DC_TEST_GPU_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "module.h"

#define GPU_SKIP 77

/* The loaded module name, or exits: 77 when it declined for want of a device,
 * 1 when it is missing or failed otherwise. */
static inline const dc_module_t *gpu_module_or_skip(const char *name)
{
    const dc_module_t *mod;
    const char *mname, *detail;
    int loaded;

    dc_modules_load(getenv("DCOMM_MODULE_PATH")); /* a test: its own environment */
    mod = dc_module_find(name);
    if (mod != NULL) {
        return mod;
    }
    for (int i = 0; dc_module_report(i, &mname, &loaded, &detail); i++) {
        if (strcmp(mname, name) == 0 && strstr(detail, "no CUDA device") != NULL) {
            printf("SKIP: no GPU here (%s module: %s)\n", name, detail);
            exit(GPU_SKIP);
        }
        if (strcmp(mname, name) == 0) {
            fprintf(stderr, "FAIL: %s module not loaded: %s\n", name, detail);
            exit(1);
        }
    }
    fprintf(stderr, "FAIL: no module slot called %s\n", name);
    exit(1);
}

#endif
