/*
 * Connection set-up of the tcp transport: the higher rank of a pair accepts and
 * serves handshakes side by side (strangers hold a slot until their deadline,
 * never the ranks behind them), the lower rank dials, proves the job secret and
 * checks the server's proof (wire format in tcp.h); a connection that passes is
 * attached to its endpoint, with its keys when streams are encrypted.
 */
#include <arpa/inet.h>
#include <errno.h>
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
#include "tcp_int.h"

#define TCP_SOCKBUF        (4 << 20) /* bigger than the default: fewer wake-ups */
#define TCP_MAX_HANDSHAKES 64        /* at once; strangers beyond push out the oldest */

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

/* ---- endpoints: attach ------------------------------------------------- */

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

void dc_tcp_hs_close_all(dc_transport_t *tp)
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
dc_status_t dc_tcp_accept_until(dc_transport_t *tp, int peer, uint64_t deadline)
{
    uint64_t hs_ms = DC_TCP_HANDSHAKE_MS;
    struct pollfd pfds[TCP_MAX_HANDSHAKES + 2];

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
        /* Last: the job's abort descriptor (a peer that died before it
         * connected never will). */
        pfds[1 + tp->nhs] = (struct pollfd){.fd = tp->abort_fd, .events = POLLIN};
        (void)poll(pfds, (nfds_t)(2 + tp->nhs), (int)((wake - DC_MIN(wake, now)) / 1000000 + 1));
        if (tp->abort_fd >= 0 && pfds[1 + tp->nhs].revents != 0) {
            return dc_error_set(DCOMM_ERR_PEER_LOST, "tcp: rank %d: the job failed while "
                                "waiting for rank %d to connect", tp->rank, peer);
        }
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
dc_status_t dc_tcp_connect_to(dc_transport_t *tp, int peer, uint64_t deadline)
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
