/*
 * The tcp transport: one authenticated socket per pair of ranks (the lower rank
 * connects, the higher accepts), messages framed as {tag, len} + payload, and
 * per-endpoint FIFO queues driven by progress() over an edge-triggered epoll set
 * that is also the descriptor the core sleeps on.
 */
#include "tcp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "dc_time.h"
#include "transport.h"

#define TCP_SOCKBUF        (4 << 20) /* bigger than the default: fewer wake-ups */
#define TCP_SCRATCH_LEN    (64 << 10) /* sink for payloads of mismatched messages */
#define TCP_SEND_BATCH     32        /* messages per sendmsg */
#define TCP_MAX_EVENTS     64
#define TCP_SETUP_MS       60000     /* set-up deadline when the job has none */
#define TCP_ADDR_LEN       64
#define TCP_MAX_HANDSHAKES 64        /* at once; strangers beyond push out the oldest */
#define TCP_TX_RECS        4         /* encrypted: records sealed per refill of the send buffer */
#define TCP_REC_SPAN       (DC_TCP_REC_MAX + DC_TCP_REC_OVERHEAD)
#define TCP_TXB_LEN        (TCP_TX_RECS * TCP_REC_SPAN)
#define TCP_RXB_LEN        (4 * TCP_REC_SPAN)

typedef struct tcp_hs tcp_hs_t;

typedef enum tcp_rx_state {
    TCP_RX_HDR,     /* reading a header (only while a receive is posted) */
    TCP_RX_PAYLOAD, /* reading into the receive at the head of the queue */
    TCP_RX_DISCARD  /* draining the payload of a message that failed to match */
} tcp_rx_state_t;

typedef struct tcp_ep {
    dc_endpoint_t super;
    int served;   /* peer is in boot->peers */
    int fd;       /* -1 until connected, and after loss */
    int readable; /* edge seen, EAGAIN not yet */
    int writable;
    int lost;     /* connection gone: every request fails */
    int lost_busy;/* ... and some request was or is pending on it */
    dc_status_t lost_status; /* what its requests fail with: PEER_LOST, or AUTH */
    char why[160];
    dc_request_t *sq, *sq_tail; /* sends, head partially written */
    dc_request_t *rq, *rq_tail; /* receives, head possibly matched */
    tcp_rx_state_t rx_state;
    uint8_t rx_hdr[DC_TCP_HDR_LEN];
    size_t rx_hdr_done;
    size_t rx_len;     /* payload length of the matched message */
    uint64_t rx_discard; /* payload bytes left to drop */
    /* Encrypted stream (tp->encrypt): sealed records on their way out, and
     * ciphertext in / opened plaintext not yet consumed on the way in. The
     * sends whose bytes are all sealed complete once the buffer is written. */
    dc_tcp_crypt_t tx, rx;
    uint8_t *txb;                /* [TCP_TXB_LEN] */
    size_t tx_off, tx_len;
    uint8_t *rxb;                /* [TCP_RXB_LEN] ciphertext, rx_start..rx_end unread */
    size_t rx_start, rx_end;
    uint8_t *rxp;                /* [DC_TCP_REC_MAX] plaintext, rxp_off..rxp_len unread */
    size_t rxp_off, rxp_len;
} tcp_ep_t;

struct dc_transport {
    int rank, size;
    uint8_t secret[DC_AUTH_SECRET_LEN];
    int timeout_ms;
    dc_store_t *store;
    int listen_fd;
    int epfd;
    tcp_ep_t *eps; /* [size], indexed by world rank */
    int *peers;    /* [npeers] ascending */
    int npeers;
    uint8_t *scratch;
    char addr[TCP_ADDR_LEN];
    tcp_hs_t *hs; /* [TCP_MAX_HANDSHAKES] accepted connections in their handshake */
    int nhs;
    int encrypt;             /* DCOMM_TCP_ENCRYPT */
    uint8_t *stage;          /* [DC_TCP_REC_MAX] a record gathered from several pieces */
    dc_status_t hs_fatal;    /* an authenticated peer disagrees on a setting */
    char hs_fatal_why[256];
};

/* ---- small helpers ----------------------------------------------------- */

static int fail_queue(dc_request_t **head, dc_request_t **tail, dc_status_t status)
{
    int n = 0;

    while (*head != NULL) {
        dc_reqq_pop(head, tail)->status = status;
        n++;
    }
    return n;
}

static uint64_t setup_deadline(const dc_transport_t *tp)
{
    return dc_deadline_ms(tp->timeout_ms > 0 ? tp->timeout_ms : TCP_SETUP_MS);
}

/* Waits for events on fd until the deadline. */
static dc_status_t sock_wait(int fd, short events, uint64_t deadline, const char *what)
{
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = events};
        uint64_t now = dc_now_ns();
        int ms, rc;

        if (now >= deadline) {
            return dc_error_set(DCOMM_ERR_TIMEOUT, "tcp: %s: timed out", what);
        }
        ms = (int)DC_MIN((deadline - now + 999999) / 1000000, (uint64_t)INT_MAX);
        rc = poll(&pfd, 1, ms);
        if (rc > 0) {
            return DCOMM_OK;
        }
        if (rc < 0 && errno != EINTR) {
            return dc_error_set(DCOMM_ERR_TRANSPORT, "tcp: %s: poll: %s", what, strerror(errno));
        }
    }
}

/* Moves exactly len bytes over a non-blocking socket before the deadline. */
static dc_status_t sock_io(int fd, void *buf, size_t len, int writing, uint64_t deadline,
                           const char *what)
{
    size_t done = 0;
    dc_status_t status;

    while (done < len) {
        ssize_t n = writing ? send(fd, (char *)buf + done, len - done, MSG_NOSIGNAL)
                            : recv(fd, (char *)buf + done, len - done, 0);

        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        if (n == 0) {
            return dc_error_set(DCOMM_ERR_TRANSPORT, "tcp: %s: connection closed", what);
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            return dc_error_set(DCOMM_ERR_TRANSPORT, "tcp: %s: %s", what, strerror(errno));
        }
        status = sock_wait(fd, writing ? POLLOUT : POLLIN, deadline, what);
        if (status < 0) {
            return status;
        }
    }
    return DCOMM_OK;
}

static void sock_tune(int fd)
{
    int one = 1, buf = TCP_SOCKBUF;

    /* Failures only cost performance. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
}

/* ---- endpoints: attach, loss ------------------------------------------- */

/* Attaches a connection whose handshake (hello, answer) passed; an encrypted
 * one gets its buffers and per-direction keys. */
static dc_status_t ep_attach(dc_transport_t *tp, tcp_ep_t *ep, int fd, const uint8_t *hello,
                             const uint8_t *answer, int is_client)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                             .data.ptr = ep};

    if (tp->encrypt) {
        uint8_t c2s[DC_AUTH_KEY_LEN], s2c[DC_AUTH_KEY_LEN];

        if (ep->txb == NULL) {
            ep->txb = malloc(TCP_TXB_LEN);
            ep->rxb = malloc(TCP_RXB_LEN);
            ep->rxp = malloc(DC_TCP_REC_MAX);
        }
        if (ep->txb == NULL || ep->rxb == NULL || ep->rxp == NULL) {
            return dc_error_set(DCOMM_ERR_NO_MEMORY, "tcp: out of memory for the encrypted "
                                "stream to rank %d", ep->super.peer);
        }
        dc_auth_session_keys(tp->secret, DC_TCP_LABEL_C2S, DC_TCP_LABEL_S2C, hello,
                             DC_TCP_HELLO_LEN, answer, DC_TCP_ANSWER_LEN, c2s, s2c);
        /* AES-256-GCM when both ends have it in hardware (faster), else ChaCha20. */
        int aes = (dc_tcp_get_u32(hello + 12) & dc_tcp_get_u32(answer + 12) &
                   DC_TCP_FLAG_AESGCM) != 0;

        dc_tcp_crypt_init(&ep->tx, is_client ? c2s : s2c, aes);
        dc_tcp_crypt_init(&ep->rx, is_client ? s2c : c2s, aes);
        DC_DEBUG("tcp: rank %d: stream with rank %d sealed with %s", tp->rank, ep->super.peer,
                 ep->tx.aes ? "AES-256-GCM" : "ChaCha20-Poly1305");
        dc_auth_wipe(c2s, sizeof(c2s));
        dc_auth_wipe(s2c, sizeof(s2c));
    }
    sock_tune(fd);
    if (epoll_ctl(tp->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        return dc_error_set(DCOMM_ERR_TRANSPORT, "tcp: epoll_ctl for rank %d: %s",
                            ep->super.peer, strerror(errno));
    }
    ep->fd = fd;
    /* Optimistic: the first read or write finds out. */
    ep->readable = 1;
    ep->writable = 1;
    return DCOMM_OK;
}

/* Fails every request of a lost endpoint with a message naming the peer. */
static int ep_fail_pending(tcp_ep_t *ep)
{
    dc_status_t status;

    if (ep->sq == NULL && ep->rq == NULL) {
        return 0;
    }
    ep->lost_busy = 1;
    status = ep->lost_status == DCOMM_ERR_AUTH
                 ? dc_error_set(DCOMM_ERR_AUTH, "tcp: rank %d: encrypted stream from rank %d "
                                "broken: %s", ((dc_transport_t *)ep->super.tp)->rank,
                                ep->super.peer, ep->why)
                 : dc_error_set(DCOMM_ERR_PEER_LOST, "tcp: rank %d: connection closed (%s)",
                                ep->super.peer, ep->why);
    return fail_queue(&ep->sq, &ep->sq_tail, status) + fail_queue(&ep->rq, &ep->rq_tail, status);
}

static int ep_lost_as(dc_transport_t *tp, tcp_ep_t *ep, dc_status_t status, const char *why)
{
    if (ep->lost) {
        return 0;
    }
    ep->lost = 1;
    ep->lost_status = status;
    snprintf(ep->why, sizeof(ep->why), "%s", why);
    if (ep->fd >= 0) {
        (void)epoll_ctl(tp->epfd, EPOLL_CTL_DEL, ep->fd, NULL);
        close(ep->fd);
        ep->fd = -1;
    }
    if (status == DCOMM_ERR_AUTH) {
        DC_ERROR("tcp: rank %d: encrypted stream from rank %d broken: %s", tp->rank,
                 ep->super.peer, why);
        ep->lost_busy = 1; /* an attack or a bug: an error even with nothing pending */
    } else if (ep->sq != NULL || ep->rq != NULL) {
        DC_WARN("tcp: rank %d lost connection to rank %d (%s)", tp->rank, ep->super.peer, why);
    }
    return ep_fail_pending(ep);
}

static int ep_lost(dc_transport_t *tp, tcp_ep_t *ep, const char *why)
{
    return ep_lost_as(tp, ep, DCOMM_ERR_PEER_LOST, why);
}

static int ep_lost_errno(dc_transport_t *tp, tcp_ep_t *ep, int err)
{
    return ep_lost(tp, ep, strerror(err));
}

/* ---- connection set-up ------------------------------------------------- */

/* Handshake flags: encryption, and the ciphers this end can offer. */
static uint32_t tcp_flags(const dc_transport_t *tp)
{
    if (!tp->encrypt) {
        return 0;
    }
    return DC_TCP_FLAG_ENCRYPT | (dc_tcp_aes_available() ? DC_TCP_FLAG_AESGCM : 0);
}

static void hello_build(const dc_transport_t *tp, uint8_t hello[DC_TCP_HELLO_LEN])
{
    dc_tcp_put_u32(hello, DC_TCP_MAGIC);
    dc_tcp_put_u32(hello + 4, DC_TCP_VERSION);
    dc_tcp_put_u32(hello + 8, (uint32_t)tp->rank);
    dc_tcp_put_u32(hello + 12, tcp_flags(tp));
    dc_auth_random(hello + 16, DC_AUTH_NONCE_LEN);
}

static void describe_addr(const struct sockaddr_in *sa, char *buf, size_t cap)
{
    char ip[INET_ADDRSTRLEN] = "?";

    inet_ntop(AF_INET, &sa->sin_addr, ip, sizeof(ip));
    snprintf(buf, cap, "%s:%u", ip, (unsigned)ntohs(sa->sin_port));
}

/* ---- accepting: handshakes served side by side -------------------------- */

/* One accepted connection in its handshake: hello out, answer in, proof out,
 * each as far as the socket allows, so that a silent stranger holds only a
 * slot (until its deadline) and never the ranks behind it. */
typedef enum tcp_hs_state { HS_HELLO, HS_ANSWER, HS_PROOF } tcp_hs_state_t;

struct tcp_hs {
    int fd;
    tcp_hs_state_t state;
    size_t off;
    uint64_t deadline;
    int client;
    int mismatch; /* authenticated, but its DCOMM_TCP_ENCRYPT differs: fatal after the proof */
    uint8_t hello[DC_TCP_HELLO_LEN], answer[DC_TCP_ANSWER_LEN], proof[DC_TCP_PROOF_LEN];
    char from[TCP_ADDR_LEN];
};

/* The client's answer: magic, MAC over our nonce, a rank that connects to us
 * and has no connection yet. Fills the proof. */
static dc_status_t hs_verify(dc_transport_t *tp, tcp_hs_t *hs)
{
    const uint8_t *answer = hs->answer, *mac = answer + 16 + DC_AUTH_NONCE_LEN;
    uint32_t client;

    if (dc_tcp_get_u32(answer) != DC_TCP_MAGIC) {
        return dc_error_set(DCOMM_ERR_AUTH, "tcp: not a dcomm tcp client (bad magic)");
    }
    if (!dc_auth_verify(tp->secret, DC_TCP_LABEL_CLIENT, hs->hello + 16, DC_AUTH_NONCE_LEN,
                        answer, 16 + DC_AUTH_NONCE_LEN, mac)) {
        return dc_error_set(DCOMM_ERR_AUTH, "tcp: client failed authentication (wrong secret)");
    }
    client = dc_tcp_get_u32(answer + 4);
    if (dc_tcp_get_u32(answer + 8) != (uint32_t)tp->rank || client >= (uint32_t)tp->size ||
        (int)client >= tp->rank || !tp->eps[client].served) {
        return dc_error_set(DCOMM_ERR_AUTH, "tcp: client claims rank %u, wants rank %u: not "
                            "a peer that connects to rank %d", client,
                            dc_tcp_get_u32(answer + 8), tp->rank);
    }
    if (tp->eps[client].fd >= 0 || tp->eps[client].lost) {
        return dc_error_set(DCOMM_ERR_AUTH, "tcp: second connection from rank %u", client);
    }
    if ((dc_tcp_get_u32(answer + 12) & ~DC_TCP_FLAGS_KNOWN) != 0) {
        return dc_error_set(DCOMM_ERR_AUTH, "tcp: rank %u sent unknown flags 0x%x", client,
                            dc_tcp_get_u32(answer + 12));
    }
    /* The proof still goes out, so that the client names the mismatch too. */
    hs->mismatch = !(dc_tcp_get_u32(answer + 12) & DC_TCP_FLAG_ENCRYPT) != !tp->encrypt;
    dc_auth_mac(tp->secret, DC_TCP_LABEL_SERVER, answer + 16, DC_AUTH_NONCE_LEN, hs->hello,
                sizeof(hs->hello), hs->proof);
    hs->client = (int)client;
    return DCOMM_OK;
}

/* Moves one handshake as far as its socket allows: 1 when the connection is
 * attached to its endpoint, 0 when it waits for the socket, or an error. */
static int hs_step(dc_transport_t *tp, tcp_hs_t *hs)
{
    for (;;) {
        uint8_t *buf = hs->state == HS_HELLO ? hs->hello
                       : hs->state == HS_ANSWER ? hs->answer : hs->proof;
        size_t len = hs->state == HS_HELLO ? sizeof(hs->hello)
                     : hs->state == HS_ANSWER ? sizeof(hs->answer) : sizeof(hs->proof);
        ssize_t n = hs->state == HS_ANSWER ? recv(hs->fd, buf + hs->off, len - hs->off, 0)
                                           : send(hs->fd, buf + hs->off, len - hs->off,
                                                  MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return 0;
        }
        if (n <= 0) {
            return dc_error_set(DCOMM_ERR_TRANSPORT, "tcp: %s during the handshake",
                                n == 0 ? "closed" : strerror(errno));
        }
        hs->off += (size_t)n;
        if (hs->off < len) {
            continue;
        }
        hs->off = 0;
        if (hs->state == HS_HELLO) {
            hs->state = HS_ANSWER;
        } else if (hs->state == HS_ANSWER) {
            dc_status_t status = hs_verify(tp, hs);

            if (status < 0) {
                return status;
            }
            hs->state = HS_PROOF;
        } else {
            dc_status_t status;

            if (hs->mismatch) {
                status = dc_error_set(DCOMM_ERR_INVALID_ARG, "tcp: rank %d has DCOMM_TCP_ENCRYPT=%s"
                                      " but rank %d has it %s: every rank must use the same "
                                      "setting", tp->rank, tp->encrypt ? "on" : "off",
                                      hs->client, tp->encrypt ? "off" : "on");
                tp->hs_fatal = status;
                snprintf(tp->hs_fatal_why, sizeof(tp->hs_fatal_why), "%s", dc_error_get());
                return status;
            }
            status = tp->eps[hs->client].fd >= 0
                         ? dc_error_set(DCOMM_ERR_AUTH, "tcp: second connection from rank %d",
                                        hs->client)
                         : ep_attach(tp, &tp->eps[hs->client], hs->fd, hs->hello, hs->answer,
                                     0);

            return status < 0 ? status : 1;
        }
    }
}

/* Ends handshake i (its fd closed unless attached), keeping the set dense. */
static void hs_remove(dc_transport_t *tp, int i, int attached, const char *why)
{
    tcp_hs_t *hs = &tp->hs[i];

    if (!attached) {
        DC_WARN("tcp: rank %d dropped connection from %s: %s", tp->rank, hs->from, why);
        close(hs->fd);
    } else {
        DC_DEBUG("tcp: rank %d accepted rank %d from %s", tp->rank, hs->client, hs->from);
    }
    tp->hs[i] = tp->hs[--tp->nhs];
}

static void hs_close_all(dc_transport_t *tp)
{
    while (tp->nhs > 0) {
        close(tp->hs[--tp->nhs].fd);
    }
    free(tp->hs);
    tp->hs = NULL;
}

/* Accepts what is pending; the oldest handshake gives way when all slots are taken. */
static dc_status_t hs_accept(dc_transport_t *tp, uint64_t hs_deadline)
{
    for (;;) {
        struct sockaddr_in sa;
        socklen_t salen = sizeof(sa);
        int fd = accept4(tp->listen_fd, (struct sockaddr *)&sa, &salen,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        tcp_hs_t *hs;
        int rc;

        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
                errno == ECONNABORTED) {
                return DCOMM_OK;
            }
            if ((errno == EMFILE || errno == ENFILE) && tp->nhs > 0) {
                hs_remove(tp, 0, 0, "out of descriptors: making room");
                continue;
            }
            return dc_error_set(DCOMM_ERR_TRANSPORT, "tcp: accept: %s", strerror(errno));
        }
        if (tp->nhs == TCP_MAX_HANDSHAKES) {
            int oldest = 0;

            for (int i = 1; i < tp->nhs; i++) {
                oldest = tp->hs[i].deadline < tp->hs[oldest].deadline ? i : oldest;
            }
            hs_remove(tp, oldest, 0, "too many connections in their handshake; dropped the "
                                     "oldest");
        }
        hs = &tp->hs[tp->nhs++];
        *hs = (tcp_hs_t){.fd = fd, .state = HS_HELLO, .deadline = hs_deadline, .client = -1};
        describe_addr(&sa, hs->from, sizeof(hs->from));
        hello_build(tp, hs->hello);
        rc = hs_step(tp, hs);
        if (rc != 0) {
            hs_remove(tp, tp->nhs - 1, rc > 0, rc > 0 ? NULL : dc_error_get());
        }
    }
}

/* Serves handshakes, side by side, until `peer` has a connection. Connections
 * of other peers are kept for their connect() call (and handshakes still under
 * way for the next call); strangers are dropped at their handshake deadline. */
static dc_status_t accept_until(dc_transport_t *tp, int peer, uint64_t deadline)
{
    uint64_t hs_ms = DC_TCP_HANDSHAKE_MS;
    struct pollfd pfds[TCP_MAX_HANDSHAKES + 1];

    if (tp->timeout_ms > 0) {
        hs_ms = DC_MIN(hs_ms, (uint64_t)tp->timeout_ms);
    }
    if (tp->hs == NULL && (tp->hs = calloc(TCP_MAX_HANDSHAKES, sizeof(*tp->hs))) == NULL) {
        return dc_error_set(DCOMM_ERR_NO_MEMORY, "tcp: out of memory");
    }
    while (tp->eps[peer].fd < 0) {
        uint64_t now = dc_now_ns(), wake = deadline;
        dc_status_t status;

        if (now >= deadline) {
            return dc_error_set(DCOMM_ERR_TIMEOUT, "tcp: rank %d: rank %d did not connect "
                                "within the deadline (%d ms)", tp->rank, peer, tp->timeout_ms);
        }
        pfds[0] = (struct pollfd){.fd = tp->listen_fd, .events = POLLIN};
        for (int i = tp->nhs - 1; i >= 0; i--) {
            if (now >= tp->hs[i].deadline) {
                hs_remove(tp, i, 0, "handshake not completed in time");
            }
        }
        for (int i = 0; i < tp->nhs; i++) {
            pfds[1 + i] = (struct pollfd){.fd = tp->hs[i].fd,
                                          .events = tp->hs[i].state == HS_ANSWER ? POLLIN
                                                                                 : POLLOUT};
            wake = DC_MIN(wake, tp->hs[i].deadline);
        }
        (void)poll(pfds, (nfds_t)(1 + tp->nhs), (int)((wake - DC_MIN(wake, now)) / 1000000 + 1));
        for (int i = tp->nhs - 1; i >= 0; i--) { /* removal swaps in an already-seen one */
            int rc = hs_step(tp, &tp->hs[i]);

            if (rc != 0) {
                hs_remove(tp, i, rc > 0, rc > 0 ? NULL : dc_error_get());
            }
        }
        if (pfds[0].revents != 0) {
            status = hs_accept(tp, DC_MIN(deadline, dc_now_ns() + hs_ms * 1000000ull));
            if (status < 0) {
                return status;
            }
        }
        if (tp->hs_fatal < 0) {
            return dc_error_set(tp->hs_fatal, "%s", tp->hs_fatal_why);
        }
    }
    return DCOMM_OK;
}

static dc_status_t parse_addr(const char *text, struct sockaddr_in *sa)
{
    char ip[TCP_ADDR_LEN];
    const char *colon = strrchr(text, ':');
    char *end;
    unsigned long port;

    if (colon == NULL || (size_t)(colon - text) >= sizeof(ip)) {
        return DCOMM_ERR_INVALID_ARG;
    }
    memcpy(ip, text, (size_t)(colon - text));
    ip[colon - text] = '\0';
    port = strtoul(colon + 1, &end, 10);
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (*end != '\0' || port == 0 || port > 65535 || inet_pton(AF_INET, ip, &sa->sin_addr) != 1) {
        return DCOMM_ERR_INVALID_ARG;
    }
    return DCOMM_OK;
}

static dc_status_t dial(const struct sockaddr_in *sa, uint64_t deadline, const char *what,
                        int *fd_p)
{
    int fd, err;
    socklen_t len = sizeof(err);
    dc_status_t status;

    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return dc_error_set(DCOMM_ERR_TRANSPORT, "tcp: socket: %s", strerror(errno));
    }
    if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) != 0 && errno != EINPROGRESS) {
        status = dc_error_set(DCOMM_ERR_TRANSPORT, "tcp: %s: %s", what, strerror(errno));
        goto err_close;
    }
    DC_CHECK_GOTO(sock_wait(fd, POLLOUT, deadline, what), status, err_close);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
        status = dc_error_set(DCOMM_ERR_TRANSPORT, "tcp: %s: %s", what, strerror(err));
        goto err_close;
    }
    *fd_p = fd;
    return DCOMM_OK;

err_close:
    close(fd);
    return status;
}

/* Client side: connect to a higher rank, prove the secret, check its proof. */
static dc_status_t connect_to(dc_transport_t *tp, int peer, uint64_t deadline)
{
    uint8_t hello[DC_TCP_HELLO_LEN], answer[DC_TCP_ANSWER_LEN], proof[DC_TCP_PROOF_LEN];
    char key[32], text[TCP_ADDR_LEN] = {0}, what[TCP_ADDR_LEN + 32];
    struct sockaddr_in sa;
    size_t len = 0;
    int fd = -1, wait_ms;
    dc_status_t status;

    snprintf(key, sizeof(key), DC_TCP_KEY_FMT, peer);
    wait_ms = (int)DC_MAX(1, (int64_t)(deadline - dc_now_ns()) / 1000000);
    status = dc_store_get(tp->store, key, text, sizeof(text) - 1, &len, wait_ms);
    if (status < 0) {
        return status;
    }
    text[DC_MIN(len, sizeof(text) - 1)] = '\0';
    if (len >= sizeof(text) || parse_addr(text, &sa) != DCOMM_OK) {
        return dc_error_set(DCOMM_ERR_TRANSPORT, "tcp: rank %d published a bad address '%s'",
                            peer, text);
    }
    snprintf(what, sizeof(what), "rank %d at %s", peer, text);
    status = dial(&sa, deadline, what, &fd);
    if (status < 0) {
        return status;
    }
    DC_CHECK_GOTO(sock_io(fd, hello, sizeof(hello), 0, deadline, what), status, err_close);
    if (dc_tcp_get_u32(hello) != DC_TCP_MAGIC || dc_tcp_get_u32(hello + 4) != DC_TCP_VERSION ||
        dc_tcp_get_u32(hello + 8) != (uint32_t)peer) {
        status = dc_error_set(DCOMM_ERR_AUTH, "tcp: %s is not dcomm tcp rank %d (version %u)",
                              what, peer, dc_tcp_get_u32(hello + 4));
        goto err_close;
    }
    dc_tcp_put_u32(answer, DC_TCP_MAGIC);
    dc_tcp_put_u32(answer + 4, (uint32_t)tp->rank);
    dc_tcp_put_u32(answer + 8, (uint32_t)peer);
    dc_tcp_put_u32(answer + 12, tcp_flags(tp));
    dc_auth_random(answer + 16, DC_AUTH_NONCE_LEN);
    dc_auth_mac(tp->secret, DC_TCP_LABEL_CLIENT, hello + 16, DC_AUTH_NONCE_LEN, answer,
                16 + DC_AUTH_NONCE_LEN, answer + 16 + DC_AUTH_NONCE_LEN);
    DC_CHECK_GOTO(sock_io(fd, answer, sizeof(answer), 1, deadline, what), status, err_close);
    DC_CHECK_GOTO(sock_io(fd, proof, sizeof(proof), 0, deadline, what), status, err_close);
    if (!dc_auth_verify(tp->secret, DC_TCP_LABEL_SERVER, answer + 16, DC_AUTH_NONCE_LEN, hello,
                        sizeof(hello), proof)) {
        status = dc_error_set(DCOMM_ERR_AUTH, "tcp: %s failed authentication (wrong secret)",
                              what);
        goto err_close;
    }
    /* The proof covers the hello, flags included: no downgrade on the way. */
    if (!(dc_tcp_get_u32(hello + 12) & DC_TCP_FLAG_ENCRYPT) != !tp->encrypt) {
        status = dc_error_set(DCOMM_ERR_INVALID_ARG, "tcp: rank %d has DCOMM_TCP_ENCRYPT=%s but "
                              "rank %d has it %s: every rank must use the same setting",
                              tp->rank, tp->encrypt ? "on" : "off", peer,
                              tp->encrypt ? "off" : "on");
        goto err_close;
    }
    DC_CHECK_GOTO(ep_attach(tp, &tp->eps[peer], fd, hello, answer, 1), status, err_close);
    DC_DEBUG("tcp: rank %d connected to %s", tp->rank, what);
    return DCOMM_OK;

err_close:
    close(fd);
    return status;
}

/* ---- data path ------------------------------------------------------------ */

/* Writes as much of the send queue as the socket takes, several messages per
 * sendmsg. */
static int ep_send(dc_transport_t *tp, tcp_ep_t *ep)
{
    uint8_t hdrs[TCP_SEND_BATCH][DC_TCP_HDR_LEN];
    struct iovec iov[2 * TCP_SEND_BATCH];
    int events = 0;

    while (ep->sq != NULL && ep->writable) {
        struct msghdr msg = {.msg_iov = iov};
        dc_request_t *req = ep->sq;
        int nreq = 0;
        ssize_t n;

        for (; req != NULL && nreq < TCP_SEND_BATCH; req = req->next, nreq++) {
            size_t done = req->done;

            if (done < DC_TCP_HDR_LEN) {
                dc_tcp_put_u64(hdrs[nreq], req->tag);
                dc_tcp_put_u64(hdrs[nreq] + 8, req->len);
                iov[msg.msg_iovlen++] = (struct iovec){hdrs[nreq] + done, DC_TCP_HDR_LEN - done};
                done = DC_TCP_HDR_LEN;
            }
            if (done - DC_TCP_HDR_LEN < req->len) {
                iov[msg.msg_iovlen++] = (struct iovec){(char *)req->buf + done - DC_TCP_HDR_LEN,
                                                       req->len - (done - DC_TCP_HDR_LEN)};
            }
        }
        n = sendmsg(ep->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                ep->writable = 0;
                break;
            }
            return events + ep_lost_errno(tp, ep, errno);
        }
        events++;
        for (size_t left = (size_t)n; left > 0;) {
            size_t take = DC_MIN(left, DC_TCP_HDR_LEN + ep->sq->len - ep->sq->done);

            ep->sq->done += take;
            left -= take;
            if (ep->sq->done == DC_TCP_HDR_LEN + ep->sq->len) {
                dc_reqq_pop(&ep->sq, &ep->sq_tail)->status = DCOMM_OK;
                events++;
            }
        }
    }
    return events;
}

/* ---- encrypted streams ----------------------------------------------------- */

/* Seals up to TCP_TX_RECS records from the sends not yet sealed; the queue's
 * head is the first of them (sealed ones leave the queue when written). A
 * record that lies within one payload is sealed straight from it; pieces of
 * several messages are gathered in tp->stage first. */
static void ep_seal(dc_transport_t *tp, tcp_ep_t *ep)
{
    dc_request_t *req = ep->sq;

    while (req != NULL && ep->tx_len + TCP_REC_SPAN <= TCP_TXB_LEN) {
        size_t fill = 0, hdr_left = req->done < DC_TCP_HDR_LEN ? DC_TCP_HDR_LEN - req->done : 0;
        const uint8_t *src;

        if (hdr_left == 0 && req->len - (req->done - DC_TCP_HDR_LEN) >= DC_TCP_REC_MAX) {
            src = (const uint8_t *)req->buf + (req->done - DC_TCP_HDR_LEN);
            fill = DC_TCP_REC_MAX;
            req->done += fill;
        } else {
            for (; req != NULL && fill < DC_TCP_REC_MAX; req = req->next) {
                if (req->done < DC_TCP_HDR_LEN) {
                    uint8_t hdr[DC_TCP_HDR_LEN];
                    size_t take = DC_MIN(DC_TCP_HDR_LEN - req->done, DC_TCP_REC_MAX - fill);

                    dc_tcp_put_u64(hdr, req->tag);
                    dc_tcp_put_u64(hdr + 8, req->len);
                    memcpy(tp->stage + fill, hdr + req->done, take);
                    fill += take;
                    req->done += take;
                }
                if (req->done >= DC_TCP_HDR_LEN) {
                    size_t off = req->done - DC_TCP_HDR_LEN;
                    size_t take = DC_MIN(req->len - off, DC_TCP_REC_MAX - fill);

                    if (take > 0) {
                        memcpy(tp->stage + fill, (const uint8_t *)req->buf + off, take);
                        fill += take;
                        req->done += take;
                    }
                }
                if (req->done < DC_TCP_HDR_LEN + req->len) {
                    break; /* the record is full */
                }
            }
            src = tp->stage;
        }
        ep->tx_len += dc_tcp_record_seal(&ep->tx, src, fill, ep->txb + ep->tx_len);
        while (req != NULL && req->done == DC_TCP_HDR_LEN + req->len) {
            req = req->next;
        }
    }
}

/* Encrypted counterpart of ep_send: writes sealed records; a send completes
 * when the last record holding its bytes is in the socket. */
static int ep_send_crypt(dc_transport_t *tp, tcp_ep_t *ep)
{
    int events = 0;

    while (ep->writable && ep->fd >= 0) {
        if (ep->tx_off < ep->tx_len) {
            ssize_t n = send(ep->fd, ep->txb + ep->tx_off, ep->tx_len - ep->tx_off,
                             MSG_NOSIGNAL | MSG_DONTWAIT);

            if (n < 0) {
                if (errno == EINTR) {
                    continue;
                }
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    ep->writable = 0;
                    break;
                }
                return events + ep_lost_errno(tp, ep, errno);
            }
            ep->tx_off += (size_t)n;
            events++;
            continue;
        }
        ep->tx_off = ep->tx_len = 0;
        while (ep->sq != NULL && ep->sq->done == DC_TCP_HDR_LEN + ep->sq->len) {
            dc_reqq_pop(&ep->sq, &ep->sq_tail)->status = DCOMM_OK;
            events++;
        }
        if (ep->sq == NULL) {
            break;
        }
        ep_seal(tp, ep);
    }
    return events;
}

/* Opened plaintext or received ciphertext waits in the endpoint's buffers. */
static int ep_rx_buffered(const tcp_ep_t *ep)
{
    return ep->rxp_off < ep->rxp_len || ep->rx_start < ep->rx_end;
}

/* Encrypted counterpart of recv(): up to want bytes of the peer's plaintext.
 * A record that fits is opened straight into dst. Returns the bytes, 0 when
 * the peer closed, -1 with errno, or -2 when a record failed (the endpoint is
 * then lost with DCOMM_ERR_AUTH naming the peer). */
static ssize_t ep_read_crypt(dc_transport_t *tp, tcp_ep_t *ep, void *dst, size_t want)
{
    if (ep->rxp_off < ep->rxp_len) {
        size_t n = DC_MIN(want, ep->rxp_len - ep->rxp_off);

        memcpy(dst, ep->rxp + ep->rxp_off, n);
        ep->rxp_off += n;
        return (ssize_t)n;
    }
    for (;;) {
        size_t avail = ep->rx_end - ep->rx_start, plain = 0, used = 0;
        int rc = dc_tcp_record_len(ep->rxb + ep->rx_start, avail, &plain);
        ssize_t n;

        if (rc == 1 && avail >= plain + DC_TCP_REC_OVERHEAD) {
            int direct = plain <= want;

            rc = dc_tcp_record_open(&ep->rx, ep->rxb + ep->rx_start, avail,
                                    direct ? dst : ep->rxp, direct ? want : DC_TCP_REC_MAX,
                                    &plain, &used);
            if (rc == 1) {
                ep->rx_start += used;
                if (ep->rx_start == ep->rx_end) {
                    ep->rx_start = ep->rx_end = 0;
                }
                if (direct) {
                    return (ssize_t)plain;
                }
                memcpy(dst, ep->rxp, want);
                ep->rxp_off = want;
                ep->rxp_len = plain;
                return (ssize_t)want;
            }
        }
        if (rc < 0) {
            char why[sizeof(ep->why)];

            snprintf(why, sizeof(why), "%s", dc_error_get());
            ep_lost_as(tp, ep, DCOMM_ERR_AUTH, why);
            return -2;
        }
        if (!ep->readable) {
            errno = EAGAIN;
            return -1;
        }
        if (TCP_RXB_LEN - ep->rx_end < TCP_REC_SPAN) {
            memmove(ep->rxb, ep->rxb + ep->rx_start, avail);
            ep->rx_start = 0;
            ep->rx_end = avail;
        }
        n = recv(ep->fd, ep->rxb + ep->rx_end, TCP_RXB_LEN - ep->rx_end, MSG_DONTWAIT);
        if (n <= 0) {
            return n;
        }
        ep->rx_end += (size_t)n;
    }
}

/* A complete header arrived: match it to the receive at the head of the queue. */
static int ep_match(dc_transport_t *tp, tcp_ep_t *ep)
{
    uint64_t tag = dc_tcp_get_u64(ep->rx_hdr), len = dc_tcp_get_u64(ep->rx_hdr + 8);
    dc_request_t *req = ep->rq;

    ep->rx_hdr_done = 0;
    if (tag != req->tag || len > req->len) {
        dc_reqq_pop(&ep->rq, &ep->rq_tail);
        req->status = dc_error_set(DCOMM_ERR_INTERNAL,
                                   "tcp: rank %d expected tag 0x%llx (<= %zu bytes) from rank "
                                   "%d, got tag 0x%llx (%llu bytes)",
                                   tp->rank, (unsigned long long)req->tag, req->len,
                                   ep->super.peer, (unsigned long long)tag,
                                   (unsigned long long)len);
        ep->rx_discard = len;
        ep->rx_state = len > 0 ? TCP_RX_DISCARD : TCP_RX_HDR;
        return 1;
    }
    req->done = 0;
    ep->rx_len = (size_t)len;
    if (len == 0) {
        dc_reqq_pop(&ep->rq, &ep->rq_tail);
        req->len = 0;
        req->status = DCOMM_OK;
        return 1;
    }
    ep->rx_state = TCP_RX_PAYLOAD;
    return 0;
}

/* Reads while the socket has data and there is somewhere to put it. Payloads go
 * straight into the posted buffers; with no receive posted the socket is left
 * alone, so the sender is held back by TCP flow control. */
static int ep_recv(dc_transport_t *tp, tcp_ep_t *ep)
{
    int events = 0;

    while ((ep->readable || ep_rx_buffered(ep)) && ep->fd >= 0) {
        dc_request_t *req = ep->rq;
        void *dst;
        size_t want;
        ssize_t n;

        if (ep->rx_state == TCP_RX_HDR) {
            if (req == NULL) {
                break;
            }
            dst = ep->rx_hdr + ep->rx_hdr_done;
            want = DC_TCP_HDR_LEN - ep->rx_hdr_done;
        } else if (ep->rx_state == TCP_RX_PAYLOAD) {
            dst = (char *)req->buf + req->done;
            want = ep->rx_len - req->done;
        } else {
            dst = tp->scratch;
            want = (size_t)DC_MIN(ep->rx_discard, (uint64_t)TCP_SCRATCH_LEN);
        }
        n = tp->encrypt ? ep_read_crypt(tp, ep, dst, want) : recv(ep->fd, dst, want, MSG_DONTWAIT);
        if (n == -2) {
            return events + 1;
        }
        if (n == 0) {
            return events + 1 + ep_lost(tp, ep, tp->encrypt && ep->rx_start < ep->rx_end
                                                    ? "closed by peer in the middle of an "
                                                      "encrypted record: stream truncated"
                                                    : "closed by peer");
        }
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                ep->readable = 0;
                break;
            }
            return events + 1 + ep_lost_errno(tp, ep, errno);
        }
        events++;
        if (ep->rx_state == TCP_RX_HDR) {
            ep->rx_hdr_done += (size_t)n;
            if (ep->rx_hdr_done == DC_TCP_HDR_LEN) {
                events += ep_match(tp, ep);
            }
        } else if (ep->rx_state == TCP_RX_PAYLOAD) {
            req->done += (size_t)n;
            if (req->done == ep->rx_len) {
                dc_reqq_pop(&ep->rq, &ep->rq_tail);
                req->len = ep->rx_len;
                req->status = DCOMM_OK;
                ep->rx_state = TCP_RX_HDR;
                events++;
            }
        } else {
            ep->rx_discard -= (uint64_t)n;
            if (ep->rx_discard == 0) {
                ep->rx_state = TCP_RX_HDR;
            }
        }
    }
    return events;
}

static int tcp_progress(dc_transport_t *tp)
{
    struct epoll_event evs[TCP_MAX_EVENTS];
    int events = 0, n;

    n = epoll_wait(tp->epfd, evs, TCP_MAX_EVENTS, 0);
    for (int i = 0; i < n; i++) {
        tcp_ep_t *ep = evs[i].data.ptr;
        uint32_t e = evs[i].events;

        if (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
            ep->readable = 1;
        }
        if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR)) {
            ep->writable = 1;
        }
        if ((e & EPOLLERR) && ep->fd >= 0) {
            int err = 0;
            socklen_t len = sizeof(err);

            (void)getsockopt(ep->fd, SOL_SOCKET, SO_ERROR, &err, &len);
            events += 1 + ep_lost_errno(tp, ep, err != 0 ? err : ECONNRESET);
        }
    }
    for (int i = 0; i < tp->npeers; i++) {
        tcp_ep_t *ep = &tp->eps[tp->peers[i]];

        if (ep->lost) {
            events += ep_fail_pending(ep);
            continue;
        }
        if (ep->fd < 0) {
            continue; /* not connected yet: requests wait */
        }
        if (ep->sq != NULL && ep->writable) {
            events += tp->encrypt ? ep_send_crypt(tp, ep) : ep_send(tp, ep);
        }
        if ((ep->readable || ep_rx_buffered(ep)) && ep->fd >= 0 &&
            (ep->rq != NULL || ep->rx_state != TCP_RX_HDR)) {
            events += ep_recv(tp, ep);
        }
    }
    return events;
}

static dc_status_t tcp_post(dc_endpoint_t *ep, void *buf, size_t len, uint64_t tag,
                            dc_request_t *req, int is_send)
{
    tcp_ep_t *tep = (tcp_ep_t *)ep;

    if (req == NULL || (buf == NULL && len > 0)) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "tcp: %s to rank %d: NULL %s",
                            is_send ? "isend" : "irecv", ep->peer, req ? "buffer" : "request");
    }
    dc_request_start(req, ep, buf, len, tag);
    if (is_send) {
        dc_reqq_push(&tep->sq, &tep->sq_tail, req);
    } else {
        dc_reqq_push(&tep->rq, &tep->rq_tail, req);
    }
    return DCOMM_OK;
}

static dc_status_t tcp_isend(dc_endpoint_t *ep, const void *buf, size_t len, uint64_t tag,
                             dc_request_t *req)
{
    return tcp_post(ep, (void *)buf, len, tag, req, 1);
}

static dc_status_t tcp_irecv(dc_endpoint_t *ep, void *buf, size_t len, uint64_t tag,
                             dc_request_t *req)
{
    return tcp_post(ep, buf, len, tag, req, 0);
}

/* ---- liveness -------------------------------------------------------------- */

/* A peer that closed with nothing pending on it is only noted: a rank that
 * finished its part and exited is not an error until somebody needs it. */
static dc_status_t tcp_check(dc_transport_t *tp)
{
    for (int i = 0; i < tp->npeers; i++) {
        tcp_ep_t *ep = &tp->eps[tp->peers[i]];
        char byte;
        ssize_t n;

        if (ep->fd >= 0 && ep->rx_state == TCP_RX_HDR && !ep_rx_buffered(ep)) {
            n = recv(ep->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
            if (n == 0) {
                ep_lost(tp, ep, "closed by peer");
            } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                ep_lost_errno(tp, ep, errno);
                ep->lost_busy = 1;
            }
        }
        if (ep->lost) {
            ep_fail_pending(ep);
        }
    }
    for (int i = 0; i < tp->npeers; i++) {
        tcp_ep_t *ep = &tp->eps[tp->peers[i]];

        if (ep->lost && ep->lost_busy) {
            return ep->lost_status == DCOMM_ERR_AUTH
                       ? dc_error_set(DCOMM_ERR_AUTH, "tcp: rank %d: encrypted stream from "
                                      "rank %d broken: %s", tp->rank, ep->super.peer, ep->why)
                       : dc_error_set(DCOMM_ERR_PEER_LOST, "tcp: rank %d: connection closed "
                                      "(%s)", ep->super.peer, ep->why);
        }
    }
    return DCOMM_OK;
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

        fail_queue(&ep->sq, &ep->sq_tail, DCOMM_ERR_SHUT_DOWN);
        fail_queue(&ep->rq, &ep->rq_tail, DCOMM_ERR_SHUT_DOWN);
        if (ep->fd >= 0) {
            close(ep->fd);
        }
        dc_auth_wipe(&ep->tx, sizeof(ep->tx));
        dc_auth_wipe(&ep->rx, sizeof(ep->rx));
        free(ep->txb);
        free(ep->rxb);
        free(ep->rxp);
    }
    hs_close_all(tp);
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
        status = peer < tp->rank ? accept_until(tp, peer, deadline)
                                 : connect_to(tp, peer, deadline);
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
        hs_close_all(tp);
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
    .isend = tcp_isend,
    .irecv = tcp_irecv,
    .progress = tcp_progress,
    /* sleeping and liveness */
    .wait_fd = tcp_wait_fd,
    .doorbell = NULL,
    .check = tcp_check,
    .close = tcp_close,
};
