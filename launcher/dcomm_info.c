/* dcomm-info: what this build of dcomm finds here. Prints the version, the
 * built-in transports and the modules (loaded, or why not), the machine's
 * topology, every configuration setting with its value and doc, and, when run
 * as a rank of a job (under dlaunch, mpirun or srun), the transport serving
 * each peer and the host of each rank:
 *   dcomm-info              everything
 *   dcomm-info -c           only the settings
 *   dlaunch -np 4 dcomm-info --peers   only this rank's peer table */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "core.h"
#include "dcomm.h"
#include "module.h"
#include "net.h"
#include "topology.h"

static void print_transports(void)
{
    static const dc_transport_ops_t *const builtin[] = {
        &dc_transport_self_ops, &dc_transport_shm_ops, &dc_transport_tcp_ops};
    const char *name, *detail;
    int loaded;

    printf("transports (built in):");
    for (size_t i = 0; i < DC_ARRAY_SIZE(builtin); i++) {
        printf(" %s", builtin[i]->name);
    }
    printf("\nmodules:\n");
    dc_modules_load();
    for (int i = 0; dc_module_report(i, &name, &loaded, &detail); i++) {
        printf("  %-5s %s: %s\n", name, loaded ? "loaded" : "not loaded", detail);
    }
}

static void print_topology(void)
{
    dc_machine_t *m;

    if (dc_machine_load(&m) != DCOMM_OK) {
        printf("topology: unavailable (%s)\n", dcomm_last_error());
        return;
    }
    dc_machine_print(m, stdout);
    dc_machine_destroy(m);
}

/* This rank's view of the job: one line per peer with its host and transport. */
static int print_peers(void)
{
    dc_state_t *st;

    if (dcomm_init() != DCOMM_OK) {
        fprintf(stderr, "dcomm-info: dcomm_init: %s\n", dcomm_last_error());
        return 1;
    }
    st = dc_state;
    printf("job: rank %d of %d, local rank %d of %d, host %d of %d\n", dcomm_rank(),
           dcomm_size(), dcomm_local_rank(), dcomm_local_size(), dcomm_cross_rank(),
           dcomm_cross_size());
    for (int peer = 0; peer < st->size; peer++) {
        printf("peer %d host %d transport %s\n", peer, st->host_of[peer],
               dc_net_transport_name(st->net, peer));
    }
    /* Lines of other ranks come after ours only once everyone has printed. */
    fflush(stdout);
    dcomm_barrier(DCOMM_COMM_WORLD);
    return dcomm_shutdown() == DCOMM_OK ? 0 : 1;
}

static int in_job(void)
{
    return getenv("DCOMM_RANK") != NULL || getenv("OMPI_COMM_WORLD_RANK") != NULL ||
           getenv("SLURM_PROCID") != NULL;
}

int main(int argc, char **argv)
{
    int settings_only = argc > 1 && strcmp(argv[1], "-c") == 0;
    int peers_only = argc > 1 && strcmp(argv[1], "--peers") == 0;

    if (argc > 2 || (argc == 2 && !settings_only && !peers_only)) {
        fprintf(stderr, "usage: dcomm-info [-c | --peers]\n");
        return 2;
    }
    /* Modules sit next to libdcomm, which is linked into this program. */
    setenv("DCOMM_MODULE_PATH", DC_INFO_MODULE_DIRS, 0);
    if (!settings_only && !peers_only) {
        printf("dcomm %s\n", dcomm_version());
        print_transports();
        print_topology();
    }
    if (!peers_only) {
        if (dc_config_load() != DCOMM_OK) {
            printf("settings: %s\n", dcomm_last_error());
        }
        printf("settings:\n");
        dc_config_print(stdout);
    }
    if (!settings_only && in_job()) {
        return print_peers();
    }
    return 0;
}
