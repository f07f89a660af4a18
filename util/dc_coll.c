/* Names of the collectives (dc_coll.h). */
#include "dc_coll.h"

static const char *const coll_names[DC_COLL_COUNT] = {
    [DC_COLL_ALLREDUCE] = "allreduce",         [DC_COLL_BROADCAST] = "broadcast",
    [DC_COLL_ALLGATHER] = "allgather",         [DC_COLL_ALLTOALL] = "alltoall",
    [DC_COLL_REDUCESCATTER] = "reducescatter", [DC_COLL_BARRIER] = "barrier",
    [DC_COLL_JOIN] = "join",                   [DC_COLL_COMM_CREATE] = "comm_create",
    [DC_COLL_COMM_DESTROY] = "comm_destroy",
};

const char *dc_coll_name(int coll)
{
    return (coll >= 0 && coll < DC_COLL_COUNT) ? coll_names[coll] : "unknown";
}
