/*
 * The response cache of the negotiation fast path. Every rank holds an
 * identical copy: entries are inserted, touched and evicted only while the
 * ranks execute the same agreed responses in the same order, so a tensor gets
 * the same bit everywhere. A rank that submits a cached tensor with the same
 * parameters sets its bit; the bitwise AND over the ranks tells what is ready
 * everywhere without a gather or a broadcast.
 */
#ifndef DC_CACHE_H
#define DC_CACHE_H

#include <stdint.h>

#include "map.h"
#include "wire.h"

typedef struct dc_cache_entry {
    int in_use;
    dc_wire_req_t req;     /* name and parameters as agreed */
    uint64_t *counts;      /* allgather: elements of each comm rank */
    uint32_t ncounts;
    uint64_t last_use;     /* tick of the last execution (LRU) */
} dc_cache_entry_t;

typedef struct dc_cache {
    int capacity;          /* bits; 0: disabled */
    dc_cache_entry_t *entries;
    dc_map_t index;        /* "<comm>:<name>" -> bit + 1 */
    uint64_t tick;
    uint64_t hits, misses;
} dc_cache_t;

enum { DC_CACHE_MISS = -1, DC_CACHE_CHANGED = -2 };

dc_status_t dc_cache_init(dc_cache_t *cache, int capacity);
void dc_cache_free(dc_cache_t *cache);
/* Is this collective one the cache may hold? (Named, repeatable ones.) */
int dc_cache_cacheable(const dc_wire_req_t *req);
/* The bit of req (submitted by comm rank comm_rank): >= 0 when cached with the
 * same parameters; DC_CACHE_MISS when absent; DC_CACHE_CHANGED (and *bit_p)
 * when cached with other parameters. */
int dc_cache_lookup(dc_cache_t *cache, const dc_wire_req_t *req, int comm_rank, int *bit_p);
/* Records an executed response (inserting it, evicting the least recently used
 * entry when full); returns the bit it took and, through *evicted_p, the bit
 * that was evicted for it (-1 when none). Same order on every rank. */
int dc_cache_put(dc_cache_t *cache, const dc_wire_req_t *req, const uint64_t *counts,
                 uint32_t ncounts, int *evicted_p);
/* Marks an entry used (execution of a cached response). */
void dc_cache_touch(dc_cache_t *cache, int bit);
void dc_cache_erase(dc_cache_t *cache, int bit);
static inline const dc_cache_entry_t *dc_cache_get(const dc_cache_t *cache, int bit)
{
    return bit >= 0 && bit < cache->capacity && cache->entries[bit].in_use
               ? &cache->entries[bit] : NULL;
}

#endif
