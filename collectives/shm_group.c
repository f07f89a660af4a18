/*
 * The shared segment of a host's ranks for shm-direct collectives (layout and
 * API in shm_group.h): creation over the network, and the publish/wait pair
 * that orders the members' chunks.
 */
#include "shm_group.h"
#include "shm_ptracer.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "dc_time.h"
#include "futex.h"
#include "log.h"

#define GROUP_MAGIC      0x64636f6d6d677270ull /* "dcommgrp" */
#define GROUP_VERSION    3
#define GROUP_SLICE_NS   100000000ull /* sleep slice: liveness checks this often */
#define GROUP_SPIN       16384        /* polls (~0.5 ms) before yielding while ranks <= cores:
                                       * a yield hands the core to any other process */
#define GROUP_SPIN_OVER  16           /* ... when ranks outnumber cores */
#define GROUP_YIELDS     256          /* then yields of the core before sleeping */

/* Start of the segment. */
typedef struct group_hdr {
    uint64_t magic;
    uint32_t version;
    int32_t n;
    uint64_t chunk;
    uint64_t size;
} group_hdr_t;

/* What member 0 sends every other member; magic 0: it could not create one. */
typedef struct group_addr {
    uint64_t magic;
    int32_t pid;
    int32_t fd;
    uint64_t size;
    uint64_t chunk;
    int32_t n;
    int32_t reserved;
} group_addr_t;

/* Messages and requests of the creation handshake, kept together so that they
 * can be leaked when a failed wait leaves requests posted. */
typedef struct group_boot {
    group_addr_t addr;
    int32_t ack;  /* member -> 0: mapped or not */
    int32_t go;   /* 0 -> members: everyone mapped or not */
    int32_t *acks; /* [n] at member 0 */
    dc_request_t *reqs;  /* [n] */
    dc_request_t **preqs;/* [n] */
} group_boot_t;

static size_t ctl_offset(void)
{
    return (sizeof(group_hdr_t) + DC_CACHE_LINE - 1) & ~(size_t)(DC_CACHE_LINE - 1);
}

static size_t data_offset(int n)
{
    return (ctl_offset() + (size_t)n * sizeof(dc_shm_group_ctl_t) + 4095) & ~(size_t)4095;
}

static size_t segment_size(int n, size_t chunk)
{
    return data_offset(n) + (size_t)DC_SHM_GROUP_NBUF * (size_t)(n + 1) * chunk;
}

static void group_layout(dc_shm_group_t *g)
{
    g->ctl = (dc_shm_group_ctl_t *)((uint8_t *)g->base + ctl_offset());
    g->data = (uint8_t *)g->base + data_offset(g->n);
}

/* Cores the members may share: this process's affinity set, unless it is bound
 * to a single core (dlaunch --bind-to core), which says nothing about how many
 * the others have; then the cores online. */
static int cpus_usable(void)
{
    cpu_set_t set;

    if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 1) {
        return CPU_COUNT(&set);
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

/* Closes segment_create's memfd, and the ptrace window that came with it. */
static void fd_close(int fd)
{
    close(fd);
    dc_shm_ptracer_close();
}

/* Member 0: a fresh memfd of the whole segment, mapped and pre-faulted. */
static dc_status_t segment_create(dc_shm_group_t *g, int *fd_p)
{
    dc_status_t status;

    int fd = memfd_create("dcomm-shm-group", MFD_CLOEXEC);
    if (fd < 0) {
        return dc_error_set(DCOMM_ERR_TRANSPORT, "shm group: memfd_create failed: %s",
                            strerror(errno));
    }
    dc_shm_ptracer_open(); /* members open fd through /proc until fd_close */
    if (ftruncate(fd, (off_t)g->size) != 0) {
        status = dc_error_set(DCOMM_ERR_NO_MEMORY, "shm group: cannot size segment to %zu "
                              "bytes: %s", g->size, strerror(errno));
        goto err_close;
    }
    g->base = mmap(NULL, g->size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (g->base == MAP_FAILED) {
        g->base = NULL;
        status = dc_error_set(DCOMM_ERR_NO_MEMORY, "shm group: cannot map %zu bytes: %s",
                              g->size, strerror(errno));
        goto err_close;
    }
    group_hdr_t *hdr = g->base;
    hdr->magic = GROUP_MAGIC;
    hdr->version = GROUP_VERSION;
    hdr->n = g->n;
    hdr->chunk = g->chunk;
    hdr->size = g->size;
    *fd_p = fd;
    return DCOMM_OK;

err_close:
    fd_close(fd);
    return status;
}

/* Other members: map member 0's memfd through /proc. */
static dc_status_t segment_map(dc_shm_group_t *g, const group_addr_t *addr)
{
    int leader = g->world_ranks[0];
    char path[64];
    struct stat st;
    dc_status_t status = DCOMM_OK;

    if (addr->n != g->n || addr->chunk != g->chunk || addr->size != g->size) {
        return dc_error_set(DCOMM_ERR_MISMATCH, "shm group: rank %d made a segment of %d "
                            "members x %llu bytes, rank %d expected %d x %zu", leader,
                            (int)addr->n, (unsigned long long)addr->chunk, g->world_ranks[g->me],
                            g->n, g->chunk);
    }
    snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)addr->pid, (int)addr->fd);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        return dc_error_set(DCOMM_ERR_TRANSPORT, "shm group: cannot open rank %d's segment %s: "
                            "%s", leader, path, strerror(errno));
    }
    if (fstat(fd, &st) != 0 || (uint64_t)st.st_size != addr->size) {
        status = dc_error_set(DCOMM_ERR_TRANSPORT, "shm group: rank %d's segment %s has the "
                              "wrong size", leader, path);
        goto out;
    }
    g->base = mmap(NULL, g->size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (g->base == MAP_FAILED) {
        g->base = NULL;
        status = dc_error_set(DCOMM_ERR_NO_MEMORY, "shm group: cannot map rank %d's segment: "
                              "%s", leader, strerror(errno));
        goto out;
    }
    const group_hdr_t *hdr = g->base;
    if (hdr->magic != GROUP_MAGIC || hdr->version != GROUP_VERSION || hdr->n != g->n ||
        hdr->chunk != g->chunk || hdr->size != g->size) {
        status = dc_error_set(DCOMM_ERR_TRANSPORT, "shm group: %s is not rank %d's group "
                              "segment", path, leader);
    }
out:
    close(fd);
    return status;
}

static dc_status_t boot_wait(dc_net_t *net, group_boot_t *b, int nreqs, int *posted_p)
{
    dc_status_t status = dc_net_wait(net, b->preqs, nreqs, NULL, NULL);

    *posted_p = (status < 0); /* some may still be posted: do not free them */
    return status;
}

/* Member 0's side of the handshake: address out, acks in, verdict out. */
static dc_status_t boot_leader(dc_shm_group_t *g, dc_net_t *net, uint64_t tag, group_boot_t *b,
                               int *posted_p)
{
    int fd = -1, k = 0;
    dc_status_t local = segment_create(g, &fd), status;

    b->addr = (group_addr_t){.magic = local < 0 ? 0 : GROUP_MAGIC, .pid = (int32_t)getpid(),
                             .fd = fd, .size = g->size, .chunk = g->chunk, .n = g->n};
    for (int i = 1; i < g->n; i++) {
        dc_endpoint_t *ep = dc_net_ep(net, g->world_ranks[i]);

        b->preqs[k] = &b->reqs[k];
        DC_CHECK_GOTO(dc_ep_isend(ep, &b->addr, sizeof(b->addr), tag, &b->reqs[k++]), status,
                      out);
        if (local == DCOMM_OK) {
            b->preqs[k] = &b->reqs[k];
            DC_CHECK_GOTO(dc_ep_irecv(ep, &b->acks[i], sizeof(int32_t), tag, &b->reqs[k++]),
                          status, out);
        }
    }
    DC_CHECK_GOTO(boot_wait(net, b, k, posted_p), status, out);
    if (local < 0) {
        status = local;
        goto out;
    }
    b->go = 0;
    for (int i = 1; i < g->n; i++) {
        if (b->acks[i] != 0 && b->go == 0) {
            b->go = -1;
            status = dc_error_set(DCOMM_ERR_TRANSPORT, "shm group: rank %d could not map the "
                                  "segment", g->world_ranks[i]);
        }
    }
    for (int i = 1, k2 = 0; i < g->n; i++, k2++) {
        b->preqs[k2] = &b->reqs[k2];
        DC_CHECK_GOTO(dc_ep_isend(dc_net_ep(net, g->world_ranks[i]), &b->go, sizeof(b->go), tag,
                                  &b->reqs[k2]), status, out);
    }
    DC_CHECK_GOTO(boot_wait(net, b, g->n - 1, posted_p), status, out);
    status = b->go == 0 ? DCOMM_OK : DCOMM_ERR_TRANSPORT;
out:
    if (fd >= 0) {
        fd_close(fd); /* every member has mapped it, or failed; the mappings stay */
    }
    return status;
}

/* Other members: address in, ack out, verdict in. */
static dc_status_t boot_member(dc_shm_group_t *g, dc_net_t *net, uint64_t tag, group_boot_t *b,
                               int *posted_p)
{
    dc_endpoint_t *ep = dc_net_ep(net, g->world_ranks[0]);
    dc_status_t status, local;

    b->preqs[0] = &b->reqs[0];
    DC_CHECK_GOTO(dc_ep_irecv(ep, &b->addr, sizeof(b->addr), tag, &b->reqs[0]), status, out);
    DC_CHECK_GOTO(boot_wait(net, b, 1, posted_p), status, out);
    if (b->reqs[0].len != sizeof(b->addr) || b->addr.magic != GROUP_MAGIC) {
        status = dc_error_set(DCOMM_ERR_TRANSPORT, "shm group: rank %d could not create the "
                              "segment", g->world_ranks[0]);
        goto out;
    }
    local = segment_map(g, &b->addr);
    if (local == DCOMM_OK) {
        group_layout(g);
        g->ctl[g->me].pid = (int32_t)getpid();
    }
    b->ack = local < 0 ? -1 : 0;
    b->preqs[1] = &b->reqs[1];
    DC_CHECK_GOTO(dc_ep_isend(ep, &b->ack, sizeof(b->ack), tag, &b->reqs[1]), status, out);
    b->preqs[0] = &b->reqs[0];
    DC_CHECK_GOTO(dc_ep_irecv(ep, &b->go, sizeof(b->go), tag, &b->reqs[0]), status, out);
    DC_CHECK_GOTO(boot_wait(net, b, 2, posted_p), status, out);
    if (local < 0) {
        status = local;
    } else if (b->go != 0) {
        status = dc_error_set(DCOMM_ERR_TRANSPORT, "shm group: another member could not map "
                              "rank %d's segment", g->world_ranks[0]);
    }
out:
    return status;
}

static dc_status_t group_check_args(dc_net_t *net, const int *world_ranks, int n, int my_index,
                                    size_t chunk_bytes)
{
    if (net == NULL || world_ranks == NULL || n < 1 || n > DC_SHM_GROUP_MAX || my_index < 0 ||
        my_index >= n || chunk_bytes > DC_SHM_GROUP_CHUNK_MAX) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "shm group: bad arguments (n %d, index %d, "
                            "chunk %zu)", n, my_index, chunk_bytes);
    }
    for (int i = 0; i < n; i++) {
        if (dc_net_ep(net, world_ranks[i]) == NULL) {
            return dc_error_set(DCOMM_ERR_INVALID_ARG, "shm group: rank %d is not in the "
                                "network", world_ranks[i]);
        }
    }
    return DCOMM_OK;
}

dc_status_t dc_shm_group_create(dc_net_t *net, const int *world_ranks, int n, int my_index,
                                size_t chunk_bytes, int timeout_ms, uint64_t tag,
                                dc_shm_group_t **group_p)
{
    dc_status_t status = group_check_args(net, world_ranks, n, my_index, chunk_bytes);
    group_boot_t *b = NULL;
    dc_shm_group_t *g;
    int posted = 0;

    if (status < 0) {
        return status;
    }
    g = calloc(1, sizeof(*g));
    if (g == NULL) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "shm group: out of memory");
    }
    g->n = n;
    g->me = my_index;
    g->timeout_ms = timeout_ms;
    g->net = net;
    g->spin_max = n <= cpus_usable() ? GROUP_SPIN : GROUP_SPIN_OVER;
    g->spin_min = DC_MIN(GROUP_SPIN_OVER, g->spin_max);
    g->spin = g->spin_max;
    g->yields = GROUP_YIELDS;
    if (chunk_bytes == 0) {
        chunk_bytes = DC_SHM_GROUP_SEGMENT_DEFAULT / (DC_SHM_GROUP_NBUF * (size_t)(n + 1));
        chunk_bytes = DC_MAX(DC_MIN(chunk_bytes, DC_SHM_GROUP_CHUNK_DEFAULT),
                             DC_SHM_GROUP_CHUNK_FLOOR);
    }
    g->chunk = (DC_MAX(chunk_bytes, DC_SHM_GROUP_CHUNK_MIN) + 4095) & ~(size_t)4095;
    g->size = segment_size(n, g->chunk);
    g->world_ranks = malloc(sizeof(int) * (size_t)n);
    g->pids = calloc((size_t)n, sizeof(int32_t));
    g->seen = calloc((size_t)n * DC_SHM_SEQ_COUNT, sizeof(uint32_t));
    g->pidfds = malloc(sizeof(int) * (size_t)n);
    b = calloc(1, sizeof(*b));
    if (g->world_ranks == NULL || g->pids == NULL || g->seen == NULL || g->pidfds == NULL ||
        b == NULL ||
        (b->acks = calloc((size_t)n, sizeof(int32_t))) == NULL ||
        (b->reqs = calloc((size_t)n * 2, sizeof(dc_request_t))) == NULL ||
        (b->preqs = calloc((size_t)n * 2, sizeof(dc_request_t *))) == NULL) {
        status = dc_error_set(DCOMM_ERR_NO_MEMORY, "shm group: out of memory");
        goto err;
    }
    memcpy(g->world_ranks, world_ranks, sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++) {
        g->pidfds[i] = -1;
    }
    if (n == 1) {
        int fd = -1;

        DC_CHECK_GOTO(segment_create(g, &fd), status, err);
        fd_close(fd); /* nobody else opens it */
    } else if (my_index == 0) {
        DC_CHECK_GOTO(boot_leader(g, net, tag, b, &posted), status, err);
    } else {
        DC_CHECK_GOTO(boot_member(g, net, tag, b, &posted), status, err);
    }
    group_layout(g);
    if (my_index == 0) {
        g->ctl[0].pid = (int32_t)getpid();
    }
    for (int i = 0; i < n; i++) {
        /* member 0 wrote its pid before sending the address, the others before
         * their ack, which precedes the verdict everyone waited for */
        g->pids[i] = i == 0 && my_index == 0 ? (int32_t)getpid() : g->ctl[i].pid;
#ifdef SYS_pidfd_open
        if (i != my_index) {
            g->pidfds[i] = (int)syscall(SYS_pidfd_open, (pid_t)g->pids[i], 0);
        }
#endif
    }
    free(b->acks);
    free(b->reqs);
    free(b->preqs);
    free(b);
    DC_DEBUG("shm group: rank %d is member %d of %d, chunk %zu bytes, segment %zu bytes",
             world_ranks[my_index], my_index, n, g->chunk, g->size);
    *group_p = g;
    return DCOMM_OK;

err:
    if (!posted && b != NULL) { /* else requests may still point into b: leave it */
        free(b->acks);
        free(b->reqs);
        free(b->preqs);
        free(b);
    }
    dc_shm_group_destroy(g);
    return status;
}

void dc_shm_group_destroy(dc_shm_group_t *g)
{
    if (g == NULL) {
        return;
    }
    for (int i = 0; g->pidfds != NULL && i < g->n; i++) {
        if (g->pidfds[i] >= 0) {
            close(g->pidfds[i]);
        }
    }
    if (g->base != NULL) {
        munmap(g->base, g->size);
    }
    free(g->world_ranks);
    free(g->pids);
    free(g->seen);
    free(g->pidfds);
    free(g);
}

void dc_shm_group_fail(dc_shm_group_t *g, const char *why)
{
    dc_shm_group_ctl_t *ctl;

    if (g == NULL || g->ctl == NULL) {
        return;
    }
    ctl = &g->ctl[g->me];
    if (atomic_load(&ctl->failed) != 0) {
        return;
    }
    snprintf(ctl->why, sizeof(ctl->why), "%s", why != NULL ? why : "(no reason)");
    atomic_store_explicit(&ctl->failed, 1, memory_order_release);
    for (int k = 0; k < DC_SHM_SEQ_COUNT; k++) {
        dc_futex_wake(&ctl->seq[k]); /* whoever sleeps on our words */
    }
}

void dc_shm_group_forget_net(dc_shm_group_t *g)
{
    if (g != NULL) {
        g->net = NULL;
    }
}

int dc_shm_group_matches(const dc_shm_group_t *g, const int *world_ranks, int n, int me)
{
    if (g == NULL || g->n != n || g->me != me) {
        return 0;
    }
    for (int i = 0; i < n; i++) {
        if (g->world_ranks[i] != world_ranks[i]) {
            return 0;
        }
    }
    return 1;
}

static int step_reached(uint32_t seq, uint32_t step)
{
    return (int32_t)(seq - step) >= 0;
}

void dc_shm_group_post(dc_shm_group_t *g, dc_shm_group_seq_t which, uint32_t step)
{
    dc_shm_group_ctl_t *ctl = &g->ctl[g->me];

    /* seq_cst store, then seq_cst load of sleepers; a sleeper does the mirror
     * image, so at least one of us sees the other (as in shm.c's rings). */
    atomic_store(&ctl->seq[which], step);
    if (atomic_load(&ctl->sleepers) != 0) {
        dc_futex_wake(&ctl->seq[which]);
    }
}

static int member_gone(const dc_shm_group_t *g, int r)
{
    if (r == g->me) {
        return 0;
    }
    if (g->pidfds[r] >= 0) {
        struct pollfd pfd = {.fd = g->pidfds[r], .events = POLLIN};
        return poll(&pfd, 1, 0) > 0;
    }
    return kill((pid_t)g->pids[r], 0) != 0 && errno == ESRCH;
}

static const char *const seq_what[DC_SHM_SEQ_COUNT] = {"its input", "its reduced slice",
                                                        "the end of its copy-out"};

/* Reads all of member r's seq words (one cache line) into g->seen: 1 when
 * seq[which] has reached step. */
static int seq_poll(dc_shm_group_t *g, int r, dc_shm_group_seq_t which, uint32_t step)
{
    uint32_t *seen = &g->seen[(size_t)r * DC_SHM_SEQ_COUNT];

    for (int k = 0; k < DC_SHM_SEQ_COUNT; k++) {
        seen[k] = atomic_load_explicit(&g->ctl[r].seq[k], memory_order_acquire);
    }
    return step_reached(seen[which], step);
}

/* After a spin that missed member r, which had slept naps times then, and the
 * wait's end: see dc_shm_group_wait. */
static void spin_adapt(dc_shm_group_t *g, int r, uint32_t naps, uint64_t spun)
{
    int slept = atomic_load_explicit(&g->ctl[r].naps, memory_order_relaxed) != naps;

    g->spin = dc_spin_next(g->spin, g->spin_min, g->spin_max,
                           slept || dc_now_ns() - spun < DC_SPIN_LATE_NS);
}

dc_status_t dc_shm_group_wait(dc_shm_group_t *g, int r, dc_shm_group_seq_t which, uint32_t step)
{
    _Atomic uint32_t *word = &g->ctl[r].seq[which];
    uint32_t seq;

    /* an earlier read showed it (with acquire: what it covers is visible) */
    if (step_reached(g->seen[(size_t)r * DC_SHM_SEQ_COUNT + which], step)) {
        return DCOMM_OK;
    }
    /* The spin adapts (dc_spin_next): a peer that comes late because it slept
     * itself counts as on time, since a wake-up is slow and shorter spins
     * would only make both sides sleep more. */
    for (int i = 0; i < g->spin; i++) {
        if (seq_poll(g, r, which, step)) {
            g->spin = dc_spin_next(g->spin, g->spin_min, g->spin_max, 1);
            return DCOMM_OK;
        }
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
    const uint64_t spun = dc_now_ns();
    const uint32_t naps = atomic_load_explicit(&g->ctl[r].naps, memory_order_relaxed);
    /* The peer may be waiting for our core (other work on the machine, or
     * more ranks than cores): hand it the core a few times before paying a
     * futex round trip. */
    for (int i = 0; i < g->yields; i++) {
        sched_yield();
        if (seq_poll(g, r, which, step)) {
            spin_adapt(g, r, naps, spun);
            return DCOMM_OK;
        }
    }
    atomic_fetch_add_explicit(&g->ctl[g->me].naps, 1, memory_order_relaxed);
    uint64_t start = dc_now_ns(), deadline = dc_deadline_ms(g->timeout_ms);
    for (;;) {
        atomic_fetch_add(&g->ctl[r].sleepers, 1);
        seq = atomic_load(word);
        if (!step_reached(seq, step)) {
            uint64_t now = dc_now_ns();
            dc_futex_wait(word, seq, DC_MIN(GROUP_SLICE_NS, deadline - DC_MIN(deadline, now)));
        }
        atomic_fetch_sub(&g->ctl[r].sleepers, 1);
        if (seq_poll(g, r, which, step)) {
            spin_adapt(g, r, naps, spun);
            return DCOMM_OK;
        }
        uint64_t now = dc_now_ns();
        if (atomic_load_explicit(&g->ctl[r].failed, memory_order_acquire) != 0) {
            char why[sizeof(g->ctl[r].why)];

            memcpy(why, g->ctl[r].why, sizeof(why)); /* the peer's text: terminate it */
            why[sizeof(why) - 1] = '\0';
            return dc_error_set(DCOMM_ERR_PEER_LOST, "shmdirect: rank %d failed: %s; rank %d "
                                "was waiting for %s (step %u)", g->world_ranks[r], why,
                                g->world_ranks[g->me], seq_what[which], step);
        }
        if (g->net != NULL) { /* dlaunch's events, the transports' liveness checks */
            dc_status_t status = dc_net_check(g->net);

            if (status < 0) {
                return status;
            }
        }
        if (member_gone(g, r)) {
            return dc_error_set(DCOMM_ERR_PEER_LOST, "shmdirect: rank %d (pid %d) is gone; rank "
                                "%d was waiting for %s (step %u)", g->world_ranks[r],
                                (int)g->pids[r], g->world_ranks[g->me], seq_what[which], step);
        }
        if (now >= deadline) {
            dc_error_set_quiet_peer(g->world_ranks[r]);
            return dc_error_set(DCOMM_ERR_TIMEOUT, "shmdirect: rank %d waited %llu ms for rank "
                                "%d (%s, step %u); see DCOMM_TIMEOUT", g->world_ranks[g->me],
                                (unsigned long long)((now - start) / 1000000ull),
                                g->world_ranks[r], seq_what[which], step);
        }
    }
}
