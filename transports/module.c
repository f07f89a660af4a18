/*
 * Finds and loads the optional modules: libdcomm-<name>.so in each directory of
 * the path the core passes (DCOMM_MODULE_PATH), then next to libdcomm itself
 * (dladdr). Once per process;
 * a module that is absent or refuses to load is reported once at info level.
 */
#include "module.h"

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const module_names[] = {"cuda", "mpi", "ucx", "nccl"};

#define NMODULES DC_ARRAY_SIZE(module_names)

typedef struct module_slot {
    const dc_module_t *mod; /* NULL when not loaded */
    void *handle;
    char detail[1024];      /* path when loaded, else why not */
} module_slot_t;

static module_slot_t slots[NMODULES];
static const dc_module_t *loaded[NMODULES];
static int nloaded;
static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static int load_done;

static void host_error_vset(const char *fmt, va_list ap)
{
    char msg[1024];

    vsnprintf(msg, sizeof(msg), fmt, ap);
    dc_error_set(DCOMM_ERR_TRANSPORT, "%s", msg);
}

/* Directory holding libdcomm (or the executable the core is linked into). */
static int self_dir(char *buf, size_t cap)
{
    Dl_info info;
    const char *slash;

    if (dladdr((void *)&dc_modules_load, &info) == 0 || info.dli_fname == NULL ||
        (slash = strrchr(info.dli_fname, '/')) == NULL) {
        return -1;
    }
    snprintf(buf, cap, "%.*s", (int)(slash - info.dli_fname), info.dli_fname);
    return 0;
}

/* Tries one file; 1 when loaded, 0 when absent, -1 when present but unusable
 * (slot->detail says why). */
static int module_try(module_slot_t *slot, const char *name, const char *dir,
                      const dc_module_host_t *host)
{
    char path[PATH_MAX];
    const dc_module_t *mod;
    char symbol[64];
    void *handle;

    if (snprintf(path, sizeof(path), "%s/libdcomm-%s.so", dir, name) >= (int)sizeof(path) ||
        access(path, F_OK) != 0) {
        return 0;
    }
    /* GLOBAL: Open MPI's own plugins expect libmpi's symbols to be visible. */
    handle = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
    if (handle == NULL) {
        snprintf(slot->detail, sizeof(slot->detail), "%.900s", dlerror());
        return -1;
    }
    snprintf(symbol, sizeof(symbol), "%s%s", DC_MODULE_SYMBOL_PREFIX, name);
    mod = dlsym(handle, symbol);
    if (mod == NULL || mod->abi_version != DC_MODULE_ABI_VERSION || mod->init == NULL ||
        mod->name == NULL || strcmp(mod->name, name) != 0) {
        snprintf(slot->detail, sizeof(slot->detail),
                 "%.600s: no %s table of ABI version %d named '%s'", path, symbol,
                 DC_MODULE_ABI_VERSION, name);
        dlclose(handle);
        return -1;
    }
    if (mod->transport != NULL && mod->transport->abi_version != DC_TRANSPORT_ABI_VERSION) {
        snprintf(slot->detail, sizeof(slot->detail), "%.600s: transport ABI %u, the core has %d",
                 path, mod->transport->abi_version, DC_TRANSPORT_ABI_VERSION);
        dlclose(handle);
        return -1;
    }
    dc_error_clear();
    if (mod->init(host) < 0) {
        snprintf(slot->detail, sizeof(slot->detail), "%.400s: declined: %.500s", path,
                 dc_error_get());
        /* Kept mapped: a library that started threads must not be unmapped. */
        return -1;
    }
    slot->mod = mod;
    slot->handle = handle;
    snprintf(slot->detail, sizeof(slot->detail), "%.900s", path);
    return 1;
}

static void modules_load_once(const char *path)
{
    const dc_module_host_t host = {
        .abi_version = DC_MODULE_ABI_VERSION,
        .log = dc_log_vemit,
        .log_level = dc_log_level,
        .error_vset = host_error_vset,
        .error_get = dc_error_get,
    };
    char dirs[4096] = "", own[PATH_MAX];

    if (path != NULL) {
        snprintf(dirs, sizeof(dirs), "%s", path);
    }
    if (self_dir(own, sizeof(own)) == 0) {
        size_t len = strlen(dirs);

        if (len + strlen(own) + 2 < sizeof(dirs)) {
            snprintf(dirs + len, sizeof(dirs) - len, "%s%s", len ? ":" : "", own);
        }
    }
    for (size_t m = 0; m < NMODULES; m++) {
        module_slot_t *slot = &slots[m];
        int rc = 0;

        snprintf(slot->detail, sizeof(slot->detail), "libdcomm-%s.so not found in '%.900s'",
                 module_names[m], dirs);
        for (char *p = dirs; rc == 0 && *p != '\0';) {
            char *end = strchr(p, ':');
            char dir[PATH_MAX];

            int n = end ? (int)(end - p) : (int)strlen(p);

            snprintf(dir, sizeof(dir), "%.*s", DC_MIN(n, (int)sizeof(dir) - 1), p);
            p = end ? end + 1 : p + strlen(p);
            if (dir[0] != '\0') {
                rc = module_try(slot, module_names[m], dir, &host);
            }
        }
        if (rc == 1) {
            loaded[nloaded++] = slot->mod;
            DC_DEBUG("module %s loaded from %s", module_names[m], slot->detail);
        } else {
            DC_INFO("module %s skipped: %s", module_names[m], slot->detail);
        }
    }
}

void dc_modules_load(const char *path)
{
    pthread_mutex_lock(&load_lock);
    if (!load_done) {
        modules_load_once(path);
        load_done = 1;
    }
    pthread_mutex_unlock(&load_lock);
}

int dc_modules_count(void)
{
    return nloaded;
}

const dc_module_t *dc_module_get(int i)
{
    return (i >= 0 && i < nloaded) ? loaded[i] : NULL;
}

const dc_module_t *dc_module_find(const char *name)
{
    for (int i = 0; i < nloaded; i++) {
        if (strcmp(loaded[i]->name, name) == 0) {
            return loaded[i];
        }
    }
    return NULL;
}

int dc_module_report(int i, const char **name_p, int *loaded_p, const char **detail_p)
{
    if (i < 0 || i >= (int)NMODULES) {
        return 0;
    }
    *name_p = module_names[i];
    *loaded_p = slots[i].mod != NULL;
    *detail_p = slots[i].detail;
    return 1;
}
