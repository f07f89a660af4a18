/* The rendezvous server: a key-value store with blocking gets and atomic adds,
 * served over authenticated TCP from the caller's single-threaded event loop
 * (dlaunch). Non-blocking sockets, per-connection buffers; a connection that
 * sends garbage, fails the handshake or is too slow to finish it is logged and
 * dropped without disturbing the others. This file: listening, handshakes,
 * reading and dispatching requests, and the public calls; the store is in
 * rdv_server_store.c, connection output in rdv_server_conn.c. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "rdv_server_int.h"
#include "dc_time.h"

#define AUTH_TIMEOUT_MS   5000
#define MAX_CONNS         4096 /* authenticated connections */
/* Connections still in their handshake have their own budget, so strangers holding
 * idle sockets cannot crowd out ranks; when it is full the oldest is dropped. */
#define MAX_UNAUTH_CONNS  1024
#define MAX_STORE_BYTES   (256u << 20)
#define INBUF_INITIAL     4096

static void mark_seen(dc_rdv_server_t *s, int32_t rank)
{
    if (rank < 0 || rank >= (1 << 20)) {
        return;
    }
    if (rank >= s->seen_cap) {
        int cap = DC_MAX(rank + 1, 2 * s->seen_cap);
        uint8_t *seen = realloc(s->seen, (size_t)cap);

        if (seen == NULL) {
            return;
        }
        memset(seen + s->seen_cap, 0, (size_t)(cap - s->seen_cap));
        s->seen = seen;
        s->seen_cap = cap;
    }
    s->seen[rank] = 1;
}

static void handle_auth(dc_rdv_server_t *s, conn_t *c, const dc_rdv_msg_t *m)
{
    uint8_t expect[DC_AUTH_MAC_LEN];
    dc_rdv_msg_t ok = {.type = DC_RDV_MSG_AUTH_OK};

    if (m->type != DC_RDV_MSG_AUTH) {
        dc_rdv_conn_kill(s, c, "expected an authentication message");
        return;
    }
    dc_rdv_client_mac(s->secret, c->nonce, m->nonce, m->rank, m->role, expect);
    if (!dc_rdv_mac_equal(expect, m->mac)) {
        dc_rdv_conn_kill(s, c, "authentication failed (wrong job secret)");
        return;
    }
    if (s->nconns >= MAX_CONNS) {
        dc_rdv_conn_kill(s, c, "too many authenticated connections");
        return;
    }
    dc_rdv_server_mac(s->secret, m->nonce, c->nonce, ok.mac);
    s->nunauth--;
    s->nconns++;
    c->state = (m->role == DC_RDV_ROLE_EVENTS) ? CONN_EVENTS : CONN_STORE;
    c->rank = m->rank;
    mark_seen(s, m->rank);
    DC_DEBUG("rdv server: rank %d authenticated from %s (%s)", (int)m->rank, c->peer,
             c->state == CONN_EVENTS ? "events" : "store");
    dc_rdv_conn_send(s, c, &ok);
    if (c->state == CONN_EVENTS && s->failed[0] != '\0') {
        /* Connected after the job failed: it still learns why. */
        dc_rdv_msg_t ev = {.type = DC_RDV_MSG_EVENT, .val = s->failed,
                           .val_len = DC_MIN(strlen(s->failed), (size_t)DC_RDV_MAX_EVENT)};

        dc_rdv_conn_send(s, c, &ev);
    }
}

static void conn_handle(dc_rdv_server_t *s, conn_t *c, const dc_rdv_msg_t *m)
{
    switch (c->state) {
    case CONN_AUTH_WAIT:
        handle_auth(s, c, m);
        break;
    case CONN_STORE:
        dc_rdv_store_handle(s, c, m);
        break;
    case CONN_EVENTS:
        dc_rdv_conn_kill(s, c, "unexpected message on an event connection");
        break;
    case CONN_DEAD:
        break;
    }
}

/* ---- Connection life cycle ----------------------------------------------------- */

static void conn_parse(dc_rdv_server_t *s, conn_t *c)
{
    size_t off = 0;

    while (c->state != CONN_DEAD) {
        size_t max = (c->state == CONN_AUTH_WAIT) ? DC_RDV_MAX_AUTH_FRAME : DC_RDV_MAX_FRAME;
        dc_rdv_msg_t msg;
        size_t used;
        dc_status_t status = dc_rdv_msg_decode(c->in + off, c->in_len - off, max, &msg, &used);

        if (status == DCOMM_INPROGRESS) {
            break;
        }
        if (status != DCOMM_OK) {
            dc_rdv_conn_kill(s, c, dc_error_get());
            return;
        }
        conn_handle(s, c, &msg);
        off += used;
    }
    if (c->state != CONN_DEAD && off > 0) {
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
    }
}

static void conn_read(dc_rdv_server_t *s, conn_t *c)
{
    const size_t limit = DC_RDV_HDR_LEN + DC_RDV_MAX_FRAME;

    while (c->state != CONN_DEAD) {
        ssize_t n;

        if (c->in_len == c->in_cap) {
            size_t cap = DC_MIN(DC_MAX(c->in_cap * 2, (size_t)INBUF_INITIAL), limit);
            uint8_t *in;

            if (cap <= c->in_cap) { /* a full frame always fits: cannot happen */
                dc_rdv_conn_kill(s, c, "input buffer overflow");
                return;
            }
            in = realloc(c->in, cap);
            if (in == NULL) {
                dc_rdv_conn_kill(s, c, "out of memory");
                return;
            }
            c->in = in;
            c->in_cap = cap;
        }
        n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        }
        if (n <= 0) {
            dc_rdv_conn_kill(s, c,
                             c->state == CONN_AUTH_WAIT ? "closed during the handshake"
                                                        : NULL);
            if (n < 0) {
                DC_DEBUG("rdv server: recv: %s", strerror(errno));
            }
            return;
        }
        c->in_len += (size_t)n;
        conn_parse(s, c);
    }
}

/* The connection that has waited longest in its handshake (connections are
 * prepended, so the last one in the list), or NULL. */
static conn_t *oldest_unauth(dc_rdv_server_t *s)
{
    conn_t *oldest = NULL;

    for (conn_t *c = s->conns; c != NULL; c = c->next) {
        if (c->state == CONN_AUTH_WAIT) {
            oldest = c;
        }
    }
    return oldest;
}

dc_status_t dc_rdv_server_add_conn(dc_rdv_server_t *s, int fd, const char *peer)
{
    dc_rdv_msg_t hello = {.type = DC_RDV_MSG_HELLO, .version = DC_RDV_VERSION};
    struct epoll_event ev;
    conn_t *c;
    int one = 1;

    if (s->nunauth >= MAX_UNAUTH_CONNS && (c = oldest_unauth(s)) != NULL) {
        dc_rdv_conn_kill(s, c, "too many connections in their handshake; dropping the oldest");
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        DC_WARN("rdv server: refusing a connection: out of memory");
        close(fd);
        return DCOMM_ERR_NO_MEMORY;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->fd = fd;
    c->state = CONN_AUTH_WAIT;
    c->rank = -1;
    c->deadline_ns = dc_now_ns() + AUTH_TIMEOUT_MS * 1000000ull;
    snprintf(c->peer, sizeof(c->peer), "%s", peer);
    ev.events = EPOLLIN;
    ev.data.ptr = c;
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        DC_WARN("rdv server: epoll_ctl: %s", strerror(errno));
        close(fd);
        free(c);
        return DCOMM_ERR_INTERNAL;
    }
    c->next = s->conns;
    s->conns = c;
    s->nunauth++;
    dc_auth_random(c->nonce, sizeof(c->nonce));
    memcpy(hello.nonce, c->nonce, sizeof(c->nonce));
    dc_rdv_conn_send(s, c, &hello);
    return DCOMM_OK;
}

static void server_accept(dc_rdv_server_t *s)
{
    for (;;) {
        struct sockaddr_in addr;
        socklen_t alen = sizeof(addr);
        int fd = accept4(s->listen_fd, (struct sockaddr *)&addr, &alen,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        char peer[64];
        conn_t *c;

        if (fd < 0) {
            /* Out of descriptors: a stranger's idle handshake gives way to the new one. */
            if ((errno == EMFILE || errno == ENFILE) && (c = oldest_unauth(s)) != NULL) {
                dc_rdv_conn_kill(s, c, "descriptor limit reached; making room for a newer "
                                       "connection");
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                DC_WARN("rdv server: accept: %s", strerror(errno));
            }
            return;
        }
        snprintf(peer, sizeof(peer), "%s:%d", inet_ntoa(addr.sin_addr),
                 (int)ntohs(addr.sin_port));
        (void)dc_rdv_server_add_conn(s, fd, peer);
    }
}

static void reap_dead(dc_rdv_server_t *s)
{
    conn_t **cp = &s->conns;

    while (*cp != NULL) {
        conn_t *c = *cp;

        if (c->state == CONN_DEAD) {
            *cp = c->next;
            free(c->in);
            free(c->out);
            free(c);
        } else {
            cp = &c->next;
        }
    }
}

/* ---- Public ---------------------------------------------------------------------- */

int dc_rdv_server_progress(dc_rdv_server_t *s)
{
    struct epoll_event evs[64];
    uint64_t now;
    int n, handled = 0;

    do {
        n = epoll_wait(s->epfd, evs, (int)DC_ARRAY_SIZE(evs), 0);
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;

            if (c == NULL) {
                server_accept(s);
            } else if (c->state != CONN_DEAD) {
                if (evs[i].events & EPOLLOUT) {
                    dc_rdv_conn_flush(s, c);
                }
                if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                    conn_read(s, c);
                }
            }
        }
        handled += DC_MAX(n, 0);
    } while (n == (int)DC_ARRAY_SIZE(evs));
    now = dc_now_ns();
    for (conn_t *c = s->conns; c != NULL; c = c->next) {
        if (c->state == CONN_AUTH_WAIT && now >= c->deadline_ns) {
            dc_rdv_conn_kill(s, c, "handshake not completed in time");
            handled++;
        }
    }
    reap_dead(s);
    return handled;
}

int dc_rdv_server_timeout_ms(const dc_rdv_server_t *s)
{
    uint64_t now = dc_now_ns(), next = UINT64_MAX;

    for (const conn_t *c = s->conns; c != NULL; c = c->next) {
        if (c->state == CONN_AUTH_WAIT) {
            next = DC_MIN(next, c->deadline_ns);
        }
    }
    if (next == UINT64_MAX) {
        return -1;
    }
    return next <= now ? 0 : (int)((next - now + 999999) / 1000000);
}

void dc_rdv_server_broadcast(dc_rdv_server_t *s, const char *text)
{
    dc_rdv_msg_t ev = {.type = DC_RDV_MSG_EVENT, .val = text,
                       .val_len = DC_MIN(strlen(text), (size_t)DC_RDV_MAX_EVENT)};

    for (conn_t *c = s->conns; c != NULL; c = c->next) {
        if (c->state == CONN_EVENTS) {
            dc_rdv_conn_send(s, c, &ev);
        }
    }
}

void dc_rdv_server_fail(dc_rdv_server_t *s, const char *text)
{
    waiter_t *ready = s->waiters;

    dc_rdv_server_broadcast(s, text);
    if (s->failed[0] == '\0') {
        snprintf(s->failed, sizeof(s->failed), "%s", text[0] != '\0' ? text : "job failed");
    }
    /* Unlinked first, as in wake_waiters: a reply can kill its connection. */
    s->waiters = NULL;
    for (waiter_t *w = ready; w != NULL; w = w->next) {
        w->conn->nwaiters--;
    }
    while (ready != NULL) {
        waiter_t *w = ready;

        ready = w->next;
        dc_rdv_conn_reply(s, w->conn, w->id, DCOMM_ERR_PEER_LOST, 0, s->failed, strlen(s->failed));
        free(w);
    }
}

int dc_rdv_server_ranks_seen(const dc_rdv_server_t *s, int nranks)
{
    int count = 0;

    for (int r = 0; r < DC_MIN(nranks, s->seen_cap); r++) {
        count += s->seen[r];
    }
    return count;
}

void dc_rdv_server_set_store_limit(dc_rdv_server_t *s, size_t bytes)
{
    s->store_limit = bytes;
}

int dc_rdv_server_port(const dc_rdv_server_t *s)
{
    return s->port;
}

int dc_rdv_server_fd(const dc_rdv_server_t *s)
{
    return s->epfd;
}

/* Up to MAX_CONNS ranks plus MAX_UNAUTH_CONNS strangers: the default soft limit
 * of 1024 descriptors would be spent by strangers. The hard limit is ours to use. */
static void raise_fd_limit(void)
{
    const rlim_t want = MAX_CONNS + MAX_UNAUTH_CONNS + 256;
    struct rlimit lim;

    if (getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur >= want) {
        return;
    }
    lim.rlim_cur = (lim.rlim_max == RLIM_INFINITY || lim.rlim_max > want) ? want : lim.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &lim) == 0) {
        DC_DEBUG("rdv server: descriptor limit raised to %llu", (unsigned long long)lim.rlim_cur);
    }
}

dc_status_t dc_rdv_server_create(const char *bind_addr, int port,
                                 const uint8_t secret[DC_AUTH_SECRET_LEN],
                                 dc_rdv_server_t **server_p)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    socklen_t alen = sizeof(addr);
    dc_rdv_server_t *s;
    dc_status_t status;
    int one = 1;

    if (bind_addr == NULL || port < 0 || port > 65535 ||
        inet_pton(AF_INET, bind_addr, &addr.sin_addr) != 1) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "rdv server: bad bind address '%s:%d'",
                            bind_addr ? bind_addr : "(null)", port);
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "rdv server: out of memory");
    }
    raise_fd_limit();
    memcpy(s->secret, secret, DC_AUTH_SECRET_LEN);
    s->store_limit = MAX_STORE_BYTES;
    s->epfd = -1;
    s->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->listen_fd < 0) {
        status = dc_error_set(DCOMM_ERR_TRANSPORT, "rdv server: socket: %s", strerror(errno));
        goto err_free;
    }
    setsockopt(s->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(s->listen_fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
        listen(s->listen_fd, 1024) != 0 ||
        getsockname(s->listen_fd, (struct sockaddr *)&addr, &alen) != 0) {
        status = dc_error_set(DCOMM_ERR_TRANSPORT, "rdv server: cannot listen on %s:%d: %s",
                              bind_addr, port, strerror(errno));
        goto err_close;
    }
    s->port = ntohs(addr.sin_port);
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (s->epfd < 0 || epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->listen_fd, &ev) != 0) {
        status = dc_error_set(DCOMM_ERR_INTERNAL, "rdv server: epoll: %s", strerror(errno));
        goto err_close;
    }
    *server_p = s;
    return DCOMM_OK;

err_close:
    if (s->epfd >= 0) {
        close(s->epfd);
    }
    close(s->listen_fd);
err_free:
    free(s);
    return status;
}

void dc_rdv_server_destroy(dc_rdv_server_t *s)
{
    if (s == NULL) {
        return;
    }
    if (s->drops_quiet > 0) {
        DC_WARN("rdv server: %d more unauthenticated connections dropped", s->drops_quiet);
    }
    for (conn_t *c = s->conns; c != NULL; c = c->next) {
        if (c->state != CONN_DEAD) {
            c->state = CONN_STORE; /* closing at shutdown is not worth a warning */
            dc_rdv_conn_kill(s, c, NULL);
        }
    }
    reap_dead(s);
    for (int b = 0; b < NBUCKETS; b++) {
        while (s->buckets[b] != NULL) {
            entry_t *e = s->buckets[b];

            s->buckets[b] = e->next;
            free(e->key);
            free(e->val);
            free(e);
        }
    }
    close(s->epfd);
    close(s->listen_fd);
    free(s->seen);
    free(s);
}
