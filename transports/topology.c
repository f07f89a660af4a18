/*
 * The machine from hwloc: counts and a short description for dcomm-info, and
 * where dlaunch --bind-to puts each rank of a host (spread over NUMA nodes
 * first, so neighbouring local ranks do not share a memory controller).
 */
#include "topology.h"

#include <errno.h>
#include <hwloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct dc_machine {
    hwloc_topology_t topo;
    char source[300];
};

dc_status_t dc_machine_load(const char *xml, dc_machine_t **m_p)
{
    dc_machine_t *m = calloc(1, sizeof(*m));

    if (m == NULL) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory for the topology");
    }
    if (hwloc_topology_init(&m->topo) != 0) {
        free(m);
        return dc_error_set(DCOMM_ERR_INTERNAL, "hwloc_topology_init failed");
    }
    /* GPUs and NICs are I/O objects, which hwloc leaves out by default. */
    hwloc_topology_set_io_types_filter(m->topo, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
    snprintf(m->source, sizeof(m->source), "this machine");
    if (xml != NULL && *xml != '\0') {
        snprintf(m->source, sizeof(m->source), "xml:%s", xml);
        if (hwloc_topology_set_xml(m->topo, xml) != 0) {
            hwloc_topology_destroy(m->topo);
            free(m);
            return dc_error_set(DCOMM_ERR_INVALID_ARG,
                                "DCOMM_TOPO_FILE=%s: not a readable hwloc XML file", xml);
        }
    }
    if (hwloc_topology_load(m->topo) != 0) {
        hwloc_topology_destroy(m->topo);
        free(m);
        return dc_error_set(DCOMM_ERR_INTERNAL, "hwloc cannot load the topology of %s",
                            xml ? xml : "this machine");
    }
    *m_p = m;
    return DCOMM_OK;
}

void dc_machine_destroy(dc_machine_t *m)
{
    if (m != NULL) {
        hwloc_topology_destroy(m->topo);
        free(m);
    }
}

const char *dc_machine_source(const dc_machine_t *m)
{
    return m->source;
}

static int count_of(const dc_machine_t *m, hwloc_obj_type_t type)
{
    int n = hwloc_get_nbobjs_by_type(m->topo, type);

    return n < 0 ? 0 : n;
}

static int osdev_is_gpu(hwloc_obj_t o)
{
    return o->attr->osdev.type == HWLOC_OBJ_OSDEV_GPU ||
           o->attr->osdev.type == HWLOC_OBJ_OSDEV_COPROC;
}

static int osdev_is_nic(hwloc_obj_t o)
{
    return o->attr->osdev.type == HWLOC_OBJ_OSDEV_NETWORK ||
           o->attr->osdev.type == HWLOC_OBJ_OSDEV_OPENFABRICS;
}

void dc_machine_counts(const dc_machine_t *m, dc_machine_counts_t *c_p)
{
    dc_machine_counts_t c = {
        .packages = count_of(m, HWLOC_OBJ_PACKAGE),
        .numa_nodes = count_of(m, HWLOC_OBJ_NUMANODE),
        .cores = count_of(m, HWLOC_OBJ_CORE),
        .pus = count_of(m, HWLOC_OBJ_PU),
    };

    for (hwloc_obj_t o = hwloc_get_next_osdev(m->topo, NULL); o != NULL;
         o = hwloc_get_next_osdev(m->topo, o)) {
        c.gpus += osdev_is_gpu(o);
        c.nics += osdev_is_nic(o);
    }
    *c_p = c;
}

void dc_machine_print(const dc_machine_t *m, FILE *out)
{
    dc_machine_counts_t c;
    char cpus[256];

    dc_machine_counts(m, &c);
    fprintf(out, "topology (%s): %d package(s), %d NUMA node(s), %d core(s), %d PU(s), "
                 "%d GPU(s), %d NIC(s)\n",
            m->source, c.packages, c.numa_nodes, c.cores, c.pus, c.gpus, c.nics);
    for (int i = 0; i < c.numa_nodes; i++) {
        hwloc_obj_t node = hwloc_get_obj_by_type(m->topo, HWLOC_OBJ_NUMANODE, (unsigned)i);
        int ncores = hwloc_get_nbobjs_inside_cpuset_by_type(m->topo, node->cpuset,
                                                            HWLOC_OBJ_CORE);

        hwloc_bitmap_list_snprintf(cpus, sizeof(cpus), node->cpuset);
        fprintf(out, "  numa %d: %d core(s), cpus %s\n", i, ncores, cpus);
    }
    for (hwloc_obj_t o = hwloc_get_next_osdev(m->topo, NULL); o != NULL;
         o = hwloc_get_next_osdev(m->topo, o)) {
        if (osdev_is_gpu(o) || osdev_is_nic(o)) {
            fprintf(out, "  %s %s\n", osdev_is_gpu(o) ? "gpu" : "nic", o->name ? o->name : "?");
        }
    }
}

/* The cpuset (owned by the topology) for a local rank; NULL with why set. */
static hwloc_const_cpuset_t rank_cpuset(const dc_machine_t *m, const char *mode,
                                        int local_rank, int local_size, char *why, size_t len)
{
    int nodes = count_of(m, HWLOC_OBJ_NUMANODE);
    hwloc_obj_t node, core;
    int in_node, ncores;

    if (local_rank < 0 || local_size < 1 || local_rank >= local_size) {
        snprintf(why, len, "local rank %d of %d", local_rank, local_size);
        return NULL;
    }
    if (nodes < 1) {
        /* Some virtual machines report no NUMA node: the machine is one. */
        node = hwloc_get_root_obj(m->topo);
        nodes = 1;
    } else {
        node = hwloc_get_obj_by_type(m->topo, HWLOC_OBJ_NUMANODE, (unsigned)(local_rank % nodes));
    }
    if (strcmp(mode, "numa") == 0) {
        return node->cpuset;
    }
    if (strcmp(mode, "core") != 0) {
        snprintf(why, len, "unknown binding '%s' (core, numa or none)", mode);
        return NULL;
    }
    ncores = hwloc_get_nbobjs_inside_cpuset_by_type(m->topo, node->cpuset, HWLOC_OBJ_CORE);
    if (ncores < 1) {
        snprintf(why, len, "NUMA node %d has no cores", local_rank % nodes);
        return NULL;
    }
    in_node = (local_rank / nodes) % ncores; /* ranks outnumbering cores share them */
    core = hwloc_get_obj_inside_cpuset_by_type(m->topo, node->cpuset, HWLOC_OBJ_CORE,
                                               (unsigned)in_node);
    return core->cpuset;
}

int dc_machine_rank_cpus(const dc_machine_t *m, const char *mode, int local_rank,
                         int local_size, char *buf, size_t len)
{
    hwloc_const_cpuset_t set = rank_cpuset(m, mode, local_rank, local_size, buf, len);

    if (set == NULL) {
        return -1;
    }
    hwloc_bitmap_list_snprintf(buf, len, set);
    return 0;
}

int dc_topology_bind_rank(const char *mode, int local_rank, int local_size, char *why,
                          size_t whylen)
{
    dc_machine_t m;
    hwloc_const_cpuset_t set;
    int rc = -1;

    if (hwloc_topology_init(&m.topo) != 0 || hwloc_topology_load(m.topo) != 0) {
        snprintf(why, whylen, "hwloc cannot load this machine's topology");
        return -1;
    }
    set = rank_cpuset(&m, mode, local_rank, local_size, why, whylen);
    if (set != NULL) {
        rc = hwloc_set_cpubind(m.topo, set, HWLOC_CPUBIND_PROCESS);
        if (rc != 0) {
            char cpus[128];

            hwloc_bitmap_list_snprintf(cpus, sizeof(cpus), set);
            snprintf(why, whylen, "hwloc_set_cpubind to cpus %s: %s", cpus, strerror(errno));
        }
    }
    hwloc_topology_destroy(m.topo);
    return rc;
}
