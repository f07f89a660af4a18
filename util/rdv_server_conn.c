/* Connections of the rendezvous server, on their way out: replies and events
 * queued and written as far as the socket takes (a reader that falls too far
 * behind is dropped), and dropping a connection with its waiters (strangers'
 * drops are logged at a bounded rate). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "rdv_server_int.h"
#include "dc_time.h"

#define MAX_OUT_BYTES     (64u << 20) /* a reader this far behind is dropped */

/* ---- Connection output -------------------------------------------------------- */

static void conn_watch_out(dc_rdv_server_t *s, conn_t *c, int want)
{
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};

    if (c->want_out != want && epoll_ctl(s->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0) {
        c->want_out = want;
    }
}

void dc_rdv_conn_flush(dc_rdv_server_t *s, conn_t *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            conn_watch_out(s, c, 1);
            return;
        }
        if (n <= 0) {
            dc_rdv_conn_kill(s, c, strerror(errno));
            return;
        }
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    conn_watch_out(s, c, 0);
}

void dc_rdv_conn_send(dc_rdv_server_t *s, conn_t *c, const dc_rdv_msg_t *msg)
{
    size_t size = dc_rdv_msg_size(msg);

    if (c->state == CONN_DEAD) {
        return;
    }
    if (size == 0) {
        DC_ERROR("rdv server: cannot encode message type %d", (int)msg->type);
        return;
    }
    if (c->out_len + size > MAX_OUT_BYTES) {
        dc_rdv_conn_kill(s, c, "peer does not read its replies");
        return;
    }
    if (c->out_len + size > c->out_cap) {
        size_t cap = DC_MAX(c->out_cap * 2, c->out_len + size);
        uint8_t *out = realloc(c->out, cap);

        if (out == NULL) {
            dc_rdv_conn_kill(s, c, "out of memory");
            return;
        }
        c->out = out;
        c->out_cap = cap;
    }
    c->out_len += dc_rdv_msg_encode(msg, c->out + c->out_len, c->out_cap - c->out_len);
    dc_rdv_conn_flush(s, c);
}

void dc_rdv_conn_reply(dc_rdv_server_t *s, conn_t *c, uint32_t id, dc_status_t status,
                       int64_t num, const void *val, size_t len)
{
    dc_rdv_msg_t reply = {.type = DC_RDV_MSG_REPLY, .id = id, .status = status, .num = num,
                          .val = val, .val_len = len};

    dc_rdv_conn_send(s, c, &reply);
}

/* A flood of strangers must not become a flood of log lines: at most 10 warnings
 * per 10 s, then how many were not shown. */
static void warn_unauth_drop(dc_rdv_server_t *s, const conn_t *c, const char *why)
{
    uint64_t now = dc_now_ns();

    if (now - s->drop_window_ns >= 10000000000ull) {
        if (s->drops_quiet > 0) {
            DC_WARN("rdv server: %d more unauthenticated connections dropped", s->drops_quiet);
        }
        s->drop_window_ns = now;
        s->drops_logged = s->drops_quiet = 0;
    }
    if (s->drops_logged < 10) {
        s->drops_logged++;
        DC_WARN("rdv server: dropped unauthenticated connection from %s: %s", c->peer, why);
    } else {
        s->drops_quiet++;
    }
}

/* Dead connections stay in the list (fd closed) until the end of progress, so an
 * event later in the same epoll batch never touches freed memory. */
void dc_rdv_conn_kill(dc_rdv_server_t *s, conn_t *c, const char *why)
{
    waiter_t **wp = &s->waiters;

    if (c->state == CONN_DEAD) {
        return;
    }
    if (c->state == CONN_AUTH_WAIT) {
        s->nunauth--;
        warn_unauth_drop(s, c, why);
    } else {
        s->nconns--;
        if (why != NULL) {
            DC_WARN("rdv server: dropped connection of rank %d from %s: %s", (int)c->rank,
                    c->peer, why);
        }
    }
    while (*wp != NULL) {
        waiter_t *w = *wp;

        if (w->conn == c) {
            *wp = w->next;
            free(w);
        } else {
            wp = &w->next;
        }
    }
    epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->state = CONN_DEAD;
}
