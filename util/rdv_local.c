/*
 * Rendezvous for mpirun-started jobs: rank 0 runs dlaunch's store server on a
 * thread, broadcasts (secret, port, addresses) over the launcher's runtime, and
 * every rank then uses the ordinary authenticated client.
 */
#include "job_store.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"
#include "rdv.h"

#define LOCAL_HOST_ID_MAX 320
#define LOCAL_ADDRS_MAX   512

/* What rank 0 broadcasts. Fixed layout; every rank runs the same binary. */
typedef struct local_info {
    int32_t status;                 /* rank 0's server start-up status */
    int32_t port;
    uint8_t secret[DC_AUTH_SECRET_LEN];
    char host_id[LOCAL_HOST_ID_MAX];
    char addrs[LOCAL_ADDRS_MAX];    /* rank 0's IPv4 addresses, comma-separated */
    char error[256];
} local_info_t;

typedef struct local_store {
    dc_store_t super;
    dc_store_t *client;
    dc_rdv_server_t *server; /* rank 0 only */
    pthread_t thread;
    int stop_fd;
} local_store_t;

static dc_status_t local_set(dc_store_t *s, const char *key, const void *val, size_t len)
{
    return dc_store_set(((local_store_t *)s)->client, key, val, len);
}

static dc_status_t local_get(dc_store_t *s, const char *key, void *buf, size_t cap,
                             size_t *len_p, int timeout_ms)
{
    return dc_store_get(((local_store_t *)s)->client, key, buf, cap, len_p, timeout_ms);
}

static dc_status_t local_add(dc_store_t *s, const char *key, int64_t delta, int64_t *value_p)
{
    return dc_store_add(((local_store_t *)s)->client, key, delta, value_p);
}

static void local_close(dc_store_t *s)
{
    local_store_t *ls = (local_store_t *)s;
    uint64_t one = 1;

    if (ls->client != NULL) {
        ls->client->ops->close(ls->client);
    }
    if (ls->server != NULL) {
        if (write(ls->stop_fd, &one, sizeof(one)) < 0) {
            DC_WARN("rdv thread: cannot signal stop: %s", strerror(errno));
        }
        pthread_join(ls->thread, NULL);
        dc_rdv_server_destroy(ls->server);
    }
    if (ls->stop_fd >= 0) {
        close(ls->stop_fd);
    }
    free(ls);
}

static void local_set_op_timeout(dc_store_t *s, int timeout_ms)
{
    dc_store_set_op_timeout(((local_store_t *)s)->client, timeout_ms);
}

static const dc_store_ops_t local_ops = {
    .set = local_set,
    .get = local_get,
    .add = local_add,
    .close = local_close,
    .set_op_timeout = local_set_op_timeout,
};

static void *server_main(void *arg)
{
    local_store_t *ls = arg;

    for (;;) {
        struct pollfd fds[2] = {
            {.fd = dc_rdv_server_fd(ls->server), .events = POLLIN},
            {.fd = ls->stop_fd, .events = POLLIN},
        };
        int ms = dc_rdv_server_timeout_ms(ls->server);

        if (poll(fds, 2, ms < 0 ? 1000 : ms) < 0 && errno != EINTR) {
            DC_ERROR("rdv thread: poll: %s", strerror(errno));
            break;
        }
        if (fds[1].revents != 0) {
            break;
        }
        dc_rdv_server_progress(ls->server);
    }
    return NULL;
}

/* Rank 0's non-loopback IPv4 addresses that are up. */
static void own_addrs(char *buf, size_t cap)
{
    struct ifaddrs *ifs, *i;
    size_t len = 0;

    buf[0] = '\0';
    if (getifaddrs(&ifs) != 0) {
        return;
    }
    for (i = ifs; i != NULL; i = i->ifa_next) {
        char text[INET_ADDRSTRLEN];

        if (i->ifa_addr == NULL || i->ifa_addr->sa_family != AF_INET ||
            (i->ifa_flags & IFF_LOOPBACK) || !(i->ifa_flags & IFF_UP) ||
            inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, text,
                      sizeof(text)) == NULL ||
            len + strlen(text) + 2 >= cap) {
            continue;
        }
        len += (size_t)snprintf(buf + len, cap - len, "%s%s", len ? "," : "", text);
    }
    freeifaddrs(ifs);
}

static dc_status_t server_start(local_store_t *ls, local_info_t *info)
{
    dc_status_t status;

    dc_auth_random(info->secret, sizeof(info->secret));
    status = dc_rdv_server_create("0.0.0.0", 0, info->secret, &ls->server);
    if (status < 0) {
        return status;
    }
    info->port = dc_rdv_server_port(ls->server);
    own_addrs(info->addrs, sizeof(info->addrs));
    if (pthread_create(&ls->thread, NULL, server_main, ls) != 0) {
        dc_rdv_server_destroy(ls->server);
        ls->server = NULL;
        return dc_error_set(DCOMM_ERR_INTERNAL, "rank 0: cannot start the rendezvous thread");
    }
    return DCOMM_OK;
}

/* Loopback on rank 0's host, else each of its addresses in turn. */
static dc_status_t client_connect(int rank, const local_info_t *info, const char *host_id,
                                  int timeout_ms, dc_store_t **client_p)
{
    char addrs[LOCAL_ADDRS_MAX + 16], hostport[64], tried[LOCAL_ADDRS_MAX + 16] = "";
    dc_status_t status = DCOMM_ERR_TRANSPORT;
    int n = 1;

    if (strcmp(info->host_id, host_id) == 0) {
        snprintf(addrs, sizeof(addrs), "127.0.0.1");
    } else {
        snprintf(addrs, sizeof(addrs), "%s", info->addrs);
        for (const char *p = addrs; *p != '\0'; p++) {
            n += (*p == ',');
        }
    }
    for (char *save = NULL, *a = strtok_r(addrs, ",", &save); a != NULL;
         a = strtok_r(NULL, ",", &save)) {
        snprintf(hostport, sizeof(hostport), "%s:%d", a, (int)info->port);
        status = dc_rdv_client_open(hostport, info->secret, rank, DC_MAX(timeout_ms / n, 2000),
                                    client_p);
        if (status == DCOMM_OK) {
            return DCOMM_OK;
        }
        size_t len = strlen(tried);
        snprintf(tried + len, sizeof(tried) - len, "%s%s", len ? ", " : "", hostport);
    }
    return dc_error_set(status < 0 ? status : DCOMM_ERR_TRANSPORT,
                        "rank %d cannot reach rank 0's rendezvous (tried %s): %s", rank,
                        tried[0] ? tried : "no address", dc_error_get());
}

dc_status_t dc_rdv_local_open(int rank, dc_bcast_fn_t bcast, const char *host_id, int timeout_ms,
                              uint8_t secret[DC_AUTH_SECRET_LEN], dc_store_t **store_p)
{
    local_info_t *info = calloc(1, sizeof(*info));
    local_store_t *ls = calloc(1, sizeof(*ls));
    dc_status_t status;

    if (info == NULL || ls == NULL) {
        free(info);
        free(ls);
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "rdv: out of memory");
    }
    ls->super.ops = &local_ops;
    ls->stop_fd = eventfd(0, EFD_CLOEXEC);
    if (rank == 0) {
        snprintf(info->host_id, sizeof(info->host_id), "%s", host_id);
        info->status = ls->stop_fd < 0 ? dc_error_set(DCOMM_ERR_INTERNAL, "eventfd: %s",
                                                      strerror(errno))
                                       : server_start(ls, info);
        if (info->status < 0) {
            snprintf(info->error, sizeof(info->error), "%s", dc_error_get());
        }
    }
    /* Every rank takes part even when rank 0 failed, so none waits forever. */
    DC_CHECK_GOTO(bcast(info, sizeof(*info), 0), status, err);
    info->host_id[sizeof(info->host_id) - 1] = '\0';
    info->addrs[sizeof(info->addrs) - 1] = '\0';
    info->error[sizeof(info->error) - 1] = '\0';
    if (info->status < 0) {
        status = dc_error_set(info->status, "rank 0 could not start the rendezvous: %s",
                              info->error);
        goto err;
    }
    DC_CHECK_GOTO(client_connect(rank, info, host_id, timeout_ms, &ls->client), status, err);
    memcpy(secret, info->secret, DC_AUTH_SECRET_LEN);
    DC_DEBUG("rendezvous through rank 0's thread (port %d)", (int)info->port);
    free(info);
    *store_p = &ls->super;
    return DCOMM_OK;
err:
    free(info);
    local_close(&ls->super);
    return status;
}

const char *dc_rdv_local_addr(dc_store_t *store)
{
    if (store == NULL || store->ops != &local_ops) {
        return NULL;
    }
    return dc_rdv_client_local_addr(((local_store_t *)store)->client);
}
