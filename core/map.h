/* A string-keyed hash map (chained, FNV-1a), for tensor names in flight and the
 * negotiation table of rank 0. Not thread-safe: callers hold their lock. */
#ifndef DC_MAP_H
#define DC_MAP_H

#include <stddef.h>

typedef struct dc_map_entry {
    struct dc_map_entry *next;
    void *value;
    char key[]; /* NUL-terminated */
} dc_map_entry_t;

typedef struct dc_map {
    dc_map_entry_t **buckets;
    size_t nbuckets, count;
} dc_map_t;

/* Returns the value or NULL. */
void *dc_map_get(const dc_map_t *map, const char *key);
/* Inserts key -> value; 1 inserted, 0 key already present (nothing changed), -1 no memory. */
int dc_map_put(dc_map_t *map, const char *key, void *value);
/* Removes key; returns its value (NULL when absent). */
void *dc_map_remove(dc_map_t *map, const char *key);
/* Calls fn on each entry (order unspecified); fn must not modify the map. */
void dc_map_foreach(const dc_map_t *map, void (*fn)(const char *key, void *value, void *arg),
                    void *arg);
/* Frees the map's memory (not the values). */
void dc_map_free(dc_map_t *map);

#endif
