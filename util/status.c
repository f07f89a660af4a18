/* Status strings (from the one X-macro of dcomm.h) and the last error. */
#include "status.h"

DCOMM_API const char *dcomm_status_string(dcomm_status_t status)
{
    switch (status) {
#define STATUS_CASE(name, value, text)                                                     \
    case DCOMM_##name:                                                                     \
        return text;
        DCOMM_STATUS_MAP(STATUS_CASE)
#undef STATUS_CASE
    }
    return "unknown status";
}

DCOMM_API const char *dcomm_last_error(void)
{
    return dc_error_get();
}
