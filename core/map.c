/* String-keyed chained hash map; see map.h. */
#include "map.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t hash_key(const char *key)
{
    uint64_t h = 1469598103934665603ull;

    for (const unsigned char *p = (const unsigned char *)key; *p != '\0'; p++) {
        h = (h ^ *p) * 1099511628211ull;
    }
    return h;
}

static dc_map_entry_t **find_slot(const dc_map_t *map, const char *key)
{
    dc_map_entry_t **slot;

    if (map->nbuckets == 0) {
        return NULL;
    }
    slot = &map->buckets[hash_key(key) & (map->nbuckets - 1)];
    while (*slot != NULL && strcmp((*slot)->key, key) != 0) {
        slot = &(*slot)->next;
    }
    return slot;
}

static int grow(dc_map_t *map)
{
    size_t n = map->nbuckets ? map->nbuckets * 2 : 64;
    dc_map_entry_t **buckets = calloc(n, sizeof(*buckets));

    if (buckets == NULL) {
        return -1;
    }
    for (size_t i = 0; i < map->nbuckets; i++) {
        dc_map_entry_t *e = map->buckets[i], *next;

        for (; e != NULL; e = next) {
            size_t b = hash_key(e->key) & (n - 1);

            next = e->next;
            e->next = buckets[b];
            buckets[b] = e;
        }
    }
    free(map->buckets);
    map->buckets = buckets;
    map->nbuckets = n;
    return 0;
}

void *dc_map_get(const dc_map_t *map, const char *key)
{
    dc_map_entry_t **slot = find_slot(map, key);

    return (slot != NULL && *slot != NULL) ? (*slot)->value : NULL;
}

int dc_map_put(dc_map_t *map, const char *key, void *value)
{
    dc_map_entry_t **slot, *e;
    size_t klen = strlen(key);

    if (map->count >= map->nbuckets && grow(map) < 0) {
        return -1;
    }
    slot = find_slot(map, key);
    if (*slot != NULL) {
        return 0;
    }
    e = malloc(sizeof(*e) + klen + 1);
    if (e == NULL) {
        return -1;
    }
    memcpy(e->key, key, klen + 1);
    e->value = value;
    e->next = NULL;
    *slot = e;
    map->count++;
    return 1;
}

void *dc_map_remove(dc_map_t *map, const char *key)
{
    dc_map_entry_t **slot = find_slot(map, key), *e;
    void *value;

    if (slot == NULL || *slot == NULL) {
        return NULL;
    }
    e = *slot;
    *slot = e->next;
    value = e->value;
    free(e);
    map->count--;
    return value;
}

void dc_map_foreach(const dc_map_t *map, void (*fn)(const char *key, void *value, void *arg),
                    void *arg)
{
    for (size_t i = 0; i < map->nbuckets; i++) {
        for (dc_map_entry_t *e = map->buckets[i]; e != NULL; e = e->next) {
            fn(e->key, e->value, arg);
        }
    }
}

void dc_map_free(dc_map_t *map)
{
    for (size_t i = 0; i < map->nbuckets; i++) {
        dc_map_entry_t *e = map->buckets[i], *next;

        for (; e != NULL; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(map->buckets);
    map->buckets = NULL;
    map->nbuckets = map->count = 0;
}
