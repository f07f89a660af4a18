/* dcomm-info: what this build of dcomm finds here. Prints the version, the
 * built-in transports and the modules (loaded, or why not), the machine's
 * topology, every configuration setting with its value and doc, and, when run
 * as a rank of a job (under dlaunch, mpirun or srun), the transport serving
 * each peer and the host of each rank:
 *   dcomm-info              everything
 *   dcomm-info -c           only the settings
 *   dcomm-info --markdown   every setting as README's table (no values)
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

/* Modules sit next to libdcomm, which is linked into this program: there,
 * unless DCOMM_MODULE_PATH says otherwise. */
static const char *module_path(void)
{
    return dc_config_source("DCOMM_MODULE_PATH") ? dc_config.module_path : DC_INFO_MODULE_DIRS;
}

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
    dc_modules_load(module_path());
    for (int i = 0; dc_module_report(i, &name, &loaded, &detail); i++) {
        printf("  %-5s %s: %s\n", name, loaded ? "loaded" : "not loaded", detail);
    }
}

static void print_topology(void)
{
    dc_machine_t *m;

    if (dc_machine_load(dc_config.topo_file, &m) != DCOMM_OK) {
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

    dc_modules_load(module_path()); /* the first load's path counts: before dcomm_init */
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
    return dc_config_source("DCOMM_RANK") != NULL || getenv("OMPI_COMM_WORLD_RANK") != NULL ||
           getenv("SLURM_PROCID") != NULL;
}

int main(int argc, char **argv)
{
    int settings_only = argc > 1 && strcmp(argv[1], "-c") == 0;
    int peers_only = argc > 1 && strcmp(argv[1], "--peers") == 0;
    int markdown = argc > 1 && strcmp(argv[1], "--markdown") == 0;
    char load_error[1024] = "";

    if (argc > 2 || (argc == 2 && !settings_only && !peers_only && !markdown)) {
        fprintf(stderr, "usage: dcomm-info [-c | --peers | --markdown]\n");
        return 2;
    }
    if (markdown) {
        dc_config_print_markdown(stdout);
        return 0;
    }
    if (dc_config_load() != DCOMM_OK) {
        snprintf(load_error, sizeof(load_error), "%s", dcomm_last_error());
    }
    if (!settings_only && !peers_only) {
        printf("dcomm %s\n", dcomm_version());
        print_transports();
        print_topology();
    }
    if (!peers_only) {
        if (load_error[0] != '\0') {
            printf("settings: %s\n", load_error);
        }
        printf("settings:\n");
        dc_config_print(stdout);
    }
    if (!settings_only && in_job()) {
        return print_peers();
    }
    return 0;
}
