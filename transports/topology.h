/*
 * The machine as hwloc sees it (or as an hwloc XML file describes it, through
 * DCOMM_TOPO_FILE, for tests): packages, NUMA nodes, cores, hardware threads,
 * GPUs and NICs; and binding a rank to a core or NUMA node, spreading the
 * ranks of a host over its NUMA nodes (dlaunch --bind-to).
 */
#ifndef DC_TOPOLOGY_H
#define DC_TOPOLOGY_H

#include <stdio.h>

#include "status.h"

typedef struct dc_machine dc_machine_t;

typedef struct dc_machine_counts {
    int packages, numa_nodes, cores, pus;
    int gpus, nics; /* hwloc OS devices: GPU/CUDA co-processors; network/OpenFabrics */
} dc_machine_counts_t;

/* Loads xml (an hwloc XML file: DCOMM_TOPO_FILE) when not NULL or empty, else
 * this machine. */
dc_status_t dc_machine_load(const char *xml, dc_machine_t **m_p);
void dc_machine_destroy(dc_machine_t *m);
void dc_machine_counts(const dc_machine_t *m, dc_machine_counts_t *c_p);
/* "xml:<path>" or "this machine". */
const char *dc_machine_source(const dc_machine_t *m);
/* A few lines: counts, each NUMA node with its cores, GPUs and NICs. */
void dc_machine_print(const dc_machine_t *m, FILE *out);

/* Where local rank `local_rank` of `local_size` goes: mode "core" gives NUMA
 * node local_rank % nodes and, within it, the next core (wrapping when ranks
 * outnumber cores); "numa" gives the whole NUMA node. Writes the cpuset as a
 * list ("0-3,8") into buf. 0, or -1 with the reason in buf. */
int dc_machine_rank_cpus(const dc_machine_t *m, const char *mode, int local_rank,
                         int local_size, char *buf, size_t len);

/* Binds the calling process as dc_machine_rank_cpus places it, on this machine
 * (DCOMM_TOPO_FILE is ignored here: binding needs the real one). 0, or -1 with
 * the reason in why. For dlaunch, between fork and exec. */
int dc_topology_bind_rank(const char *mode, int local_rank, int local_size, char *why,
                          size_t whylen);

#endif
