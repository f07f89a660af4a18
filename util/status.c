/* Status strings (from the one X-macro of dcomm.h), last error and dtype sizes. */
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

DCOMM_API size_t dcomm_dtype_size(dcomm_dtype_t dtype)
{
    static const size_t sizes[DCOMM_DTYPE_COUNT] = {
        [DCOMM_UINT8] = 1,   [DCOMM_INT8] = 1,     [DCOMM_INT32] = 4,   [DCOMM_INT64] = 8,
        [DCOMM_FLOAT16] = 2, [DCOMM_BFLOAT16] = 2, [DCOMM_FLOAT32] = 4, [DCOMM_FLOAT64] = 8,
    };

    return ((unsigned)dtype < DCOMM_DTYPE_COUNT) ? sizes[dtype] : 0;
}
