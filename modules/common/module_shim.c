/*
 * The util symbols a module's code uses (DC_LOG macros, dc_error_set), bound to
 * the core's logger and error recorder, so a module never links a second copy of
 * the core's state. Hidden visibility keeps them private to each module.
 */
#include "module_shim.h"

#include <stdio.h>

dc_log_level_t dc_log_level = DC_LOG_LEVEL_WARN;
static dc_module_host_t shim_host;
static _Thread_local char local_error[1024]; /* used before init only */

void dc_module_shim_init(const dc_module_host_t *host)
{
    shim_host = *host;
    dc_log_level = host->log_level;
}

void dc_log_vemit(dc_log_level_t level, const char *file, int line, const char *fmt, va_list ap)
{
    if (shim_host.log != NULL) {
        shim_host.log(level, file, line, fmt, ap);
    }
}

void dc_log_emit(dc_log_level_t level, const char *file, int line, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    dc_log_vemit(level, file, line, fmt, ap);
    va_end(ap);
}

dc_status_t dc_error_set(dc_status_t status, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    if (shim_host.error_vset != NULL) {
        shim_host.error_vset(fmt, ap);
    } else {
        vsnprintf(local_error, sizeof(local_error), fmt, ap);
    }
    va_end(ap);
    return status;
}

const char *dc_error_get(void)
{
    return shim_host.error_get != NULL ? shim_host.error_get() : local_error;
}

void dc_error_clear(void)
{
    local_error[0] = '\0';
}
