/* Lookups in the communicator table that every part of the coordinator makes. */
#include <stdlib.h>
#include <string.h>

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

void dc_comm_clear(dc_comm_t *cm)
{
    free(cm->ranks);
    free(cm->host_of);
    memset(cm, 0, sizeof(*cm));
}

/* Fills a new comm entry: members, this rank's place, hosts renumbered. */
dc_status_t dc_comm_fill(dc_state_t *st, dc_comm_t *cm, const int *ranks, int n)
{
    cm->ranks = malloc((size_t)n * sizeof(int));
    cm->host_of = malloc((size_t)n * sizeof(int));
    if (cm->ranks == NULL || cm->host_of == NULL) {
        dc_comm_clear(cm);
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "dcomm_comm_create: out of memory");
    }
    cm->size = n;
    cm->rank = -1;
    cm->nhosts = 0;
    for (int i = 0; i < n; i++) {
        int h = st->host_of[ranks[i]], j;

        cm->ranks[i] = ranks[i];
        if (ranks[i] == st->rank) {
            cm->rank = i;
        }
        for (j = 0; j < i && st->host_of[ranks[j]] != h; j++) {
        }
        cm->host_of[i] = j < i ? cm->host_of[j] : cm->nhosts++;
    }
    cm->in_use = 1;
    return DCOMM_OK;
}
