/* Thread-local last-error text behind dcomm_last_error(). */
#include <stdarg.h>
#include <stdio.h>

#include "status.h"

static _Thread_local char last_error[1024];

dc_status_t dc_error_set(dc_status_t status, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(last_error, sizeof(last_error), fmt, ap);
    va_end(ap);
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
