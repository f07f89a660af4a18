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

#include "dcomm.h"
#include "dcomm_internal.h"

/* This rank's view of the job: one line per peer with its host and transport. */
static int print_peers(void)
{
    if (dcomm_init() != DCOMM_OK) {
        fprintf(stderr, "dcomm-info: dcomm_init: %s\n", dcomm_last_error());
        return 1;
    }
    printf("job: rank %d of %d, local rank %d of %d, host %d of %d\n", dcomm_rank(),
           dcomm_size(), dcomm_local_rank(), dcomm_local_size(), dcomm_cross_rank(),
           dcomm_cross_size());
    for (int peer = 0; peer < dcomm_size(); peer++) {
        const char *transport;
        int host;

        if (dc_info_peer(peer, &host, &transport) != DCOMM_OK) {
            fprintf(stderr, "dcomm-info: %s\n", dcomm_last_error());
            dcomm_shutdown();
            return 1;
        }
        printf("peer %d host %d transport %s\n", peer, host, transport);
    }
    /* Lines of other ranks come after ours only once everyone has printed. */
    fflush(stdout);
    dcomm_barrier(DCOMM_COMM_WORLD);
    return dcomm_shutdown() == DCOMM_OK ? 0 : 1;
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
        dc_info_print_settings_markdown(stdout);
        return 0;
    }
    /* First: the module path and topology file are settings. */
    if (dc_info_load_settings() != DCOMM_OK) {
        snprintf(load_error, sizeof(load_error), "%s", dcomm_last_error());
    }
    if (!settings_only && !peers_only) {
        printf("dcomm %s\n", dcomm_version());
        dc_info_print_transports(stdout);
        dc_info_print_topology(stdout);
    }
    if (!peers_only) {
        if (load_error[0] != '\0') {
            printf("settings: %s\n", load_error);
        }
        printf("settings:\n");
        dc_info_print_settings(stdout);
    }
    if (!settings_only && dc_info_launched()) {
        return print_peers();
    }
    return 0;
}
