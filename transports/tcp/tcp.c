/*
 * The tcp transport: one authenticated socket per pair of ranks (the lower rank
 * connects, the higher accepts), messages framed as {tag, len} + payload, and
 * per-endpoint FIFO queues driven by progress() over an edge-triggered epoll set
 * that is also the descriptor the core sleeps on. This file opens and closes
 * the transport, connects endpoints and holds the ops table; set-up and
 * handshakes are in tcp_conn.c, the data path in tcp_data.c, encrypted streams
 * in tcp_crypt.c and record.c.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "dc_time.h"
#include "tcp_int.h"

#define TCP_SETUP_MS       60000     /* set-up deadline when the job has none */

static uint64_t setup_deadline(const dc_transport_t *tp)
{
    return dc_deadline_ms(tp->timeout_ms > 0 ? tp->timeout_ms : TCP_SETUP_MS);
}

/* ---- open, connect, close -------------------------------------------------- */

static dc_status_t tcp_query(const dc_topo_t *topo, dc_transport_attr_t *attr_p)
{
    (void)topo;
    /* loopback 14-17 us, ~10 GbE */
    *attr_p = (dc_transport_attr_t){.usable = 1, .same_host_only = 0, .priority = 10,
                                    .latency_us = 20.0, .bandwidth_gbs = 1.0};
    return DCOMM_OK;
}

/* The address to listen on: the given literal, else ifname's IPv4 address. */
static dc_status_t local_address(const dc_bootstrap_t *boot, char *ip, size_t cap)
{
    struct ifaddrs *ifs, *it;
    dc_status_t status;

    if (boot->local_addr != NULL) {
        snprintf(ip, cap, "%s", boot->local_addr);
        return DCOMM_OK;
    }
    if (boot->ifname == NULL) {
        snprintf(ip, cap, "127.0.0.1");
        return DCOMM_OK;
    }
    if (getifaddrs(&ifs) != 0) {
        return dc_error_set(DCOMM_ERR_TRANSPORT, "tcp: getifaddrs: %s", strerror(errno));
    }
    status = dc_error_set(DCOMM_ERR_INVALID_ARG, "tcp: DCOMM_IFNAME=%s has no IPv4 address",
                          boot->ifname);
    for (it = ifs; it != NULL; it = it->ifa_next) {
        if (it->ifa_addr != NULL && it->ifa_addr->sa_family == AF_INET &&
            strcmp(it->ifa_name, boot->ifname) == 0) {
            inet_ntop(AF_INET, &((struct sockaddr_in *)it->ifa_addr)->sin_addr, ip,
                      (socklen_t)cap);
            status = DCOMM_OK;
            dc_error_clear();
            break;
        }
    }
    freeifaddrs(ifs);
    return status;
}

static dc_status_t tcp_listen(dc_transport_t *tp, const dc_bootstrap_t *boot)
{
    char ip[INET_ADDRSTRLEN + 16], key[32];
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t len = sizeof(sa);
    dc_status_t status;

    status = local_address(boot, ip, sizeof(ip));
    if (status < 0) {
        return status;
    }
    if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "tcp: '%s' is not an IPv4 address", ip);
    }
    tp->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (tp->listen_fd < 0 || bind(tp->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        listen(tp->listen_fd, SOMAXCONN) != 0 ||
        getsockname(tp->listen_fd, (struct sockaddr *)&sa, &len) != 0) {
        return dc_error_set(DCOMM_ERR_TRANSPORT, "tcp: cannot listen on %s: %s", ip,
                            strerror(errno));
    }
    snprintf(tp->addr, sizeof(tp->addr), "%s:%u", ip, (unsigned)ntohs(sa.sin_port));
    snprintf(key, sizeof(key), DC_TCP_KEY_FMT, tp->rank);
    return dc_store_set(boot->store, key, tp->addr, strlen(tp->addr));
}

static void tcp_close(dc_transport_t *tp)
{
    if (tp == NULL) {
        return;
    }
    for (int r = 0; tp->eps != NULL && r < tp->size; r++) {
        tcp_ep_t *ep = &tp->eps[r];

        dc_tcp_fail_queue(&ep->sq, &ep->sq_tail, DCOMM_ERR_SHUT_DOWN);
        dc_tcp_fail_queue(&ep->rq, &ep->rq_tail, DCOMM_ERR_SHUT_DOWN);
        if (ep->fd >= 0) {
            close(ep->fd);
        }
        dc_auth_wipe(&ep->tx, sizeof(ep->tx));
        dc_auth_wipe(&ep->rx, sizeof(ep->rx));
        free(ep->txb);
        free(ep->rxb);
        free(ep->rxp);
    }
    dc_tcp_hs_close_all(tp);
    if (tp->listen_fd >= 0) {
        close(tp->listen_fd);
    }
    if (tp->epfd >= 0) {
        close(tp->epfd);
    }
    free(tp->eps);
    free(tp->peers);
    free(tp->scratch);
    free(tp->stage);
    dc_auth_wipe(tp->secret, sizeof(tp->secret));
    free(tp);
}

static dc_status_t tcp_open(const dc_bootstrap_t *boot, dc_transport_t **tp_p)
{
    const dc_topo_t *topo = boot != NULL ? boot->topo : NULL;
    dc_transport_t *tp;
    dc_status_t status;

    if (topo == NULL || boot->store == NULL || boot->secret == NULL || topo->size <= 0 ||
        topo->rank < 0 || topo->rank >= topo->size || boot->npeers < 0 ||
        (boot->npeers > 0 && boot->peers == NULL)) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "tcp: open: incomplete bootstrap");
    }
    tp = calloc(1, sizeof(*tp));
    if (tp == NULL) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "tcp: out of memory");
    }
    tp->rank = topo->rank;
    tp->size = topo->size;
    tp->timeout_ms = boot->timeout_ms;
    tp->abort_fd = boot->abort_fd != NULL ? *boot->abort_fd : -1;
    tp->store = boot->store;
    tp->listen_fd = -1;
    memcpy(tp->secret, boot->secret, DC_AUTH_SECRET_LEN);
    tp->epfd = epoll_create1(EPOLL_CLOEXEC);
    tp->eps = calloc((size_t)tp->size, sizeof(*tp->eps));
    tp->peers = malloc(sizeof(int) * (size_t)DC_MAX(boot->npeers, 1));
    tp->scratch = malloc(TCP_SCRATCH_LEN);
    tp->encrypt = boot->tcp_encrypt != 0;
    tp->stage = tp->encrypt ? malloc(DC_TCP_REC_MAX) : NULL;
    if (tp->epfd < 0 || tp->eps == NULL || tp->peers == NULL || tp->scratch == NULL ||
        (tp->encrypt && tp->stage == NULL)) {
        status = dc_error_set(DCOMM_ERR_NO_MEMORY, "tcp: cannot allocate: %s", strerror(errno));
        goto err_close;
    }
    for (int r = 0; r < tp->size; r++) {
        tp->eps[r] = (tcp_ep_t){.super = {.ops = &dc_transport_tcp_ops, .tp = tp, .peer = r},
                                .fd = -1};
    }
    for (int i = 0; i < boot->npeers; i++) {
        int r = boot->peers[i];

        if (r < 0 || r >= tp->size || r == tp->rank || tp->eps[r].served) {
            status = dc_error_set(DCOMM_ERR_INVALID_ARG, "tcp: open: bad peer rank %d", r);
            goto err_close;
        }
        tp->eps[r].served = 1;
    }
    for (int r = 0; r < tp->size; r++) {
        if (tp->eps[r].served) {
            tp->peers[tp->npeers++] = r;
        }
    }
    DC_CHECK_GOTO(tcp_listen(tp, boot), status, err_close);
    DC_DEBUG("tcp: rank %d listening on %s", tp->rank, tp->addr);
    *tp_p = tp;
    return DCOMM_OK;

err_close:
    tcp_close(tp);
    return status;
}

static int all_accepted(const dc_transport_t *tp)
{
    for (int i = 0; i < tp->npeers && tp->peers[i] < tp->rank; i++) {
        if (tp->eps[tp->peers[i]].fd < 0 && !tp->eps[tp->peers[i]].lost) {
            return 0;
        }
    }
    return 1;
}

static dc_status_t tcp_connect(dc_transport_t *tp, int peer, dc_endpoint_t **ep_p)
{
    uint64_t deadline = setup_deadline(tp);
    dc_status_t status;

    if (peer < 0 || peer >= tp->size || !tp->eps[peer].served) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "tcp: rank %d does not serve rank %d",
                            tp->rank, peer);
    }
    if (tp->eps[peer].fd < 0 && !tp->eps[peer].lost) {
        status = peer < tp->rank ? dc_tcp_accept_until(tp, peer, deadline)
                                 : dc_tcp_connect_to(tp, peer, deadline);
        if (status < 0) {
            return status;
        }
    }
    *ep_p = &tp->eps[peer].super;
    if (tp->listen_fd >= 0 && all_accepted(tp)) {
        /* Nobody else may connect: stop listening (strangers still in their
         * handshake go too). */
        close(tp->listen_fd);
        tp->listen_fd = -1;
        dc_tcp_hs_close_all(tp);
    }
    return DCOMM_OK;
}

static dc_status_t tcp_wait_fd(dc_transport_t *tp, int *fd_p)
{
    *fd_p = tp->epfd;
    return DCOMM_OK;
}

const dc_transport_ops_t dc_transport_tcp_ops = {
    .abi_version = DC_TRANSPORT_ABI_VERSION,
    .name = "tcp",
    /* set-up */
    .query = tcp_query,
    .open = tcp_open,
    .connect = tcp_connect,
    /* data path */
    .isend = dc_tcp_isend,
    .irecv = dc_tcp_irecv,
    .progress = dc_tcp_progress,
    /* sleeping and liveness */
    .wait_fd = tcp_wait_fd,
    .doorbell = NULL,
    .check = dc_tcp_check,
    .close = tcp_close,
};
