/*
 * The shm transport: peers on one host exchange messages through SPSC byte rings
 * in shared memory (layout in shm.h), streaming messages larger than a ring, and
 * wake each other through the receiver's doorbell futex. This file creates our
 * segment, maps the peers' ones, and opens, connects and closes the transport;
 * the data path is in shm_data.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "shm_int.h"
#include "shm_ptracer.h"
#include "dc_time.h"

/* The requested ring size (DCOMM_SHM_RING_SIZE, in bytes; 0: automatic),
 * rounded up to a power of two; by default 4 MiB, less when many peers would
 * make the segment too large. */
static dc_status_t ring_size_get(int nrings, uint64_t requested, uint64_t *size_p)
{
    uint64_t size = DC_SHM_RING_DEFAULT;

    if (requested != 0) {
        if (requested < DC_SHM_RING_MIN || requested > DC_SHM_RING_MAX) {
            return dc_error_set(DCOMM_ERR_INVALID_ARG,
                                "shm: DCOMM_SHM_RING_SIZE=%llu is not a size between %u and %u "
                                "bytes",
                                (unsigned long long)requested, DC_SHM_RING_MIN, DC_SHM_RING_MAX);
        }
        size = requested;
    } else {
        while (nrings > 0 && size > 256u * 1024u && size * (uint64_t)nrings > DC_SHM_SEG_BUDGET) {
            size /= 2;
        }
    }
    uint64_t pow2 = DC_SHM_RING_MIN;
    while (pow2 < size) {
        pow2 *= 2;
    }
    *size_p = pow2;
    return DCOMM_OK;
}

static size_t seg_data_offset(int nrings)
{
    size_t hdr = sizeof(dc_shm_seg_t) + (size_t)nrings * sizeof(dc_shm_ring_t);

    return (hdr + 4095) & ~(size_t)4095;
}

/* Closes the memfd our peers open (once they all have, or on failure), and with
 * it the ptrace window opened in seg_create. */
static void memfd_close(dc_transport_t *tp)
{
    if (tp->memfd >= 0) {
        close(tp->memfd);
        tp->memfd = -1;
        dc_shm_ptracer_close();
    }
}

static dc_status_t seg_create(dc_transport_t *tp, const int *peers, int npeers,
                              uint64_t ring_request)
{
    uint64_t ring_size = 0;
    dc_status_t status = ring_size_get(npeers, ring_request, &ring_size);

    if (status < 0) {
        return status;
    }
    size_t size = seg_data_offset(npeers) + (size_t)npeers * ring_size;

    tp->memfd = memfd_create("dcomm-shm", MFD_CLOEXEC);
    if (tp->memfd < 0) {
        return dc_error_set(DCOMM_ERR_TRANSPORT, "shm: memfd_create failed: %s", strerror(errno));
    }
    /* Peers open our memfd through /proc/<pid>/fd: allow them while it is open
     * (shm_ptracer.h); memfd_close ends the window. */
    dc_shm_ptracer_open();
    if (ftruncate(tp->memfd, (off_t)size) != 0) {
        status = dc_error_set(DCOMM_ERR_NO_MEMORY, "shm: cannot size segment to %zu bytes: %s",
                              size, strerror(errno));
        goto err_close;
    }
    void *addr = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, tp->memfd, 0);
    if (addr == MAP_FAILED) {
        status = dc_error_set(DCOMM_ERR_NO_MEMORY, "shm: cannot map %zu bytes: %s", size,
                              strerror(errno));
        goto err_close;
    }
    tp->seg = addr;
    tp->seg_size = size;
    tp->seg->magic = DC_SHM_MAGIC;
    tp->seg->version = DC_SHM_VERSION;
    tp->seg->rank = tp->rank;
    tp->seg->pid = (int32_t)getpid();
    tp->seg->nrings = (uint32_t)npeers;
    tp->seg->ring_size = ring_size;
    tp->seg->size = size;
    for (int i = 0; i < npeers; i++) {
        tp->seg->rings[i].sender = peers[i];
        tp->seg->rings[i].data_offset = seg_data_offset(npeers) + (size_t)i * ring_size;
    }
    return DCOMM_OK;

err_close:
    memfd_close(tp);
    return status;
}

/* The peer's header against the size we mapped: nrings, ring_size and the
 * ring's data_offset come from another process and are bounded before use. */
static dc_status_t seg_check(const dc_shm_seg_t *seg, size_t size, int peer)
{
    size_t max_rings = (size - DC_MIN(size, sizeof(*seg))) / sizeof(dc_shm_ring_t);

    if (size < sizeof(*seg) || seg->nrings == 0 || seg->nrings > max_rings ||
        seg_data_offset((int)DC_MIN(seg->nrings, (uint32_t)INT32_MAX)) > size) {
        return dc_error_set(DCOMM_ERR_TRANSPORT, "shm: rank %d's segment header claims %u rings, "
                            "more than its %zu bytes hold", peer, seg->nrings, size);
    }
    if (seg->ring_size < DC_SHM_RING_MIN || seg->ring_size > DC_SHM_RING_MAX ||
        (seg->ring_size & (seg->ring_size - 1)) != 0) {
        return dc_error_set(DCOMM_ERR_TRANSPORT, "shm: rank %d's segment header has ring size "
                            "%llu (a power of two in [%u, %u] expected)", peer,
                            (unsigned long long)seg->ring_size, DC_SHM_RING_MIN, DC_SHM_RING_MAX);
    }
    return DCOMM_OK;
}

static dc_status_t ring_check(const dc_shm_seg_t *seg, const dc_shm_ring_t *ring, size_t size,
                              int peer)
{
    uint64_t off = ring->data_offset;

    if (off < seg_data_offset((int)seg->nrings) || off > size || seg->ring_size > size - off) {
        return dc_error_set(DCOMM_ERR_TRANSPORT, "shm: rank %d's ring for us lies outside its "
                            "segment (data offset %llu, ring %llu bytes, segment %zu bytes)",
                            peer, (unsigned long long)off, (unsigned long long)seg->ring_size,
                            size);
    }
    return DCOMM_OK;
}

int dc_shm_seg_find_ring(const dc_shm_seg_t *seg, size_t size, int peer, int32_t pid, int me,
                         const char *path)
{
    dc_status_t status;

    if (seg->magic != DC_SHM_MAGIC || seg->version != DC_SHM_VERSION || seg->rank != peer ||
        seg->pid != pid || seg->size != size) {
        return dc_error_set(DCOMM_ERR_TRANSPORT,
                            "shm: %s is not rank %d's segment (stale address or version "
                            "mismatch)",
                            path, peer);
    }
    status = seg_check(seg, size, peer);
    if (status < 0) {
        return status;
    }
    for (uint32_t i = 0; i < seg->nrings; i++) {
        if (seg->rings[i].sender == me) {
            status = ring_check(seg, &seg->rings[i], size, peer);
            return status < 0 ? status : (int)i;
        }
    }
    return dc_error_set(DCOMM_ERR_MISMATCH, "shm: rank %d does not list rank %d as a peer", peer,
                        me);
}

/* Maps a peer's segment and finds the ring it keeps for us. */
static dc_status_t ep_map_peer(dc_transport_t *tp, shm_ep_t *ep, const dc_shm_addr_t *addr)
{
    int peer = ep->super.peer;
    char path[64];
    struct stat st;
    dc_status_t status;

    snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)addr->pid, (int)addr->fd);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        return dc_error_set(DCOMM_ERR_TRANSPORT, "shm: cannot open rank %d's segment %s: %s%s",
                            peer, path, strerror(errno),
                            errno == EACCES || errno == EPERM
                                ? " (ptrace permission denied, e.g. kernel.yama.ptrace_scope"
                                  " >= 2; set DCOMM_TRANSPORTS=^shm)"
                                : "");
    }
    if (fstat(fd, &st) != 0 || (uint64_t)st.st_size != addr->size ||
        addr->size < sizeof(dc_shm_seg_t) || addr->size > SIZE_MAX / 2) {
        status = dc_error_set(DCOMM_ERR_TRANSPORT, "shm: rank %d's segment %s has the wrong size",
                              peer, path);
        goto out;
    }
    void *map = mmap(NULL, addr->size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (map == MAP_FAILED) {
        status = dc_error_set(DCOMM_ERR_NO_MEMORY, "shm: cannot map rank %d's segment: %s", peer,
                              strerror(errno));
        goto out;
    }
    ep->seg = map;
    ep->seg_size = addr->size;
    int ring = dc_shm_seg_find_ring(ep->seg, ep->seg_size, peer, addr->pid, tp->rank, path);
    if (ring < 0) {
        status = ring;
        goto out;
    }
    ep->tx = &ep->seg->rings[ring];
    ep->tx_data = (uint8_t *)ep->seg + ep->tx->data_offset;
    ep->tx_mask = ep->seg->ring_size - 1;
    ep->tx_head = atomic_load_explicit(&ep->tx->head, memory_order_relaxed);
    status = DCOMM_OK;
out:
    close(fd);
    return status;
}

static dc_status_t ep_open(dc_transport_t *tp, const dc_bootstrap_t *boot, int idx,
                           uint64_t deadline)
{
    shm_ep_t *ep = &tp->eps[idx];
    int peer = boot->peers[idx];
    dc_shm_addr_t addr;
    char key[64];
    size_t len;
    dc_status_t status;

    ep->super.ops = &dc_transport_shm_ops;
    ep->super.tp = tp;
    ep->super.peer = peer;
    ep->pidfd = -1;
    ep->rx = &tp->seg->rings[idx];
    ep->rx_data = (uint8_t *)tp->seg + ep->rx->data_offset;
    ep->rx_mask = tp->seg->ring_size - 1;
    if (peer == tp->rank) {
        ep->seg = tp->seg;
        ep->pid = getpid();
        ep->tx = ep->rx;
        ep->tx_data = ep->rx_data;
        ep->tx_mask = ep->rx_mask;
        return DCOMM_OK;
    }
    snprintf(key, sizeof(key), "shm/%d", peer);
    int left_ms = (int)((deadline - DC_MIN(deadline, dc_now_ns())) / 1000000ull);
    status = dc_store_get(boot->store, key, &addr, sizeof(addr), &len,
                          boot->timeout_ms <= 0 ? 0 : DC_MAX(left_ms, 1));
    if (status < 0) {
        return status;
    }
    if (len != sizeof(addr) || addr.magic != DC_SHM_MAGIC) {
        return dc_error_set(DCOMM_ERR_TRANSPORT, "shm: bad address record for rank %d", peer);
    }
    ep->pid = addr.pid;
    status = ep_map_peer(tp, ep, &addr);
    if (status < 0) {
        return status;
    }
#ifdef SYS_pidfd_open
    ep->pidfd = (int)syscall(SYS_pidfd_open, ep->pid, 0);
#endif
    return DCOMM_OK;
}

static dc_status_t check_peers(const dc_bootstrap_t *boot)
{
    const dc_topo_t *topo = boot->topo;

    for (int i = 0; i < boot->npeers; i++) {
        int p = boot->peers[i];

        if (p < 0 || p >= topo->size) {
            return dc_error_set(DCOMM_ERR_INVALID_ARG, "shm: peer rank %d out of range [0, %d)",
                                p, topo->size);
        }
        if (topo->host_of != NULL && topo->host_of[p] != topo->host_of[topo->rank]) {
            return dc_error_set(DCOMM_ERR_INVALID_ARG, "shm: rank %d is not on rank %d's host", p,
                                topo->rank);
        }
        for (int j = 0; j < i; j++) {
            if (boot->peers[j] == p) {
                return dc_error_set(DCOMM_ERR_INVALID_ARG, "shm: rank %d listed twice", p);
            }
        }
    }
    return DCOMM_OK;
}

/* A barrier name that only this set of ranks shares: FNV-1a over the sorted set. */
static void barrier_name(const dc_bootstrap_t *boot, char *name, size_t cap)
{
    uint64_t hash = 1469598103934665603ull;
    int n = 0, prev = -1;

    for (;;) { /* ascending walk over peers plus self without sorting a copy */
        int next = -1;
        if (boot->topo->rank > prev) {
            next = boot->topo->rank;
        }
        for (int i = 0; i < boot->npeers; i++) {
            if (boot->peers[i] > prev && (next < 0 || boot->peers[i] < next)) {
                next = boot->peers[i];
            }
        }
        if (next < 0) {
            break;
        }
        for (int b = 0; b < 4; b++) {
            hash = (hash ^ (uint8_t)((uint32_t)next >> (8 * b))) * 1099511628211ull;
        }
        prev = next;
        n++;
    }
    snprintf(name, cap, "shm/open/%d/%016llx", n, (unsigned long long)hash);
}

static int barrier_size(const dc_bootstrap_t *boot)
{
    int n = 1;

    for (int i = 0; i < boot->npeers; i++) {
        n += (boot->peers[i] != boot->topo->rank);
    }
    return n;
}

static void shm_tp_close(dc_transport_t *tp);

static dc_status_t shm_tp_open(const dc_bootstrap_t *boot, dc_transport_t **tp_p)
{
    dc_status_t status;
    char key[64], name[96];

    if (boot == NULL || boot->topo == NULL || boot->store == NULL ||
        (boot->npeers > 0 && boot->peers == NULL) || boot->npeers < 0) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "shm: incomplete bootstrap");
    }
    status = check_peers(boot);
    if (status < 0) {
        return status;
    }
    uint64_t deadline = dc_deadline_ms(boot->timeout_ms);
    dc_transport_t *tp = calloc(1, sizeof(*tp));
    if (tp == NULL) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "shm: out of memory");
    }
    tp->rank = boot->topo->rank;
    tp->timeout_ms = boot->timeout_ms;
    tp->memfd = -1;
    tp->eps = calloc((size_t)DC_MAX(boot->npeers, 1), sizeof(*tp->eps));
    if (tp->eps == NULL) {
        status = dc_error_set(DCOMM_ERR_NO_MEMORY, "shm: out of memory");
        goto err;
    }
    DC_CHECK_GOTO(seg_create(tp, boot->peers, boot->npeers, boot->shm_ring_size), status, err);
    dc_shm_addr_t addr = {.magic = DC_SHM_MAGIC, .pid = (int32_t)getpid(), .fd = tp->memfd,
                          .size = tp->seg_size};
    snprintf(key, sizeof(key), "shm/%d", tp->rank);
    DC_CHECK_GOTO(dc_store_set(boot->store, key, &addr, sizeof(addr)), status, err);
    for (int i = 0; i < boot->npeers; i++) {
        tp->npeers = i + 1; /* close() cleans up what is mapped so far */
        DC_CHECK_GOTO(ep_open(tp, boot, i, deadline), status, err);
    }
    if (barrier_size(boot) > 1) {
        /* Nobody may exit (closing its memfd) before every peer has opened it. */
        barrier_name(boot, name, sizeof(name));
        int left_ms = (int)((deadline - DC_MIN(deadline, dc_now_ns())) / 1000000ull);
        DC_CHECK_GOTO(dc_store_barrier(boot->store, name, barrier_size(boot),
                                       boot->timeout_ms <= 0 ? 0 : DC_MAX(left_ms, 1)),
                      status, err);
    }
    memfd_close(tp); /* the mappings keep the memory; nothing to remove at exit */
    DC_DEBUG("shm: rank %d open, %d peers, ring %llu bytes, segment %zu bytes", tp->rank,
             tp->npeers, (unsigned long long)tp->seg->ring_size, tp->seg_size);
    *tp_p = tp;
    return DCOMM_OK;

err:
    shm_tp_close(tp);
    return status;
}

static dc_status_t shm_connect(dc_transport_t *tp, int peer, dc_endpoint_t **ep_p)
{
    for (int i = 0; i < tp->npeers; i++) {
        if (tp->eps[i].super.peer == peer) {
            tp->eps[i].connected = 1;
            *ep_p = &tp->eps[i].super;
            return DCOMM_OK;
        }
    }
    return dc_error_set(DCOMM_ERR_INVALID_ARG, "shm: rank %d is not a shm peer of rank %d", peer,
                        tp->rank);
}

static dc_status_t shm_wait_fd(dc_transport_t *tp, int *fd_p)
{
    (void)tp;
    *fd_p = -1;
    return DCOMM_OK;
}

static dc_doorbell_t *shm_doorbell(dc_transport_t *tp)
{
    return &tp->seg->doorbell;
}

static void shm_tp_close(dc_transport_t *tp)
{
    for (int i = 0; i < tp->npeers; i++) {
        shm_ep_t *ep = &tp->eps[i];

        dc_shm_ep_fail(ep, DCOMM_ERR_SHUT_DOWN);
        ep->closed = 1;
        if (ep->seg != NULL && ep->seg != tp->seg) {
            munmap(ep->seg, ep->seg_size);
        }
        if (ep->pidfd >= 0) {
            close(ep->pidfd);
        }
    }
    if (tp->seg != NULL) {
        atomic_store(&tp->seg->closed, 1);
        munmap(tp->seg, tp->seg_size);
    }
    memfd_close(tp);
    free(tp->eps);
    free(tp);
}

static dc_status_t shm_query(const dc_topo_t *topo, dc_transport_attr_t *attr_p)
{
    (void)topo;
#ifdef __linux__
    /* A spinning hand-off costs 0.3 us but a futex wake 8-10 us when ranks
     * outnumber cores; a message is copied twice (in and out of the ring). */
    *attr_p = (dc_transport_attr_t){.usable = 1, .same_host_only = 1, .priority = 100,
                                    .shared_memory = 1, .latency_us = 2.0, .bandwidth_gbs = 4.0};
#else
    *attr_p = (dc_transport_attr_t){.usable = 0, .same_host_only = 1};
#endif
    return DCOMM_OK;
}

const dc_transport_ops_t dc_transport_shm_ops = {
    .abi_version = DC_TRANSPORT_ABI_VERSION,
    .name = "shm",
    /* setup */
    .query = shm_query,
    .open = shm_tp_open,
    .connect = shm_connect,
    /* data path */
    .isend = dc_shm_isend,
    .irecv = dc_shm_irecv,
    .progress = dc_shm_progress,
    /* sleeping and liveness */
    .wait_fd = shm_wait_fd,
    .doorbell = shm_doorbell,
    .check = dc_shm_check,
    .notify_failure = dc_shm_fail,
    .close = shm_tp_close,
};
