/* The response cache (cache.h): a fixed array of entries indexed by bit, and a
 * name index. Eviction picks the entry with the oldest last_use, ties to the
 * lowest bit, so every rank evicts the same one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "core.h"

dc_status_t dc_cache_init(dc_cache_t *cache, int capacity)
{
    memset(cache, 0, sizeof(*cache));
    if (capacity <= 0) {
        return DCOMM_OK;
    }
    cache->entries = calloc((size_t)capacity, sizeof(*cache->entries));
    if (cache->entries == NULL) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory for a %d-entry response cache",
                            capacity);
    }
    cache->capacity = capacity;
    return DCOMM_OK;
}

void dc_cache_free(dc_cache_t *cache)
{
    for (int i = 0; i < cache->capacity; i++) {
        free(cache->entries[i].counts);
    }
    free(cache->entries);
    dc_map_free(&cache->index);
    memset(cache, 0, sizeof(*cache));
}

int dc_cache_cacheable(const dc_wire_req_t *req)
{
    switch (req->coll) {
    case DC_COLL_ALLREDUCE:
    case DC_COLL_BROADCAST:
    case DC_COLL_ALLGATHER:
    case DC_COLL_REDUCESCATTER:
    case DC_COLL_ALLTOALL:
        /* NULL names are numbered and never repeat: not worth a bit. */
        return strstr(req->name, ".noname.") == NULL;
    default:
        return 0;
    }
}

/* Alltoall counts travel with the data; allgather counts differ per rank, so
 * a rank compares its own count with what the entry recorded for it. */
static int same_params(const dc_cache_entry_t *e, const dc_wire_req_t *b, int comm_rank)
{
    const dc_wire_req_t *a = &e->req;

    /* A rank without a buffer (NOBUF) fits the agreed kind, whichever it is. */
    if (a->coll != b->coll || a->dtype != b->dtype || a->op != b->op || a->root != b->root ||
        a->comm != b->comm || (b->device != DC_WIRE_NOBUF && a->device != b->device) ||
        !dc_wire_same_shape(a, b, dc_wire_shape_from(a->coll))) {
        return 0;
    }
    switch (a->coll) {
    case DC_COLL_ALLTOALL: return 1;
    case DC_COLL_ALLGATHER:
        return comm_rank >= 0 && (uint32_t)comm_rank < e->ncounts &&
               e->counts[comm_rank] == b->count;
    default: return a->count == b->count;
    }
}

static int find(const dc_cache_t *cache, const dc_wire_req_t *req)
{
    char key[DC_WIRE_NAME_MAX + 16];
    void *v;

    dc_op_key(key, sizeof(key), req->comm, req->name);
    v = dc_map_get(&cache->index, key);
    return v != NULL ? (int)((uintptr_t)v - 1) : -1;
}

int dc_cache_lookup(dc_cache_t *cache, const dc_wire_req_t *req, int comm_rank, int *bit_p)
{
    int bit;

    if (cache->capacity == 0 || !dc_cache_cacheable(req)) {
        return DC_CACHE_MISS;
    }
    bit = find(cache, req);
    if (bit < 0) {
        cache->misses++;
        return DC_CACHE_MISS;
    }
    if (bit_p != NULL) {
        *bit_p = bit;
    }
    if (!same_params(&cache->entries[bit], req, comm_rank)) {
        cache->misses++;
        return DC_CACHE_CHANGED;
    }
    cache->hits++;
    return bit;
}

void dc_cache_erase(dc_cache_t *cache, int bit)
{
    dc_cache_entry_t *e;
    char key[DC_WIRE_NAME_MAX + 16];

    if (bit < 0 || bit >= cache->capacity || !cache->entries[bit].in_use) {
        return;
    }
    e = &cache->entries[bit];
    dc_op_key(key, sizeof(key), e->req.comm, e->req.name);
    dc_map_remove(&cache->index, key);
    free(e->counts);
    memset(e, 0, sizeof(*e));
}

void dc_cache_touch(dc_cache_t *cache, int bit)
{
    if (bit >= 0 && bit < cache->capacity && cache->entries[bit].in_use) {
        cache->entries[bit].last_use = ++cache->tick;
    }
}

int dc_cache_put(dc_cache_t *cache, const dc_wire_req_t *req, const uint64_t *counts,
                 uint32_t ncounts, int *evicted_p)
{
    char key[DC_WIRE_NAME_MAX + 16];
    dc_cache_entry_t *e;
    uint64_t *copy = NULL;
    int bit, victim = -1;

    *evicted_p = -1;
    if (cache->capacity == 0 || !dc_cache_cacheable(req)) {
        return -1;
    }
    if (ncounts > 0) {
        copy = malloc(ncounts * sizeof(*copy));
        if (copy == NULL) {
            return -1; /* the cache is an optimisation: stay on the slow path */
        }
        memcpy(copy, counts, ncounts * sizeof(*copy));
    }
    bit = find(cache, req);
    if (bit < 0) {
        for (int i = 0; i < cache->capacity; i++) {
            if (!cache->entries[i].in_use) {
                bit = i;
                break;
            }
            if (victim < 0 || cache->entries[i].last_use < cache->entries[victim].last_use) {
                victim = i;
            }
        }
        if (bit < 0) {
            bit = victim;
            dc_cache_erase(cache, bit);
            *evicted_p = bit;
        }
        dc_op_key(key, sizeof(key), req->comm, req->name);
        if (dc_map_put(&cache->index, key, (void *)(uintptr_t)(bit + 1)) != 1) {
            free(copy);
            return -1;
        }
    }
    e = &cache->entries[bit];
    free(e->counts);
    e->in_use = 1;
    e->req = *req;
    e->counts = copy;
    e->ncounts = ncounts;
    e->last_use = ++cache->tick;
    return bit;
}
