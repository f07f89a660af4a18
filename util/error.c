/* Thread-local last-error text behind dcomm_last_error(). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "status.h"

static _Thread_local char last_error[1024];

dc_status_t dc_error_set(dc_status_t status, const char *fmt, ...)
{
    char msg[sizeof(last_error)];
    va_list ap;

    /* Through a copy: callers often pass dc_error_get() itself as an argument. */
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    memcpy(last_error, msg, sizeof(msg));
    return status;
}

const char *dc_error_get(void)
{
    return last_error;
}

void dc_error_clear(void)
{
    last_error[0] = '\0';
}

/* The peer behind this thread's last DCOMM_ERR_TIMEOUT: the rank it waited
 * on, which went quiet (-1: none). */
static _Thread_local int quiet_peer = -1;

void dc_error_set_quiet_peer(int rank)
{
    quiet_peer = rank;
}

int dc_error_quiet_peer(void)
{
    return quiet_peer;
}
