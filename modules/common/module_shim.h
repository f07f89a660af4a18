/* What every module links instead of the core's util layer: dc_log_* and
 * dc_error_* forward to the functions the core handed over at init. */
#ifndef DC_MODULE_SHIM_H
#define DC_MODULE_SHIM_H

#include "module.h"

/* Remembers the host's services; call first thing in a module's init. */
void dc_module_shim_init(const dc_module_host_t *host);

#endif
