/*
 * Who am I, where are my peers: identity from dlaunch's DCOMM_* variables,
 * Open MPI's OMPI_COMM_WORLD_* or Slurm's SLURM_* (a single rank when none),
 * or in an elastic job from dlaunch's membership round; the rendezvous store;
 * which ranks share a host; then the network.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "config.h"
#include "dc_time.h"
#include "core.h"
#include "job_store.h"
#include "log.h"
#include "module.h"

#define HOST_ID_MAX 320

/* 1 and *v_p when set and a valid integer, 0 when unset, -1 when malformed. */
static int env_int(const char *name, int *v_p)
{
    const char *text = getenv(name);
    char *end;
    long v;

    if (text == NULL || *text == '\0') {
        return 0;
    }
    errno = 0;
    v = strtol(text, &end, 10);
    if (errno != 0 || *end != '\0' || v < INT_MIN || v > INT_MAX) {
        return -1;
    }
    *v_p = (int)v;
    return 1;
}

static dc_status_t identity_from(dc_state_t *st, const char *rank_var, const char *size_var,
                                 const char *source)
{
    int rc1 = env_int(rank_var, &st->rank), rc2 = env_int(size_var, &st->size);

    if (rc1 < 0 || rc2 <= 0) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: %s='%s' / %s='%s' are not valid integers",
                            source, rank_var, getenv(rank_var) ? getenv(rank_var) : "",
                            size_var, getenv(size_var) ? getenv(size_var) : "(unset)");
    }
    if (st->size < 1 || st->rank < 0 || st->rank >= st->size) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "%s: rank %d is outside a job of size %d",
                            source, st->rank, st->size);
    }
    return DCOMM_OK;
}

/* DCOMM_RANK and DCOMM_SIZE, which the config table has parsed. */
static dc_status_t identity_from_dlaunch(dc_state_t *st)
{
    if (dc_config_source("DCOMM_SIZE") == NULL) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "dlaunch: DCOMM_RANK is set but DCOMM_SIZE "
                            "is not");
    }
    if (dc_config.size < 1 || dc_config.size > INT_MAX || dc_config.rank >= dc_config.size) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "dlaunch: rank %lld is outside a job of "
                            "size %lld", (long long)dc_config.rank, (long long)dc_config.size);
    }
    st->rank = (int)dc_config.rank;
    st->size = (int)dc_config.size;
    return DCOMM_OK;
}

/* An elastic job's worker: rank and size come from dlaunch at each init. */
static int elastic_worker(void)
{
    return dc_config_source("DCOMM_ELASTIC_WORKER") != NULL;
}

/* 1 when a launcher started this process: dlaunch (DCOMM_RANK or
 * DCOMM_ELASTIC_WORKER, parsed by the config table), Open MPI or Slurm. */
int dc_bootstrap_launched(void)
{
    return dc_config_source("DCOMM_RANK") != NULL || elastic_worker() ||
           getenv("OMPI_COMM_WORLD_RANK") != NULL || getenv("SLURM_PROCID") != NULL;
}

dc_status_t dc_bootstrap_identity(dc_state_t *st)
{
    dc_status_t status = DCOMM_OK;
    const char *source;

    st->rank = 0;
    st->size = 1;
    if (elastic_worker()) {
        source = "dlaunch's next round (elastic)";
        st->rank = -1; /* until dc_bootstrap_connect has joined a round */
    } else if (dc_config_source("DCOMM_RANK") != NULL) {
        source = "dlaunch";
        status = identity_from_dlaunch(st);
    } else if (getenv("OMPI_COMM_WORLD_RANK") != NULL) {
        source = "Open MPI";
        status = identity_from(st, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", source);
    } else if (getenv("SLURM_PROCID") != NULL) {
        source = "Slurm";
        status = identity_from(st, "SLURM_PROCID", "SLURM_NTASKS", source);
    } else {
        source = "no launcher";
        status = DCOMM_OK;
    }
    st->local_rank = 0;
    st->local_size = 1;
    st->cross_rank = 0;
    st->cross_size = 1;
    if (status == DCOMM_OK) {
        DC_DEBUG("identity from %s: rank %d of %d", source, st->rank, st->size);
    }
    return status;
}

/* Host identity: host name, network namespace and boot id, so that ranks in
 * different network namespaces of one machine count as different hosts (that
 * is how multi-host runs are tested). */
static void host_id(char *buf, size_t cap)
{
    char name[256] = "", boot[64] = "";
    struct stat sb;
    FILE *f;

    gethostname(name, sizeof(name) - 1);
    f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (f != NULL) {
        if (fgets(boot, sizeof(boot), f) == NULL) {
            boot[0] = '\0';
        }
        boot[strcspn(boot, "\n")] = '\0';
        fclose(f);
    }
    if (stat("/proc/self/ns/net", &sb) != 0) {
        sb.st_ino = 0;
    }
    snprintf(buf, cap, "%s|%s|%llu", name, boot, (unsigned long long)sb.st_ino);
}

static dc_status_t exchange_hosts(dc_state_t *st, int timeout_ms)
{
    int n = st->size;
    char (*ids)[HOST_ID_MAX] = calloc((size_t)n, HOST_ID_MAX);
    int *count_on = calloc((size_t)n, sizeof(int));
    char key[64];
    dc_status_t status = DCOMM_OK;

    st->host_of = calloc((size_t)n, sizeof(int));
    st->local_rank_of = calloc((size_t)n, sizeof(int));
    if (ids == NULL || count_on == NULL || st->host_of == NULL || st->local_rank_of == NULL) {
        status = dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory for the host table");
        goto out;
    }
    host_id(ids[st->rank], HOST_ID_MAX);
    snprintf(key, sizeof(key), "host/%d", st->rank);
    DC_CHECK_GOTO(dc_store_set(st->store, key, ids[st->rank], strlen(ids[st->rank]) + 1),
                  status, out);
    for (int r = 0; r < n; r++) {
        size_t len;

        if (r == st->rank) {
            continue;
        }
        snprintf(key, sizeof(key), "host/%d", r);
        status = dc_store_get(st->store, key, ids[r], HOST_ID_MAX - 1, &len, timeout_ms);
        if (status < 0) {
            status = dc_error_set(status, "rank %d: rank %d never registered (%s)", st->rank, r,
                                  dc_error_get());
            goto out;
        }
        ids[r][HOST_ID_MAX - 1] = '\0';
    }
    /* Hosts are numbered in order of their lowest rank (Horovod's cross_rank). */
    st->cross_size = 0;
    for (int r = 0; r < n; r++) {
        int h = -1;

        for (int q = 0; q < r && h < 0; q++) {
            if (strcmp(ids[q], ids[r]) == 0) {
                h = st->host_of[q];
            }
        }
        if (h < 0) {
            h = st->cross_size++;
        }
        st->host_of[r] = h;
        st->local_rank_of[r] = count_on[h]++;
    }
    st->cross_rank = st->host_of[st->rank];
    st->local_rank = st->local_rank_of[st->rank];
    st->local_size = count_on[st->cross_rank];
out:
    free(ids);
    free(count_on);
    return status;
}

static int usable_cores(void)
{
    cpu_set_t set;

    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        return CPU_COUNT(&set);
    }
    return (int)sysconf(_SC_NPROCESSORS_ONLN);
}

/* How many times this process has opened the store (dcomm_init is serialized). */
static unsigned lives;

/* Every rank initializes the same number of times, so the count scopes this
 * life's keys away from those of an earlier init -> shutdown of the process. */
static void set_scope(dc_store_t *store)
{
    snprintf(store->scope, sizeof(store->scope), "life%u", lives);
}

static dc_status_t open_store(dc_state_t *st, int timeout_ms)
{
    const char *rdv = dc_config.rendezvous, *dir = dc_config.store_dir;
    const char *hex = dc_config_source("DCOMM_JOB_SECRET") ? dc_config.job_secret : NULL;
    int have_secret = 0;

    if (hex != NULL) {
        if (dc_auth_secret_from_hex(hex, st->secret) != 0) {
            return dc_error_set(DCOMM_ERR_INVALID_ARG,
                                "DCOMM_JOB_SECRET must be 64 hexadecimal characters");
        }
        have_secret = 1;
    }
    if (rdv != NULL && *rdv != '\0') {
        if (!have_secret) {
            return dc_error_set(DCOMM_ERR_AUTH, "DCOMM_RENDEZVOUS is set but DCOMM_JOB_SECRET "
                                                "is not: start the job with dlaunch");
        }
        dc_status_t status = dc_rdv_client_open(rdv, st->secret, st->rank, timeout_ms,
                                                &st->store);

        if (status == DCOMM_OK) {
            set_scope(st->store);
        }
        return status;
    }
    if (dir != NULL && *dir != '\0') {
        dc_status_t status = dc_filestore_open(dir, &st->store);
        size_t len;

        if (status < 0) {
            return status;
        }
        set_scope(st->store);
        if (have_secret) {
            return DCOMM_OK;
        }
        /* The directory is private (0700): it may carry the secret itself. */
        if (st->rank == 0) {
            dc_auth_random(st->secret, sizeof(st->secret));
            return dc_store_set(st->store, "secret", st->secret, sizeof(st->secret));
        }
        status = dc_store_get(st->store, "secret", st->secret, sizeof(st->secret), &len,
                              timeout_ms);
        if (status == DCOMM_OK && len != sizeof(st->secret)) {
            status = dc_error_set(DCOMM_ERR_AUTH, "rank %d: the job secret in DCOMM_STORE_DIR "
                                  "%s has %zu bytes, not %zu: a stale or foreign store "
                                  "directory?", st->rank, dir, len, sizeof(st->secret));
        }
        return status;
    }
    /* Started by mpirun (or another launcher a module knows): rank 0 serves the
     * store, and the module's broadcast tells the others where. */
    for (int i = 0; i < dc_modules_count(); i++) {
        const dc_module_t *mod = dc_module_get(i);
        char id[HOST_ID_MAX];

        if (mod->launched_by != NULL && mod->boot_bcast != NULL && mod->launched_by()) {
            host_id(id, sizeof(id));
            DC_DEBUG("rendezvous through the %s module", mod->name);
            dc_status_t status = dc_rdv_local_open(st->rank, mod->boot_bcast, id, timeout_ms,
                                                   st->secret, &st->store);

            if (status == DCOMM_OK) {
                set_scope(st->store);
            }
            return status;
        }
    }
    return dc_error_set(DCOMM_ERR_INVALID_ARG,
                        "rank %d of %d has no rendezvous: start the job with dlaunch (or set "
                        "DCOMM_STORE_DIR to a directory shared by all ranks, or build the mpi "
                        "module and start it with mpirun)",
                        st->rank, st->size);
}

/* How many times this process has joined an elastic job's round. */
static unsigned joins;

/* An elastic worker (id W) says it is ready, "elastic/ready/W" = n for its n-th
 * init, and waits until dlaunch places it in a round, "elastic/assign/W/n" =
 * "<round> <rank> <size> <stamp>" (stamp: dlaunch's latest hosts notice then,
 * which this round already reflects); this life's keys are then scoped to the round, which
 * every member shares (their init counts differ). dlaunch answers when every
 * live worker is ready, or fails the job (the wait then ends with its cause). */
static dc_status_t elastic_join(dc_state_t *st, int timeout_ms)
{
    int worker = (int)DC_MIN(dc_config.elastic_worker, (int64_t)INT_MAX);
    char key[64], val[64];
    unsigned round;
    unsigned long long stamp;
    size_t len;
    int n, rank, size;
    dc_status_t status;

    joins++;
    snprintf(key, sizeof(key), "elastic/ready/%d", worker);
    n = snprintf(val, sizeof(val), "%u", joins);
    status = st->store->ops->set(st->store, key, val, (size_t)n);
    if (status < 0) {
        return status;
    }
    snprintf(key, sizeof(key), "elastic/assign/%d/%u", worker, joins);
    status = st->store->ops->get(st->store, key, val, sizeof(val) - 1, &len, timeout_ms);
    if (status < 0) {
        return dc_error_set(status, "elastic worker %d found no place in a round of the job: "
                            "%s", worker, dc_error_get());
    }
    val[DC_MIN(len, sizeof(val) - 1)] = '\0';
    if (len >= sizeof(val) || sscanf(val, "%u %d %d %llu", &round, &rank, &size, &stamp) != 4 ||
        size < 1 || rank < 0 || rank >= size) {
        return dc_error_set(DCOMM_ERR_INTERNAL, "elastic worker %d: dlaunch's assignment "
                            "'%.40s' is malformed", worker, val);
    }
    st->rank = rank;
    st->size = size;
    st->hosts_stamp = stamp;
    snprintf(st->store->scope, sizeof(st->store->scope), "round%u", round);
    DC_DEBUG("elastic worker %d: rank %d of %d in round %u", worker, rank, size, round);
    return DCOMM_OK;
}

dc_status_t dc_bootstrap_hosts_notice(dc_state_t *st, uint64_t *stamp_p, int *result_p)
{
    char val[64];
    unsigned long long stamp;
    size_t len;
    int result;
    dc_status_t status;

    if (!elastic_worker() || st->store == NULL) {
        *stamp_p = 0;
        *result_p = 0;
        return DCOMM_OK;
    }
    status = st->store->ops->get(st->store, "elastic/hosts", val, sizeof(val) - 1, &len, 0);
    if (status == DCOMM_ERR_TIMEOUT) { /* not set: no change yet */
        *stamp_p = 0;
        *result_p = 0;
        return DCOMM_OK;
    }
    if (status < 0) {
        return status;
    }
    val[DC_MIN(len, sizeof(val) - 1)] = '\0';
    if (len >= sizeof(val) || sscanf(val, "%llu %d", &stamp, &result) != 2 || result < 0 ||
        result > 3) {
        return dc_error_set(DCOMM_ERR_INTERNAL, "dlaunch's hosts notice '%.40s' is malformed",
                            val);
    }
    /* Older notices are what this round was formed with. */
    *stamp_p = stamp > st->hosts_stamp ? stamp : 0;
    *result_p = stamp > st->hosts_stamp ? result : 0;
    return DCOMM_OK;
}

static dc_status_t events_watch(void *arg)
{
    dc_state_t *st = arg;
    char msg[512];
    int rc = dc_rdv_events_read(st->events_fd, msg, sizeof(msg));

    /* "dlaunch:" marks the text as the launcher's own word: the coordinator
     * then takes it as the cause as it is, instead of waiting (up to 1 s) for
     * a second word from dlaunch on a channel this call just drained. */
    if (rc == 1) {
        return dc_error_set(DCOMM_ERR_PEER_LOST, "dlaunch: %s", msg);
    }
    if (rc < 0) {
        return dc_error_set(DCOMM_ERR_PEER_LOST, "lost the connection to dlaunch");
    }
    return DCOMM_OK;
}

/* How the rendezvous client words a request the server failed because dlaunch
 * failed the job ("... failed: a peer rank was lost: <dlaunch's text>"): the
 * launcher's word is in the text already. */
#define RDV_JOB_FAILED "failed: a peer rank was lost: "

/* A lost connection means a process probably ended, which dlaunch reports
 * within milliseconds: wait up to 1 s for its word. A timeout means a peer
 * went quiet while alive (stopped, hung, cut off), which dlaunch cannot see:
 * take only what it has already said, so the failure comes at DCOMM_TIMEOUT. */
int dc_bootstrap_launcher_cause(dc_state_t *st, dc_status_t status, char *text, size_t cap)
{
    char msg[512], seen[1024];
    struct pollfd pfd = {.fd = st->events_fd, .events = POLLIN};
    uint64_t deadline = dc_now_ns() + (status == DCOMM_ERR_TIMEOUT ? 0 : 1000000000ull);

    if (st->events_fd < 0 || (status != DCOMM_ERR_PEER_LOST && status != DCOMM_ERR_TRANSPORT &&
                              status != DCOMM_ERR_TIMEOUT) ||
        strstr(text, "dlaunch:") != NULL || strstr(text, RDV_JOB_FAILED) != NULL) {
        return -1;
    }
    for (;;) {
        int rc = dc_rdv_events_read(st->events_fd, msg, sizeof(msg));

        if (rc == 1) {
            size_t len;
            int dead;

            snprintf(seen, sizeof(seen), "%s", text);
            len = (size_t)snprintf(text, cap, "%s (seen here as: ", msg);
            if (len < cap) {
                snprintf(text + len, cap - len, "%.*s)", (int)(cap - len - 2), seen);
            }
            /* "rank N exited with code C": N failed on an error of its own, and
             * published why (a rank killed by a signal had no time to). */
            return strstr(msg, " exited with code ") != NULL && sscanf(msg, "rank %d", &dead) == 1 &&
                           dead >= 0 && dead < st->size
                       ? dead : -1;
        }
        if (rc < 0 || dc_now_ns() >= deadline) {
            return -1;
        }
        (void)poll(&pfd, 1, 50);
    }
}

dc_status_t dc_bootstrap_connect(dc_state_t *st)
{
    int start_ms = (int)DC_MAX(dc_config.timeout_ms, 60000u);
    dc_bootstrap_t boot = {0};
    dc_status_t status;

    st->events_fd = -1;
    if (dc_config.start_timeout_ms > 0) {
        start_ms = (int)DC_MIN(dc_config.start_timeout_ms, (uint64_t)INT_MAX);
    }
    dc_modules_load(dc_config.module_path);
    if (elastic_worker() && dc_config.rendezvous[0] == '\0') {
        status = dc_error_set(DCOMM_ERR_INVALID_ARG, "DCOMM_ELASTIC_WORKER is set but "
                              "DCOMM_RENDEZVOUS is not: start elastic jobs with dlaunch");
        goto err;
    }
    if (st->size > 1 || elastic_worker()) {
        lives++;
        DC_CHECK_GOTO(open_store(st, start_ms), status, err);
        if (elastic_worker()) {
            DC_CHECK_GOTO(elastic_join(st, start_ms), status, err);
        }
        DC_CHECK_GOTO(exchange_hosts(st, start_ms), status, err);
        if (dc_config.rendezvous[0] != '\0') {
            boot.local_addr = dc_rdv_client_local_addr(st->store);
            if (dc_rdv_events_open(dc_config.rendezvous, st->secret, st->rank, start_ms,
                                   &st->events_fd) < 0) {
                DC_WARN("no event channel from dlaunch (%s): peer loss is detected by the "
                        "transports alone", dc_error_get());
                st->events_fd = -1;
            }
        } else if (dc_rdv_local_addr(st->store) != NULL) {
            boot.local_addr = dc_rdv_local_addr(st->store);
        }
    } else {
        st->host_of = calloc(1, sizeof(int));
        st->local_rank_of = calloc(1, sizeof(int));
        if (st->host_of == NULL || st->local_rank_of == NULL) {
            status = dc_error_set(DCOMM_ERR_NO_MEMORY, "out of memory");
            goto err;
        }
    }
    st->topo = (dc_topo_t){
        .rank = st->rank,
        .size = st->size,
        .nhosts = st->cross_size,
        .host_of = st->host_of,
        .local_rank_of = st->local_rank_of,
        .local_size = st->local_size,
        .ncores = usable_cores(),
    };
    boot.topo = &st->topo;
    boot.store = st->store;
    boot.secret = st->secret;
    boot.ifname = dc_config.ifname[0] ? dc_config.ifname : NULL;
    boot.timeout_ms = start_ms;
    boot.tcp_encrypt = dc_config.tcp_encrypt;
    boot.abort_fd = &st->events_fd;
    boot.shm_ring_size = dc_config.shm_ring_size;
    DC_CHECK_GOTO(dc_net_open(&boot, dc_config.transports, &st->net), status, err);
    dc_net_set_timeout(st->net, (int)dc_config.timeout_ms);
    if (st->events_fd >= 0) {
        dc_net_set_watch(st->net, st->events_fd, events_watch, st);
    }
    return DCOMM_OK;
err:
    return status;
}

void dc_bootstrap_close(dc_state_t *st)
{
    if (st->net != NULL) {
        dc_net_close(st->net);
        st->net = NULL;
    }
    if (st->events_fd >= 0) {
        close(st->events_fd);
        st->events_fd = -1;
    }
    if (st->store != NULL) {
        st->store->ops->close(st->store);
        st->store = NULL;
    }
    free(st->host_of);
    free(st->local_rank_of);
    st->host_of = st->local_rank_of = NULL;
}
