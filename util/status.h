/* Internal status type, error text and check macros shared by every layer. */
#ifndef DC_STATUS_H
#define DC_STATUS_H

#include "dcomm.h"

typedef dcomm_status_t dc_status_t;

/* Records this thread's last error (status plus formatted detail) and returns
 * status, so a detection site can write `return dc_error_set(...)`. */
dc_status_t dc_error_set(dc_status_t status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
const char *dc_error_get(void);
void dc_error_clear(void);
/* A wait that timed out says on which rank (the coordinator then asks what
 * that rank was itself waiting on); -1 clears. */
void dc_error_set_quiet_peer(int rank);
int dc_error_quiet_peer(void);

/* Check macros take their label explicitly; none hides a return. */
#define DC_CHECK_GOTO(call, status, label)                                                 \
    do {                                                                                   \
        (status) = (call);                                                                 \
        if ((status) < 0) {                                                                \
            goto label;                                                                    \
        }                                                                                  \
    } while (0)

#define DC_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define DC_MIN(a, b)     ((a) < (b) ? (a) : (b))
#define DC_MAX(a, b)     ((a) > (b) ? (a) : (b))
#define DC_CACHE_LINE    64

#endif
