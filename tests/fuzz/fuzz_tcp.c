/* libFuzzer harness: the tcp transport (transports/tcp) as either side of a
 * connection sees its peer: the handshake, then the stream of framed messages
 * read into posted receives.
 *
 * Mode byte bit 1 clear: the transport is rank 1 of 2 and accepts rank 0 on
 * loopback. The
 * harness makes two connections before the transport accepts: A carries the
 * fuzzed handshake, B a correct one (so accepting always ends). Both then carry
 * the same message stream; whichever the transport keeps delivers it.
 * Input: mode byte (bit 0: A's answer is built correctly by the harness, with
 * the claimed ranks from the next byte; else the next 80 bytes are A's raw
 * answer), a byte with the number of receives to post (% 9), per receive a tag
 * byte and a u16 length (% 4097), then the stream (frames are {tag u64, len
 * u64} little-endian plus payload). Randomness is deterministic, so the harness
 * knows the nonces the transport will send.
 * Mode bit 1 set: the transport is rank 0 and connects to the harness, whose
 * thread plays rank 1: bit 0 set, a correct hello (claimed version and rank
 * from the next byte, mostly right) and proof; clear, 48 raw hello bytes and 32
 * raw proof bytes from the input. Then the receives and the stream as above.
 * Connecting to a peer whose hello or proof is wrong is a failure. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "tcp/tcp.h"
#include "transport.h"

#define MAX_RECVS 8
#define MAX_KEYS  8

/* ---- a store in memory: the transport publishes its address here ---------------- */

typedef struct mem_store {
    dc_store_t super;
    int n;
    char keys[MAX_KEYS][64];
    char vals[MAX_KEYS][64];
    size_t lens[MAX_KEYS];
} mem_store_t;

static dc_status_t mem_set(dc_store_t *st, const char *key, const void *val, size_t len)
{
    mem_store_t *s = (mem_store_t *)st;
    int i;

    for (i = 0; i < s->n && strcmp(s->keys[i], key) != 0; i++) {
    }
    if (i == MAX_KEYS || strlen(key) >= sizeof(s->keys[0]) || len > sizeof(s->vals[0])) {
        return DCOMM_ERR_NO_MEMORY;
    }
    snprintf(s->keys[i], sizeof(s->keys[i]), "%s", key);
    memcpy(s->vals[i], val, len);
    s->lens[i] = len;
    s->n += i == s->n;
    return DCOMM_OK;
}

static dc_status_t mem_get(dc_store_t *st, const char *key, void *buf, size_t cap, size_t *len_p,
                           int timeout_ms)
{
    mem_store_t *s = (mem_store_t *)st;

    (void)timeout_ms;
    for (int i = 0; i < s->n; i++) {
        if (strcmp(s->keys[i], key) == 0) {
            memcpy(buf, s->vals[i], DC_MIN(cap, s->lens[i]));
            *len_p = s->lens[i];
            return DCOMM_OK;
        }
    }
    return DCOMM_ERR_TIMEOUT;
}

static dc_status_t mem_add(dc_store_t *st, const char *key, int64_t delta, int64_t *value_p)
{
    (void)st;
    (void)key;
    *value_p = delta;
    return DCOMM_OK;
}

static void mem_close(dc_store_t *st)
{
    (void)st;
}

static const dc_store_ops_t mem_ops = {
    .set = mem_set, .get = mem_get, .add = mem_add, .close = mem_close};

/* ---- the peer's side -------------------------------------------------------------- */

/* The harness closes its sockets with a reset (linger 0): an orderly close would
 * leave one TIME-WAIT socket per connection, and at thousands of inputs a second
 * the loopback runs out of ports (bind: Address already in use) within minutes. */
static void abortive_close(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};

    if (fd >= 0) {
        (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        close(fd);
    }
}

/* The harness's ends of this input's connections: reset before the transport
 * closes its ends (a FIN from the transport after the harness's own would put the
 * harness's end in TIME-WAIT all the same). */
static int harness_fds[2] = {-1, -1};

static void reset_harness_fds(void)
{
    for (int i = 0; i < 2; i++) {
        abortive_close(harness_fds[i]);
        harness_fds[i] = -1;
    }
}

/* Connects to the transport's listener (non-blocking: libFuzzer's timers
 * interrupt blocking calls). */
static int dial(const struct sockaddr_in *sa)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int buf = 1 << 20, err = 0;
    socklen_t len = sizeof(err);
    struct pollfd p = {.fd = fd, .events = POLLOUT};

    if (fd < 0) {
        abort();
    }
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
    if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) != 0) {
        if (errno != EINPROGRESS && errno != EINTR) {
            perror("fuzz_tcp: connect");
            abort();
        }
        while (poll(&p, 1, 5000) < 0 && errno == EINTR) {
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
            fprintf(stderr, "fuzz_tcp: connect: %s\n", strerror(err));
            abort();
        }
    }
    return fd;
}

static void send_some(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;

    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return; /* the socket is full: the rest is not sent */
        }
        p += n;
        len -= (size_t)n;
    }
}

/* A correct answer to the hello whose nonce is server_nonce. */
static void build_answer(uint8_t answer[DC_TCP_ANSWER_LEN], const uint8_t *server_nonce,
                         uint32_t client, uint32_t server)
{
    dc_tcp_put_u32(answer, DC_TCP_MAGIC);
    dc_tcp_put_u32(answer + 4, client);
    dc_tcp_put_u32(answer + 8, server);
    dc_tcp_put_u32(answer + 12, 0);
    memset(answer + 16, 0x5a, DC_AUTH_NONCE_LEN);
    dc_auth_mac(fuzz_tcp_secret, DC_TCP_LABEL_CLIENT, server_nonce, DC_AUTH_NONCE_LEN, answer,
                16 + DC_AUTH_NONCE_LEN, answer + 16 + DC_AUTH_NONCE_LEN);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_setup();
    return 0;
}

typedef struct recvs {
    int n;
    dc_request_t reqs[MAX_RECVS];
    uint8_t *bufs[MAX_RECVS];
    size_t posted[MAX_RECVS];
} recvs_t;

/* The receives to post: count byte (% 9), then per receive a tag byte and a
 * u16 length (% 4097). */
static void read_recvs(fuzz_in_t *in, recvs_t *r)
{
    r->n = fuzz_u8(in) % (MAX_RECVS + 1);
    for (int i = 0; i < r->n; i++) {
        uint64_t tag = fuzz_u8(in);
        size_t len = fuzz_u16(in) % 4097;

        r->bufs[i] = malloc(len > 0 ? len : 1);
        r->posted[i] = len;
        r->reqs[i] = (dc_request_t){.tag = tag, .len = len};
    }
}

/* Posts the receives on ep (NULL: the connection failed), drives the transport
 * until nothing moves, closes it and checks what the requests say. */
static void drive(dc_transport_t *tp, dc_endpoint_t *ep, recvs_t *r)
{
    const dc_transport_ops_t *ops = &dc_transport_tcp_ops;

    for (int i = 0; ep != NULL && i < r->n; i++) {
        if (ops->irecv(ep, r->bufs[i], r->posted[i], r->reqs[i].tag, &r->reqs[i]) != DCOMM_OK) {
            abort();
        }
    }
    for (int idle = 0, rounds = 0; ep != NULL && idle < 3 && rounds < 10000; rounds++) {
        int ev = ops->progress(tp);

        (void)ops->check(tp);
        idle = ev > 0 ? 0 : idle + 1;
    }
    for (int i = 0; ep != NULL && i < r->n; i++) {
        if (getenv("DCOMM_FUZZ_LOG") != NULL) {
            fprintf(stderr, "fuzz_tcp: receive %d (tag %llu, %zu bytes): status %d, %zu bytes\n",
                    i, (unsigned long long)r->reqs[i].tag, r->posted[i], (int)r->reqs[i].status,
                    r->reqs[i].len);
        }
        if (r->reqs[i].status == DCOMM_OK && r->reqs[i].len > r->posted[i]) {
            abort(); /* completed longer than the posted buffer */
        }
    }
    reset_harness_fds();
    ops->close(tp);
    for (int i = 0; i < r->n; i++) {
        if (ep != NULL && r->reqs[i].status == DCOMM_INPROGRESS) {
            abort(); /* close must complete every request */
        }
        free(r->bufs[i]);
    }
}

/* ---- the accepting side (rank 1): its peer's answer, then the stream ---------------- */

static void fuzz_server(fuzz_in_t *in, uint8_t mode)
{
    const dc_transport_ops_t *ops = &dc_transport_tcp_ops;
    mem_store_t store = {.super = {.ops = &mem_ops}};
    int host_of[2] = {0, 0}, local_rank_of[2] = {0, 1}, peers[1] = {0};
    dc_topo_t topo = {.rank = 1, .size = 2, .nhosts = 1, .host_of = host_of,
                      .local_rank_of = local_rank_of, .local_size = 2, .ncores = 2};
    dc_bootstrap_t boot = {.topo = &topo, .store = &store.super, .secret = fuzz_tcp_secret,
                           .local_addr = "127.0.0.1", .timeout_ms = 2000, .peers = peers,
                           .npeers = 1};
    uint8_t nonce_a[DC_AUTH_NONCE_LEN], nonce_b[DC_AUTH_NONCE_LEN];
    uint8_t answer_a[DC_TCP_ANSWER_LEN], answer_b[DC_TCP_ANSWER_LEN];
    recvs_t r;
    char addr[64] = {0};
    size_t alen = 0, got = 0;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    dc_transport_t *tp = NULL;
    dc_endpoint_t *ep = NULL;
    int fd_a, fd_b;
    const uint8_t *p;

    /* The nonces the transport will put in its two hellos, in accept order. */
    fuzz_rng_reset();
    fuzz_rng_buf(nonce_a, sizeof(nonce_a));
    fuzz_rng_buf(nonce_b, sizeof(nonce_b));
    fuzz_rng_reset();

    if (ops->open(&boot, &tp) != DCOMM_OK ||
        mem_get(&store.super, "tcp/1", addr, sizeof(addr) - 1, &alen, 0) != DCOMM_OK) {
        fprintf(stderr, "fuzz_tcp: open: %s\n", dc_error_get());
        abort();
    }
    sa.sin_port = htons((uint16_t)atoi(strrchr(addr, ':') + 1));
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);

    if (mode & 1) {
        uint8_t claim = fuzz_u8(in);

        /* Mostly the right ranks (0 to 1); sometimes others. */
        build_answer(answer_a, nonce_a, (claim & 0x10) ? claim & 0x0f : 0,
                     (claim & 0x20) ? (claim >> 6) : 1);
        got = sizeof(answer_a);
    } else {
        memset(answer_a, 0, sizeof(answer_a));
        p = fuzz_bytes(in, sizeof(answer_a), &got);
        memcpy(answer_a, p, got); /* short: the peer closes during the handshake */
    }
    build_answer(answer_b, nonce_b, 0, 1);
    read_recvs(in, &r);

    fd_a = dial(&sa);
    fd_b = dial(&sa);
    send_some(fd_a, answer_a, got);
    send_some(fd_a, in->p, in->left);
    shutdown(fd_a, SHUT_WR);
    send_some(fd_b, answer_b, sizeof(answer_b));
    send_some(fd_b, in->p, in->left);
    shutdown(fd_b, SHUT_WR);

    if (ops->connect(tp, 0, &ep) != DCOMM_OK) {
        /* B's answer is correct: failing to take either is a bug. */
        fprintf(stderr, "fuzz_tcp: connect: %s\n", dc_error_get());
        abort();
    }
    harness_fds[0] = fd_a;
    harness_fds[1] = fd_b;
    drive(tp, ep, &r);
}

/* ---- the connecting side (rank 0): its peer's hello and proof, then the stream ------- */

typedef struct peer {
    int lfd, fd;
    uint8_t hello[DC_TCP_HELLO_LEN];
    uint8_t proof[DC_TCP_PROOF_LEN];
    int make_proof; /* compute the proof from the answer (else send proof as is) */
    int proof_ok;   /* out: the proof sent was the right one */
    const uint8_t *stream;
    size_t stream_len;
} peer_t;

/* Reads exactly len bytes within a few seconds; 0 on success. */
static int read_exact(int fd, uint8_t *buf, size_t len)
{
    size_t done = 0;

    while (done < len) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ssize_t n;

        if (poll(&p, 1, 5000) == 0) {
            return -1;
        }
        n = recv(fd, buf + done, len - done, MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        done += (size_t)n;
    }
    return 0;
}

/* Plays rank 1 for the transport's connect: hello, answer, proof, stream. */
static void *peer_main(void *arg)
{
    peer_t *pe = arg;
    uint8_t answer[DC_TCP_ANSWER_LEN], right[DC_TCP_PROOF_LEN];
    struct pollfd p = {.fd = pe->lfd, .events = POLLIN};

    while (poll(&p, 1, 5000) < 0 && errno == EINTR) {
    }
    pe->fd = accept4(pe->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (pe->fd < 0) {
        return NULL;
    }
    send_some(pe->fd, pe->hello, sizeof(pe->hello));
    if (read_exact(pe->fd, answer, sizeof(answer)) != 0) {
        return NULL; /* the transport refused the hello */
    }
    dc_auth_mac(fuzz_tcp_secret, DC_TCP_LABEL_SERVER, answer + 16, DC_AUTH_NONCE_LEN,
                pe->hello, sizeof(pe->hello), right);
    if (pe->make_proof) {
        memcpy(pe->proof, right, sizeof(right));
    }
    pe->proof_ok = memcmp(pe->proof, right, sizeof(right)) == 0;
    send_some(pe->fd, pe->proof, sizeof(pe->proof));
    send_some(pe->fd, pe->stream, pe->stream_len);
    shutdown(pe->fd, SHUT_WR);
    return NULL;
}

static void fuzz_client(fuzz_in_t *in, uint8_t mode)
{
    const dc_transport_ops_t *ops = &dc_transport_tcp_ops;
    mem_store_t store = {.super = {.ops = &mem_ops}};
    int host_of[2] = {0, 0}, local_rank_of[2] = {0, 1}, peers[1] = {1};
    dc_topo_t topo = {.rank = 0, .size = 2, .nhosts = 1, .host_of = host_of,
                      .local_rank_of = local_rank_of, .local_size = 2, .ncores = 2};
    dc_bootstrap_t boot = {.topo = &topo, .store = &store.super, .secret = fuzz_tcp_secret,
                           .local_addr = "127.0.0.1", .timeout_ms = 2000, .peers = peers,
                           .npeers = 1};
    peer_t pe = {.lfd = -1, .fd = -1};
    struct sockaddr_in sa = {.sin_family = AF_INET};
    socklen_t salen = sizeof(sa);
    dc_transport_t *tp = NULL;
    dc_endpoint_t *ep = NULL;
    pthread_t thread;
    char addr[64];
    size_t got;
    recvs_t r;

    fuzz_rng_reset();
    if (mode & 1) {
        uint8_t claim = fuzz_u8(in);

        dc_tcp_put_u32(pe.hello, DC_TCP_MAGIC);
        dc_tcp_put_u32(pe.hello + 4, (claim & 0x10) ? claim & 0x0f : DC_TCP_VERSION);
        dc_tcp_put_u32(pe.hello + 8, (claim & 0x20) ? claim >> 6 : 1);
        dc_tcp_put_u32(pe.hello + 12, 0);
        memset(pe.hello + 16, 0xa5, DC_AUTH_NONCE_LEN);
        pe.make_proof = 1;
    } else {
        memcpy(pe.hello, fuzz_bytes(in, sizeof(pe.hello), &got), got);
        memcpy(pe.proof, fuzz_bytes(in, sizeof(pe.proof), &got), got);
    }
    read_recvs(in, &r);
    pe.stream = in->p;
    pe.stream_len = in->left;

    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    pe.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (pe.lfd < 0 || bind(pe.lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        listen(pe.lfd, 4) != 0 || getsockname(pe.lfd, (struct sockaddr *)&sa, &salen) != 0) {
        perror("fuzz_tcp: listen");
        abort();
    }
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", (unsigned)ntohs(sa.sin_port));
    mem_set(&store.super, "tcp/1", addr, strlen(addr));
    if (ops->open(&boot, &tp) != DCOMM_OK || pthread_create(&thread, NULL, peer_main, &pe) != 0) {
        fprintf(stderr, "fuzz_tcp: open: %s\n", dc_error_get());
        abort();
    }
    if (ops->connect(tp, 1, &ep) != DCOMM_OK) {
        ep = NULL; /* a bad hello or proof: refused, which is the point */
    }
    pthread_join(thread, NULL);
    if (ep != NULL && (!pe.proof_ok || dc_tcp_get_u32(pe.hello) != DC_TCP_MAGIC ||
                       dc_tcp_get_u32(pe.hello + 4) != DC_TCP_VERSION ||
                       dc_tcp_get_u32(pe.hello + 8) != 1)) {
        fprintf(stderr, "fuzz_tcp: connected to a peer with a wrong hello or proof\n");
        abort();
    }
    harness_fds[0] = pe.fd;
    drive(tp, ep, &r);
    close(pe.lfd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in_t in = {data, size};
    uint8_t mode = fuzz_u8(&in);

    if (mode & 2) {
        fuzz_client(&in, mode);
    } else {
        fuzz_server(&in, mode);
    }
    return 0;
}
