/*
 * Transport selection per peer and the process's single waiting loop. Built-in
 * transports sit in one priority-ordered array; the first usable one allowed by
 * DCOMM_TRANSPORTS that can reach a peer serves it (NCCL's transport.cc idea).
 */
#include "net.h"

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"
#include "dc_time.h"
#include "module.h"

#define NET_MAX_TRANSPORTS 6
#define NET_MAX_CANDIDATES 8 /* built-in plus module transports */
#define NET_SLICE_NS       100000000ull /* liveness checks while sleeping */
#define NET_MIXED_SLICE_MS 1            /* poll() slice when shm is active too */
#define NET_POLLER_NAP_NS  50000ull      /* sleep slice when a transport has no fd */

/* Candidates for a peer other than this rank, best first. */
static const dc_transport_ops_t *const builtin_transports[] = {
    &dc_transport_shm_ops,
    &dc_transport_tcp_ops,
};

typedef struct net_transport {
    const dc_transport_ops_t *ops;
    dc_transport_t *tp;
    int fd;              /* wait_fd, -1 when none */
    dc_doorbell_t *db;   /* doorbell, NULL when none */
    dc_transport_attr_t attr; /* what its query() said */
} net_transport_t;

struct dc_net {
    int rank, size;
    net_transport_t tps[NET_MAX_TRANSPORTS];
    int ntps;
    int *tp_of;            /* [size] index into tps serving each rank */
    dc_endpoint_t **eps;   /* [size] */
    dc_doorbell_t private_db; /* when no transport offers a doorbell */
    dc_doorbell_t *db;     /* the doorbell this process sleeps on */
    int wake_fd;           /* eventfd for wakes while sleeping in poll() */
    int poll_mode;         /* some transport needs poll(): tcp */
    int poller;            /* some transport offers neither fd nor doorbell (mpi) */
    int spin_limit;        /* idle progress rounds before sleeping, adapted: */
    int spin_min, spin_max; /* see net_spin_adapt */
    int timeout_ms;
    int watch_fd;
    dc_net_watch_fn_t watch_fn;
    void *watch_arg;
    uint64_t last_check_ns;
    void **orphans;        /* memory of requests a failed wait left posted: */
    int norphans;          /* freed after the transports close */
};

int dc_net_spec_allows(const char *spec, const char *name)
{
    int exclude, listed = 0;
    size_t len = strlen(name);

    if (spec == NULL || *spec == '\0') {
        return 1;
    }
    exclude = (*spec == '^');
    for (const char *p = spec + exclude; *p != '\0';) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);

        if (n == len && strncmp(p, name, n) == 0) {
            listed = 1;
        }
        p += n + (end != NULL);
    }
    return exclude ? !listed : listed;
}

static dc_status_t spec_validate(const char *spec)
{
    static const char *const known[] = {"self", "shm", "tcp", "mpi", "ucx", "nccl"};

    if (spec == NULL) {
        return DCOMM_OK;
    }
    for (const char *p = spec + (*spec == '^'); *p != '\0';) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        int ok = 0;

        for (size_t i = 0; i < DC_ARRAY_SIZE(known); i++) {
            ok |= (strlen(known[i]) == n && strncmp(p, known[i], n) == 0);
        }
        if (!ok) {
            return dc_error_set(DCOMM_ERR_INVALID_ARG,
                                "DCOMM_TRANSPORTS='%s': unknown transport '%.*s' (known: self, "
                                "shm, tcp, mpi, ucx, nccl; '^' in front excludes)",
                                spec, (int)n, p);
        }
        p += n + (end != NULL);
    }
    return DCOMM_OK;
}

static int net_add_transport(dc_net_t *net, const dc_transport_ops_t *ops,
                             const dc_transport_attr_t *attr)
{
    for (int i = 0; i < net->ntps; i++) {
        if (net->tps[i].ops == ops) {
            return i;
        }
    }
    net->tps[net->ntps].ops = ops;
    net->tps[net->ntps].fd = -1;
    net->tps[net->ntps].attr = *attr;
    return net->ntps++;
}

/* Built-in transports and those of loaded modules (mpi, ucx), ordered by the
 * priority their query() gives, best first (stable: ties keep this order). */
static size_t net_candidates(const dc_topo_t *topo, const char *spec,
                             const dc_transport_ops_t **cand, dc_transport_attr_t *attr)
{
    size_t n = 0;

    for (size_t t = 0; t < DC_ARRAY_SIZE(builtin_transports); t++) {
        cand[n++] = builtin_transports[t];
    }
    for (int m = 0; m < dc_modules_count() && n < NET_MAX_CANDIDATES; m++) {
        if (dc_module_get(m)->transport != NULL) {
            cand[n++] = dc_module_get(m)->transport;
        }
    }
    for (size_t t = 0; t < n; t++) {
        memset(&attr[t], 0, sizeof(attr[t]));
        if (!dc_net_spec_allows(spec, cand[t]->name) || cand[t]->query(topo, &attr[t]) < 0) {
            attr[t].usable = 0;
        }
        for (size_t u = t; u > 0 && attr[u].priority > attr[u - 1].priority; u--) {
            const dc_transport_ops_t *o = cand[u];
            dc_transport_attr_t a = attr[u];

            cand[u] = cand[u - 1], attr[u] = attr[u - 1];
            cand[u - 1] = o, attr[u - 1] = a;
        }
    }
    return n;
}

/* The same rule runs on every rank, so both sides of a pair pick the same. */
static dc_status_t net_select(dc_net_t *net, const dc_topo_t *topo, const char *spec)
{
    const dc_transport_ops_t *cand[NET_MAX_CANDIDATES];
    dc_transport_attr_t attr[NET_MAX_CANDIDATES];
    size_t ncand = net_candidates(topo, spec, cand, attr);
    dc_transport_attr_t self_attr = {0};

    (void)dc_transport_self_ops.query(topo, &self_attr);
    for (int peer = 0; peer < net->size; peer++) {
        int same_host = topo->host_of[peer] == topo->host_of[net->rank];

        net->tp_of[peer] = -1;
        if (peer == net->rank) {
            net->tp_of[peer] = net_add_transport(net, &dc_transport_self_ops, &self_attr);
            continue;
        }
        for (size_t t = 0; t < ncand; t++) {
            if (attr[t].usable && (same_host || !attr[t].same_host_only)) {
                net->tp_of[peer] = net_add_transport(net, cand[t], &attr[t]);
                break;
            }
        }
        if (net->tp_of[peer] < 0) {
            return dc_error_set(DCOMM_ERR_TRANSPORT,
                                "rank %d: no transport can reach rank %d (%s host) with "
                                "DCOMM_TRANSPORTS='%s'",
                                net->rank, peer, same_host ? "same" : "other",
                                spec ? spec : "");
        }
    }
    return DCOMM_OK;
}

static dc_status_t net_open_transports(dc_net_t *net, const dc_bootstrap_t *boot_in)
{
    int *peers = malloc(sizeof(int) * (size_t)net->size);
    dc_status_t status = DCOMM_OK;

    if (peers == NULL) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "net: out of memory");
    }
    for (int t = 0; t < net->ntps && status == DCOMM_OK; t++) {
        dc_bootstrap_t boot = *boot_in;
        net_transport_t *nt = &net->tps[t];

        boot.npeers = 0;
        boot.peers = peers;
        for (int r = 0; r < net->size; r++) {
            if (net->tp_of[r] == t) {
                peers[boot.npeers++] = r;
            }
        }
        status = nt->ops->open(&boot, &nt->tp);
        if (status < 0) {
            DC_ERROR("rank %d: cannot open transport %s: %s", net->rank, nt->ops->name,
                     dc_error_get());
            break;
        }
        if (nt->ops->wait_fd != NULL && nt->ops->wait_fd(nt->tp, &nt->fd) < 0) {
            nt->fd = -1;
        }
        nt->db = nt->ops->doorbell ? nt->ops->doorbell(nt->tp) : NULL;
        if (nt->fd >= 0) {
            net->poll_mode = 1;
        }
        if (nt->db != NULL) {
            net->db = nt->db;
        }
        net->poller |= (nt->fd < 0 && nt->db == NULL && nt->ops != &dc_transport_self_ops);
    }
    /* Connect in ascending rank order: what tcp's accept/connect split needs. */
    for (int peer = 0; peer < net->size && status == DCOMM_OK; peer++) {
        net_transport_t *nt = &net->tps[net->tp_of[peer]];

        status = nt->ops->connect(nt->tp, peer, &net->eps[peer]);
        if (status < 0) {
            DC_ERROR("rank %d: cannot connect to rank %d over %s: %s", net->rank, peer,
                     nt->ops->name, dc_error_get());
        }
    }
    free(peers);
    return status;
}

dc_status_t dc_net_open(const dc_bootstrap_t *boot, const char *spec, dc_net_t **net_p)
{
    const dc_topo_t *topo = boot->topo;
    dc_status_t status;
    dc_net_t *net;

    status = spec_validate(spec);
    if (status < 0) {
        return status;
    }
    net = calloc(1, sizeof(*net));
    if (net == NULL) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "net: out of memory");
    }
    net->rank = topo->rank;
    net->size = topo->size;
    net->db = &net->private_db;
    net->watch_fd = -1;
    net->timeout_ms = boot->timeout_ms;
    /* Spin only while ranks do not outnumber cores; else sleep almost at once so
     * the rank that has work gets the core. */
    net->spin_max = (topo->local_size <= topo->ncores) ? 20000 : 20;
    net->spin_min = DC_MIN(20, net->spin_max);
    net->spin_limit = net->spin_max;
    net->tp_of = calloc((size_t)net->size, sizeof(int));
    net->eps = calloc((size_t)net->size, sizeof(dc_endpoint_t *));
    net->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (net->tp_of == NULL || net->eps == NULL || net->wake_fd < 0) {
        status = dc_error_set(DCOMM_ERR_NO_MEMORY, "net: cannot allocate tables: %s",
                              strerror(errno));
        goto err_free;
    }
    DC_CHECK_GOTO(net_select(net, topo, spec), status, err_free);
    DC_CHECK_GOTO(net_open_transports(net, boot), status, err_close);
    for (int peer = 0; peer < net->size; peer++) {
        DC_DEBUG("rank %d -> rank %d: %s", net->rank, peer, dc_net_transport_name(net, peer));
    }
    *net_p = net;
    return DCOMM_OK;

err_close:
    dc_net_close(net);
    return status;
err_free:
    if (net->wake_fd >= 0) {
        close(net->wake_fd);
    }
    for (int i = 0; i < net->norphans; i++) {
        free(net->orphans[i]);
    }
    free(net->orphans);
    free(net->tp_of);
    free(net->eps);
    free(net);
    return status;
}

void dc_net_close(dc_net_t *net)
{
    if (net == NULL) {
        return;
    }
    for (int t = 0; t < net->ntps; t++) {
        if (net->tps[t].tp != NULL) {
            net->tps[t].ops->close(net->tps[t].tp);
        }
    }
    if (net->wake_fd >= 0) {
        close(net->wake_fd);
    }
    free(net->tp_of);
    free(net->eps);
    free(net);
}

void dc_net_free_after_close(dc_net_t *net, void *mem)
{
    void **grown;

    if (mem == NULL) {
        return;
    }
    grown = realloc(net->orphans, (size_t)(net->norphans + 1) * sizeof(*grown));
    if (grown == NULL) {
        /* Freeing it now could let a transport write into freed memory: keep
         * it for the life of the process instead. */
        DC_WARN("net: out of memory: %p stays allocated", mem);
        return;
    }
    net->orphans = grown;
    net->orphans[net->norphans++] = mem;
}

dc_endpoint_t *dc_net_ep(dc_net_t *net, int rank)
{
    return (rank >= 0 && rank < net->size) ? net->eps[rank] : NULL;
}

const char *dc_net_transport_name(dc_net_t *net, int rank)
{
    if (rank < 0 || rank >= net->size || net->tp_of[rank] < 0) {
        return "none";
    }
    return net->tps[net->tp_of[rank]].ops->name;
}

int dc_net_shares_memory(dc_net_t *net, int rank)
{
    if (rank < 0 || rank >= net->size || net->tp_of[rank] < 0) {
        return 0;
    }
    return net->tps[net->tp_of[rank]].attr.shared_memory;
}

int dc_net_transport_count(dc_net_t *net)
{
    return net->ntps;
}

const char *dc_net_transport_at(dc_net_t *net, int i, dc_transport_attr_t *attr_p)
{
    *attr_p = net->tps[i].attr;
    return net->tps[i].ops->name;
}

int dc_net_progress(dc_net_t *net)
{
    int events = 0;

    for (int t = 0; t < net->ntps; t++) {
        events += net->tps[t].ops->progress(net->tps[t].tp);
    }
    return events;
}

void dc_net_set_watch(dc_net_t *net, int watch_fd, dc_net_watch_fn_t fn, void *arg)
{
    net->watch_fd = watch_fd;
    net->watch_fn = fn;
    net->watch_arg = arg;
}

void dc_net_set_timeout(dc_net_t *net, int timeout_ms)
{
    net->timeout_ms = timeout_ms;
}

void dc_net_wake(dc_net_t *net)
{
    uint64_t one = 1;

    dc_doorbell_ring(net->db);
    if (net->poll_mode && write(net->wake_fd, &one, sizeof(one)) < 0) {
        /* EAGAIN: the counter is saturated, the sleeper wakes anyway. */
    }
}

/* Liveness of peers and of the job (dlaunch's events). */
static dc_status_t net_check(dc_net_t *net)
{
    dc_status_t status;

    net->last_check_ns = dc_now_ns();
    for (int t = 0; t < net->ntps; t++) {
        if (net->tps[t].ops->check != NULL) {
            status = net->tps[t].ops->check(net->tps[t].tp);
            if (status < 0) {
                return status;
            }
        }
    }
    if (net->watch_fn != NULL) {
        return net->watch_fn(net->watch_arg);
    }
    return DCOMM_OK;
}

void dc_net_fail(dc_net_t *net, const char *why)
{
    for (int t = 0; t < net->ntps; t++) {
        if (net->tps[t].ops->notify_failure != NULL) {
            net->tps[t].ops->notify_failure(net->tps[t].tp, why);
        }
    }
}

dc_status_t dc_net_check(dc_net_t *net)
{
    return net_check(net);
}

/* poll() on the transports' descriptors and the wake descriptor, at most
 * timeout_ns (a short slice when shm traffic, which rings no descriptor, is
 * possible too). Consumes nothing but the wake counter; owned: the caller
 * drives the network (then a readable watch makes the next check come now). */
static void net_poll_sleep(dc_net_t *net, uint64_t timeout_ns, int owned)
{
    struct pollfd fds[NET_MAX_TRANSPORTS + 2];
    int nfds = 0, shm_too = 0;
    uint64_t drain;

    for (int t = 0; t < net->ntps; t++) {
        if (net->tps[t].fd >= 0) {
            fds[nfds++] = (struct pollfd){.fd = net->tps[t].fd, .events = POLLIN};
        }
        shm_too |= (net->tps[t].db != NULL);
    }
    int wake_idx = nfds, watch_idx = -1;
    fds[nfds++] = (struct pollfd){.fd = net->wake_fd, .events = POLLIN};
    if (net->watch_fd >= 0) {
        watch_idx = nfds;
        fds[nfds++] = (struct pollfd){.fd = net->watch_fd, .events = POLLIN};
    }
    int ms = (shm_too || net->poller) ? NET_MIXED_SLICE_MS : (int)DC_MAX(1, timeout_ns / 1000000ull);
    if (poll(fds, (nfds_t)nfds, ms) <= 0) {
        return;
    }
    if (fds[wake_idx].revents != 0 && read(net->wake_fd, &drain, sizeof(drain)) < 0) {
        /* already drained */
    }
    if (owned && watch_idx >= 0 && fds[watch_idx].revents != 0) {
        net->last_check_ns = 0; /* check the watch at once */
    }
}

/* Sleeps at most timeout_ns, unless progress shows up on the re-check. */
static void net_sleep(dc_net_t *net, uint64_t timeout_ns)
{
    if (net->poll_mode) {
        net_poll_sleep(net, timeout_ns, 1);
        return;
    }
    uint32_t seq = atomic_load(&net->db->seq);
    atomic_fetch_add(&net->db->sleepers, 1);
    if (dc_net_progress(net) == 0) {
        /* Nothing rings for a poller's traffic: nap briefly instead. */
        dc_futex_wait(&net->db->seq, seq,
                      net->poller ? DC_MIN(timeout_ns, NET_POLLER_NAP_NS) : timeout_ns);
    }
    atomic_fetch_sub(&net->db->sleepers, 1);
}

uint32_t dc_net_wake_seq(dc_net_t *net)
{
    return atomic_load(&net->db->seq);
}

void dc_net_sleep_unowned(dc_net_t *net, uint32_t seq, uint64_t timeout_ns)
{
    if (net->poll_mode) {
        net_poll_sleep(net, timeout_ns, 0);
        return;
    }
    dc_futex_wait(&net->db->seq, seq,
                  net->poller ? DC_MIN(timeout_ns, NET_POLLER_NAP_NS) : timeout_ns);
}

void dc_net_sleepers_add(dc_net_t *net, int delta)
{
    atomic_fetch_add(&net->db->sleepers, (uint32_t)delta);
}

void dc_net_sleep_until(dc_net_t *net, uint64_t deadline_ns)
{
    uint64_t now = dc_now_ns();

    if (deadline_ns <= now) {
        return;
    }
    uint32_t seq = atomic_load(&net->db->seq);
    atomic_fetch_add(&net->db->sleepers, 1);
    dc_futex_wait(&net->db->seq, seq, deadline_ns - now);
    atomic_fetch_sub(&net->db->sleepers, 1);
}

static dc_status_t net_timeout_error(dc_net_t *net, dc_request_t *const *reqs, int nreqs)
{
    for (int i = 0; i < nreqs; i++) {
        if (reqs[i]->status == DCOMM_INPROGRESS) {
            dc_error_set_quiet_peer(reqs[i]->ep->peer);
            return dc_error_set(DCOMM_ERR_TIMEOUT,
                                "rank %d: no progress for %d ms waiting on rank %d (%s, tag "
                                "0x%llx); see DCOMM_TIMEOUT",
                                net->rank, net->timeout_ms, reqs[i]->ep->peer,
                                dc_net_transport_name(net, reqs[i]->ep->peer),
                                (unsigned long long)reqs[i]->tag);
        }
    }
    return DCOMM_ERR_TIMEOUT;
}

static dc_status_t short_receive_error(const dc_net_t *net, const dc_request_t *req)
{
    return dc_error_set(DCOMM_ERR_INTERNAL, "rank %d: rank %d sent %zu bytes with tag 0x%llx "
                        "where %zu were expected (the ranks disagree on the schedule)",
                        net->rank, req->ep != NULL ? req->ep->peer : -1, req->len,
                        (unsigned long long)req->tag, req->expect);
}

/* After a wait that spun, and slept from slept_at (0: never): see dc_spin_next. */
static void net_spin_adapt(dc_net_t *net, uint64_t slept_at)
{
    net->spin_limit = dc_spin_next(net->spin_limit, net->spin_min, net->spin_max,
                                   slept_at == 0 || dc_now_ns() - slept_at < DC_SPIN_LATE_NS);
}

dc_status_t dc_net_wait(dc_net_t *net, dc_request_t *const *reqs, int nreqs,
                        dc_net_stop_fn_t stop, void *stop_arg)
{
    uint64_t last_progress = dc_now_ns(), slept_at = 0;
    int idle = 0, first = 0;
    dc_status_t status;

    for (;;) {
        int events = dc_net_progress(net);

        /* Requests complete in order per endpoint, not across them. */
        while (first < nreqs && reqs[first]->status != DCOMM_INPROGRESS) {
            if (reqs[first]->status < 0) {
                return reqs[first]->status;
            }
            if (reqs[first]->expect != SIZE_MAX && reqs[first]->len != reqs[first]->expect) {
                return short_receive_error(net, reqs[first]);
            }
            first++;
        }
        if (first == nreqs) {
            if (stop == NULL && (idle > 0 || slept_at != 0)) {
                net_spin_adapt(net, slept_at);
            }
            return DCOMM_OK;
        }
        for (int i = first + 1; i < nreqs; i++) {
            if (reqs[i]->status < 0) {
                return reqs[i]->status;
            }
        }
        if (stop != NULL && stop(stop_arg)) {
            return DCOMM_INPROGRESS;
        }
        uint64_t now = dc_now_ns();
        if (events > 0) {
            idle = 0;
            last_progress = now;
            continue;
        }
        if (now - net->last_check_ns >= NET_SLICE_NS) {
            status = net_check(net);
            if (status < 0) {
                return status;
            }
        }
        if (net->timeout_ms > 0 && now - last_progress > (uint64_t)net->timeout_ms * 1000000ull &&
            stop == NULL) {
            return net_timeout_error(net, reqs, nreqs);
        }
        /* A wait with a stop function is an idle period: sleep almost at
         * once instead of spinning a core away. */
        if (++idle < (stop != NULL ? 64 : net->spin_limit)) {
            if ((idle & 63) == 0) {
                sched_yield();
            }
            continue;
        }
        if (slept_at == 0) {
            slept_at = now;
        }
        net_sleep(net, NET_SLICE_NS);
    }
}
