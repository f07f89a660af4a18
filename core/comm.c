/* Lookups in the communicator table that every part of the coordinator makes. */
#include "core.h"

const dc_comm_t *dc_comm_get(dc_state_t *st, int32_t id)
{
    const dc_comm_t *cm = NULL;

    pthread_mutex_lock(&st->lock);
    if (id >= 0 && id < DC_MAX_COMMS && st->comms[id].in_use) {
        cm = &st->comms[id];
    }
    pthread_mutex_unlock(&st->lock);
    return cm;
}

int dc_comm_rank_of(const dc_comm_t *cm, int world_rank)
{
    for (int i = 0; i < cm->size; i++) {
        if (cm->ranks[i] == world_rank) {
            return i;
        }
    }
    return -1;
}
