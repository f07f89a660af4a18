/* Client of the rendezvous server: a dc_store_t over one authenticated TCP
 * connection (one request at a time, under a mutex), and the job-event
 * subscription. Every wait is bounded by a deadline and sleeps in poll(). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "rdv.h"
#include "dc_time.h"

#define DEFAULT_OP_TIMEOUT_MS 60000
#define CONNECT_RETRY_NS      100000000ull

/* Reads exactly one frame at a time, so no byte after it is taken from the
 * socket (the events fd is handed over right after the handshake). */
typedef struct frame_reader {
    uint8_t *buf;
    size_t len;
    size_t cap;
    int done; /* the frame in buf was returned; start a new one next time */
} frame_reader_t;

typedef struct rdv_client {
    dc_store_t super;
    pthread_mutex_t lock;
    int fd;
    int broken;
    int op_timeout_ms;
    uint32_t next_id;
    frame_reader_t rd;
    char local_addr[INET_ADDRSTRLEN];
    char hostport[128];
} rdv_client_t;

/* ---- Socket helpers -------------------------------------------------------------- */

static int ms_left(uint64_t deadline)
{
    uint64_t now = dc_now_ns();

    if (deadline == UINT64_MAX) {
        return -1;
    }
    return now >= deadline ? 0 : (int)DC_MIN((deadline - now + 999999) / 1000000, 1u << 30);
}

static dc_status_t wait_fd(int fd, short events, uint64_t deadline, const char *what)
{
    struct pollfd pfd = {.fd = fd, .events = events};

    for (;;) {
        int left = ms_left(deadline);
        int n;

        if (left == 0) {
            return dc_error_set(DCOMM_ERR_TIMEOUT, "rdv client: timed out %s", what);
        }
        n = poll(&pfd, 1, left);
        if (n > 0) {
            return DCOMM_OK;
        }
        if (n < 0 && errno != EINTR) {
            return dc_error_set(DCOMM_ERR_TRANSPORT, "rdv client: poll: %s", strerror(errno));
        }
    }
}

static dc_status_t resolve(const char *hostport, struct sockaddr_in *addr_p)
{
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    char host[128];
    const char *colon = strrchr(hostport, ':');
    char *end;
    long port;
    int rc;

    if (colon == NULL || colon == hostport || (size_t)(colon - hostport) >= sizeof(host)) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "rdv client: bad address '%s' (host:port)",
                            hostport);
    }
    port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || end == colon + 1 || port <= 0 || port > 65535) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "rdv client: bad port in '%s'", hostport);
    }
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = '\0';
    rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0 || res == NULL) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "rdv client: cannot resolve '%s': %s", host,
                            gai_strerror(rc));
    }
    *addr_p = *(struct sockaddr_in *)res->ai_addr;
    addr_p->sin_port = htons((uint16_t)port);
    freeaddrinfo(res);
    return DCOMM_OK;
}

/* Connects, retrying refused attempts until the deadline (the server may not be
 * listening yet when a rank starts). */
static dc_status_t tcp_connect(const char *hostport, uint64_t deadline, int *fd_p)
{
    struct sockaddr_in addr;
    dc_status_t status = resolve(hostport, &addr);
    int one = 1;

    if (status != DCOMM_OK) {
        return status;
    }
    for (;;) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int err = 0;
        socklen_t elen = sizeof(err);

        if (fd < 0) {
            return dc_error_set(DCOMM_ERR_TRANSPORT, "rdv client: socket: %s", strerror(errno));
        }
        if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
            err = errno;
            if (err == EINPROGRESS) {
                status = wait_fd(fd, POLLOUT, deadline, "connecting");
                if (status != DCOMM_OK) {
                    close(fd);
                    return status;
                }
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen);
            }
        }
        if (err == 0) {
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            *fd_p = fd;
            return DCOMM_OK;
        }
        close(fd);
        if ((err != ECONNREFUSED && err != ETIMEDOUT) || ms_left(deadline) == 0) {
            return dc_error_set(err == ECONNREFUSED ? DCOMM_ERR_TIMEOUT : DCOMM_ERR_TRANSPORT,
                                "rdv client: cannot connect to %s: %s", hostport, strerror(err));
        }
        dc_sleep_ns(CONNECT_RETRY_NS);
    }
}

static dc_status_t send_all(int fd, const uint8_t *buf, size_t len, uint64_t deadline)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        dc_status_t status;

        if (n > 0) {
            buf += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            return dc_error_set(DCOMM_ERR_PEER_LOST, "rdv client: send: %s", strerror(errno));
        }
        status = wait_fd(fd, POLLOUT, deadline, "sending to the rendezvous server");
        if (status != DCOMM_OK) {
            return status;
        }
    }
    return DCOMM_OK;
}

static dc_status_t send_msg(int fd, const dc_rdv_msg_t *msg, uint64_t deadline)
{
    size_t size = dc_rdv_msg_size(msg);
    uint8_t small[256];
    uint8_t *buf = size <= sizeof(small) ? small : malloc(size);
    dc_status_t status;

    if (size == 0) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "rdv client: message not encodable");
    }
    if (buf == NULL) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "rdv client: out of memory");
    }
    dc_rdv_msg_encode(msg, buf, size);
    status = send_all(fd, buf, size, deadline);
    if (buf != small) {
        free(buf);
    }
    return status;
}

/* Returns the next frame (valid until the next call); a partial frame survives a
 * timeout and is completed by the next call. */
static dc_status_t read_frame(int fd, frame_reader_t *rd, uint64_t deadline, size_t max_frame,
                              dc_rdv_msg_t *msg_p)
{
    if (rd->done) {
        rd->len = 0;
        rd->done = 0;
    }
    for (;;) {
        size_t want = DC_RDV_HDR_LEN;
        dc_status_t status;
        size_t used;
        ssize_t n;

        if (rd->len >= DC_RDV_HDR_LEN) {
            status = dc_rdv_msg_decode(rd->buf, rd->len, max_frame, msg_p, &used);
            if (status == DCOMM_OK) {
                rd->done = 1;
                return DCOMM_OK;
            }
            if (status != DCOMM_INPROGRESS) {
                return dc_error_set(DCOMM_ERR_PEER_LOST, "rdv client: bad message from server: %s",
                                    dc_error_get());
            }
            want += ((size_t)rd->buf[0] << 24) | ((size_t)rd->buf[1] << 16) |
                    ((size_t)rd->buf[2] << 8) | rd->buf[3];
        }
        if (want > rd->cap) {
            uint8_t *buf = realloc(rd->buf, DC_MAX(want, (size_t)64));

            if (buf == NULL) {
                return dc_error_set(DCOMM_ERR_NO_MEMORY, "rdv client: out of memory");
            }
            rd->buf = buf;
            rd->cap = DC_MAX(want, (size_t)64);
        }
        n = recv(fd, rd->buf + rd->len, want - rd->len, MSG_DONTWAIT);
        if (n > 0) {
            rd->len += (size_t)n;
            continue;
        }
        if (n == 0) {
            return dc_error_set(DCOMM_ERR_PEER_LOST, "rdv client: server closed the connection");
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            return dc_error_set(DCOMM_ERR_PEER_LOST, "rdv client: recv: %s", strerror(errno));
        }
        status = wait_fd(fd, POLLIN, deadline, "waiting for the rendezvous server");
        if (status != DCOMM_OK) {
            return status;
        }
    }
}

/* Mutual authentication: prove the secret over the server's nonce, then check the
 * server's proof over ours. */
static dc_status_t handshake(int fd, const uint8_t secret[DC_AUTH_SECRET_LEN], int rank,
                             dc_rdv_role_t role, uint64_t deadline)
{
    frame_reader_t rd = {0};
    dc_rdv_msg_t hello, auth = {.type = DC_RDV_MSG_AUTH, .rank = rank, .role = (uint8_t)role};
    dc_rdv_msg_t ok;
    uint8_t expect[DC_AUTH_MAC_LEN];
    dc_status_t status;

    status = read_frame(fd, &rd, deadline, DC_RDV_MAX_AUTH_FRAME, &hello);
    if (status != DCOMM_OK) {
        goto out;
    }
    if (hello.type != DC_RDV_MSG_HELLO || hello.version != DC_RDV_VERSION) {
        status = dc_error_set(DCOMM_ERR_TRANSPORT,
                              "rdv client: not a dcomm rendezvous server (type %d, version %u)",
                              (int)hello.type, hello.version);
        goto out;
    }
    dc_auth_random(auth.nonce, sizeof(auth.nonce));
    dc_rdv_client_mac(secret, hello.nonce, auth.nonce, auth.rank, auth.role, auth.mac);
    status = send_msg(fd, &auth, deadline);
    if (status != DCOMM_OK) {
        goto out;
    }
    status = read_frame(fd, &rd, deadline, DC_RDV_MAX_AUTH_FRAME, &ok);
    if (status == DCOMM_ERR_PEER_LOST) {
        status = dc_error_set(DCOMM_ERR_AUTH, "rdv client: server rejected authentication "
                                              "(wrong DCOMM_JOB_SECRET?)");
        goto out;
    }
    if (status != DCOMM_OK) {
        goto out;
    }
    dc_rdv_server_mac(secret, auth.nonce, hello.nonce, expect);
    if (ok.type != DC_RDV_MSG_AUTH_OK || !dc_rdv_mac_equal(expect, ok.mac)) {
        status = dc_error_set(DCOMM_ERR_AUTH,
                              "rdv client: server failed to prove the job secret");
    }
out:
    free(rd.buf);
    return status;
}

static dc_status_t connect_auth(const char *hostport, const uint8_t secret[DC_AUTH_SECRET_LEN],
                                int rank, dc_rdv_role_t role, int timeout_ms, int *fd_p)
{
    uint64_t deadline = dc_deadline_ms(timeout_ms > 0 ? timeout_ms : DEFAULT_OP_TIMEOUT_MS);
    dc_status_t status;
    int fd = -1;

    if (hostport == NULL || secret == NULL) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "rdv client: NULL address or secret");
    }
    status = tcp_connect(hostport, deadline, &fd);
    if (status != DCOMM_OK) {
        return status;
    }
    status = handshake(fd, secret, rank, role, deadline);
    if (status != DCOMM_OK) {
        close(fd);
        return status;
    }
    *fd_p = fd;
    return DCOMM_OK;
}

/* ---- Store ops ------------------------------------------------------------------ */

/* Sends msg and waits for its reply; stale replies (of requests that timed out
 * earlier) are skipped by id. Called with the lock held. */
static dc_status_t request(rdv_client_t *c, dc_rdv_msg_t *msg, uint64_t deadline,
                           dc_rdv_msg_t *reply_p)
{
    dc_status_t status;

    if (c->broken) {
        return dc_error_set(DCOMM_ERR_PEER_LOST, "rdv client: connection to %s was lost",
                            c->hostport);
    }
    msg->id = ++c->next_id;
    status = send_msg(c->fd, msg, deadline);
    if (status != DCOMM_OK) {
        c->broken = 1; /* a request half sent cannot be recovered */
        return status;
    }
    for (;;) {
        status = read_frame(c->fd, &c->rd, deadline, DC_RDV_MAX_FRAME, reply_p);
        if (status != DCOMM_OK) {
            break;
        }
        if (reply_p->type != DC_RDV_MSG_REPLY) {
            status = dc_error_set(DCOMM_ERR_PEER_LOST, "rdv client: unexpected message type %d",
                                  (int)reply_p->type);
            break;
        }
        if (reply_p->id == msg->id) {
            return DCOMM_OK;
        }
    }
    /* A timeout while waiting leaves the stream usable: the late reply is skipped
     * by id (a partial frame is completed by the next call). */
    c->broken = (status != DCOMM_ERR_TIMEOUT);
    return status;
}

static dc_status_t check_key(const char *key)
{
    size_t len = key ? strlen(key) : 0;

    if (len == 0 || len > DC_RDV_MAX_KEY) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "rdv client: key must have 1..%d bytes",
                            DC_RDV_MAX_KEY);
    }
    return DCOMM_OK;
}

static dc_status_t rdv_set(dc_store_t *store, const char *key, const void *val, size_t len)
{
    rdv_client_t *c = (rdv_client_t *)store;
    dc_rdv_msg_t msg = {.type = DC_RDV_MSG_SET, .key = key, .val = val, .val_len = len};
    dc_rdv_msg_t reply;
    dc_status_t status = check_key(key);

    if (status != DCOMM_OK) {
        return status;
    }
    if (len > DC_RDV_MAX_VALUE || (len > 0 && val == NULL)) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "rdv client: value of %zu bytes for key %s "
                            "(at most %u)", len, key, DC_RDV_MAX_VALUE);
    }
    msg.key_len = strlen(key);
    pthread_mutex_lock(&c->lock);
    status = request(c, &msg, dc_deadline_ms(c->op_timeout_ms), &reply);
    if (status == DCOMM_OK && reply.status != DCOMM_OK) {
        status = dc_error_set(reply.status, "rdv client: server refused set of %s: %s", key,
                              dcomm_status_string(reply.status));
    }
    pthread_mutex_unlock(&c->lock);
    return status;
}

static dc_status_t rdv_get(dc_store_t *store, const char *key, void *buf, size_t cap,
                           size_t *len_p, int timeout_ms)
{
    rdv_client_t *c = (rdv_client_t *)store;
    dc_rdv_msg_t msg = {.type = DC_RDV_MSG_GET, .key = key, .wait = timeout_ms > 0};
    dc_rdv_msg_t reply;
    dc_status_t status = check_key(key);

    if (status != DCOMM_OK) {
        return status;
    }
    if (cap > 0 && buf == NULL) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "rdv client: NULL buffer");
    }
    msg.key_len = strlen(key);
    pthread_mutex_lock(&c->lock);
    status = request(c, &msg, dc_deadline_ms(timeout_ms > 0 ? timeout_ms : c->op_timeout_ms),
                     &reply);
    if (status == DCOMM_ERR_TIMEOUT || (status == DCOMM_OK && reply.status == DCOMM_ERR_TIMEOUT)) {
        status = dc_error_set(DCOMM_ERR_TIMEOUT, "rdv client: key %s not set within %d ms", key,
                              DC_MAX(timeout_ms, 0));
    } else if (status == DCOMM_OK && reply.status != DCOMM_OK) {
        int why_len = (int)DC_MIN(reply.val_len, (size_t)200); /* the server's reason */

        status = dc_error_set(reply.status, "rdv client: get of %s failed: %s%s%.*s", key,
                              dcomm_status_string(reply.status), why_len > 0 ? ": " : "",
                              why_len, (const char *)reply.val);
    } else if (status == DCOMM_OK) {
        if (reply.val_len > 0 && cap > 0) {
            memcpy(buf, reply.val, DC_MIN(cap, reply.val_len));
        }
        *len_p = reply.val_len;
    }
    pthread_mutex_unlock(&c->lock);
    return status;
}

static dc_status_t rdv_add(dc_store_t *store, const char *key, int64_t delta, int64_t *value_p)
{
    rdv_client_t *c = (rdv_client_t *)store;
    dc_rdv_msg_t msg = {.type = DC_RDV_MSG_ADD, .key = key, .num = delta};
    dc_rdv_msg_t reply;
    dc_status_t status = check_key(key);

    if (status != DCOMM_OK) {
        return status;
    }
    msg.key_len = strlen(key);
    pthread_mutex_lock(&c->lock);
    status = request(c, &msg, dc_deadline_ms(c->op_timeout_ms), &reply);
    if (status == DCOMM_OK && reply.status != DCOMM_OK) {
        status = dc_error_set(reply.status, "rdv client: add to %s failed (not an integer, or "
                              "overflow): %s", key, dcomm_status_string(reply.status));
    } else if (status == DCOMM_OK) {
        *value_p = reply.num;
    }
    pthread_mutex_unlock(&c->lock);
    return status;
}

static void rdv_close(dc_store_t *store)
{
    rdv_client_t *c = (rdv_client_t *)store;

    if (c == NULL) {
        return;
    }
    close(c->fd);
    pthread_mutex_destroy(&c->lock);
    free(c->rd.buf);
    free(c);
}

static void rdv_set_op_timeout(dc_store_t *store, int timeout_ms)
{
    ((rdv_client_t *)store)->op_timeout_ms = timeout_ms > 0 ? timeout_ms : DEFAULT_OP_TIMEOUT_MS;
}

static const dc_store_ops_t rdv_store_ops = {
    .set = rdv_set,
    .get = rdv_get,
    .add = rdv_add,
    .close = rdv_close,
    .set_op_timeout = rdv_set_op_timeout,
};

/* ---- Public ------------------------------------------------------------------------ */

dc_status_t dc_rdv_client_open(const char *hostport, const uint8_t secret[DC_AUTH_SECRET_LEN],
                               int rank, int timeout_ms, dc_store_t **store_p)
{
    struct sockaddr_in local;
    socklen_t llen = sizeof(local);
    rdv_client_t *c;
    dc_status_t status;
    int fd = -1;

    status = connect_auth(hostport, secret, rank, DC_RDV_ROLE_STORE, timeout_ms, &fd);
    if (status != DCOMM_OK) {
        return status;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        close(fd);
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "rdv client: out of memory");
    }
    c->super.ops = &rdv_store_ops;
    c->fd = fd;
    c->op_timeout_ms = timeout_ms > 0 ? timeout_ms : DEFAULT_OP_TIMEOUT_MS;
    pthread_mutex_init(&c->lock, NULL);
    snprintf(c->hostport, sizeof(c->hostport), "%s", hostport);
    if (getsockname(fd, (struct sockaddr *)&local, &llen) != 0 ||
        inet_ntop(AF_INET, &local.sin_addr, c->local_addr, sizeof(c->local_addr)) == NULL) {
        snprintf(c->local_addr, sizeof(c->local_addr), "127.0.0.1");
    }
    *store_p = &c->super;
    return DCOMM_OK;
}

const char *dc_rdv_client_local_addr(dc_store_t *store)
{
    return ((rdv_client_t *)store)->local_addr;
}

dc_status_t dc_rdv_events_open(const char *hostport, const uint8_t secret[DC_AUTH_SECRET_LEN],
                               int rank, int timeout_ms, int *fd_p)
{
    return connect_auth(hostport, secret, rank, DC_RDV_ROLE_EVENTS, timeout_ms, fd_p);
}

/* Stateless: a frame is taken from the socket only once all of it has arrived
 * (MSG_PEEK), so a caller holding only the fd never loses half a message. */
int dc_rdv_events_read(int fd, char *msg, size_t cap)
{
    uint8_t buf[DC_RDV_HDR_LEN + 16 + DC_RDV_MAX_EVENT];
    dc_rdv_msg_t ev;
    size_t body, used;
    ssize_t n;

    n = recv(fd, buf, DC_RDV_HDR_LEN, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        return 0;
    }
    if (n <= 0) {
        return dc_error_set(DCOMM_ERR_PEER_LOST, "rdv events: launcher connection closed");
    }
    if (n < DC_RDV_HDR_LEN) {
        return 0;
    }
    body = ((size_t)buf[0] << 24) | ((size_t)buf[1] << 16) | ((size_t)buf[2] << 8) | buf[3];
    if (body == 0 || body > sizeof(buf) - DC_RDV_HDR_LEN) {
        return dc_error_set(DCOMM_ERR_PEER_LOST, "rdv events: bad frame length %zu", body);
    }
    n = recv(fd, buf, DC_RDV_HDR_LEN + body, MSG_PEEK | MSG_DONTWAIT);
    if (n < (ssize_t)(DC_RDV_HDR_LEN + body)) {
        return 0;
    }
    n = recv(fd, buf, DC_RDV_HDR_LEN + body, MSG_DONTWAIT);
    if (n != (ssize_t)(DC_RDV_HDR_LEN + body) ||
        dc_rdv_msg_decode(buf, (size_t)n, body, &ev, &used) != DCOMM_OK ||
        ev.type != DC_RDV_MSG_EVENT) {
        return dc_error_set(DCOMM_ERR_PEER_LOST, "rdv events: malformed event");
    }
    if (cap > 0) {
        size_t len = DC_MIN(ev.val_len, cap - 1);

        memcpy(msg, ev.val, len);
        msg[len] = '\0';
    }
    return 1;
}
