/*
 * What dcomm-info prints about this build and this process (dcomm_internal.h),
 * so that it links libdcomm instead of reading the runtime's state itself.
 */
#include "config.h"
#include "core.h"
#include "dcomm_internal.h"
#include "module.h"
#include "topology.h"

DC_INTERNAL_API void dc_info_print_transports(FILE *out)
{
    static const dc_transport_ops_t *const builtin[] = {
        &dc_transport_self_ops, &dc_transport_shm_ops, &dc_transport_tcp_ops};
    const char *name, *detail;
    int loaded;

    fprintf(out, "transports (built in):");
    for (size_t i = 0; i < DC_ARRAY_SIZE(builtin); i++) {
        fprintf(out, " %s", builtin[i]->name);
    }
    fprintf(out, "\nmodules:\n");
    dc_modules_load(dc_config.module_path); /* and next to libdcomm */
    for (int i = 0; dc_module_report(i, &name, &loaded, &detail); i++) {
        fprintf(out, "  %-5s %s: %s\n", name, loaded ? "loaded" : "not loaded", detail);
    }
}

DC_INTERNAL_API void dc_info_print_topology(FILE *out)
{
    dc_machine_t *m;

    if (dc_machine_load(dc_config.topo_file, &m) != DCOMM_OK) {
        fprintf(out, "topology: unavailable (%s)\n", dc_error_get());
        return;
    }
    dc_machine_print(m, out);
    dc_machine_destroy(m);
}

DC_INTERNAL_API dcomm_status_t dc_info_load_settings(void)
{
    return dc_config_load();
}

DC_INTERNAL_API void dc_info_print_settings(FILE *out)
{
    dc_config_print(out);
}

DC_INTERNAL_API void dc_info_print_settings_markdown(FILE *out)
{
    dc_config_print_markdown(out);
}

DC_INTERNAL_API int dc_info_launched(void)
{
    return dc_bootstrap_launched();
}

DC_INTERNAL_API dcomm_status_t dc_info_peer(int peer, int *host_p, const char **transport_p)
{
    dc_state_t *st = dc_state;

    if (st == NULL) {
        return dc_error_set(DCOMM_ERR_NOT_INITIALIZED, "dcomm_init has not been called");
    }
    if (peer < 0 || peer >= st->size) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "peer %d is not a rank of a job of %d", peer,
                            st->size);
    }
    *host_p = st->host_of[peer];
    *transport_p = dc_net_transport_name(st->net, peer);
    return DCOMM_OK;
}
