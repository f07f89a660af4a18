/* Helpers shared by the multi-rank test programs (run through dlaunch). */
#ifndef RANK_UTIL_H
#define RANK_UTIL_H

#include <dcomm.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK_OK(call)                                                                     \
    do {                                                                                   \
        dcomm_status_t s_ = (call);                                                        \
        if (s_ != DCOMM_OK) {                                                              \
            fprintf(stderr, "rank %d: %s:%d: %s: %s (%s)\n", dcomm_rank(), __FILE__,      \
                    __LINE__, #call, dcomm_status_string(s_), dcomm_last_error());         \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

#endif
