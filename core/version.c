/* dcomm_version(): the one source file of the shared library itself; the rest
 * comes whole from the static layers. */
#include "dcomm.h"

#define DC_STR2(x) #x
#define DC_STR(x)  DC_STR2(x)

DCOMM_API const char *dcomm_version(void)
{
    return DC_STR(DCOMM_VERSION_MAJOR) "." DC_STR(DCOMM_VERSION_MINOR) "." DC_STR(
        DCOMM_VERSION_PATCH);
}
