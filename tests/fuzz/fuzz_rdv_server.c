/* libFuzzer harness: the rendezvous server (util/rdv_server.c) driven over
 * socketpairs, as dlaunch's event loop drives it.
 *
 * Input: a script of at most FUZZ_MAX_OPS operations on up to FUZZ_CONNS client
 * connections, each an opcode byte, a connection byte (k = byte % FUZZ_CONNS)
 * and the opcode's operands:
 *   op % 8 == 0  open connection k and read its HELLO
 *             1  authenticate k properly (the harness knows the job secret):
 *                next byte: rank (low 7 bits) and role (top bit: events)
 *             2  send k raw bytes: u16 length, then that many input bytes
 *             3  send k one well-formed request: type byte (SET/GET/ADD), id
 *                byte, wait byte, u8 key length + key, u16 value length + value
 *                (ADD's delta: the value's first 8 bytes)
 *             4  close k (both directions)
 *             5  shut k's write side (the server sees end of file)
 *             6  drain what the server sent k (replies, events)
 *             7  broadcast an event: u8 length + text (k unused)
 * The server's progress runs after every operation whose opcode byte has the
 * top bit clear (set: the next operations land in the same epoll batch, as
 * they may in a real loop). Replies are read and decoded like a client would,
 * and each must be well-formed. */
#include <errno.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "rdv.h"

#define FUZZ_CONNS 4
#define FUZZ_MAX_OPS 64

typedef struct client {
    int fd;        /* -1: not open */
    uint8_t nonce[DC_AUTH_NONCE_LEN];
    int have_hello;
    uint8_t in[DC_RDV_HDR_LEN + DC_RDV_MAX_FRAME];
    size_t in_len;
} client_t;

static client_t clients[FUZZ_CONNS];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_setup();
    return 0;
}

static void send_all(client_t *cl, const void *buf, size_t len)
{
    const uint8_t *p = buf;

    while (cl->fd >= 0 && len > 0) {
        ssize_t n = send(cl->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return; /* full or closed: the rest is dropped, like a stalled client's */
        }
        p += n;
        len -= (size_t)n;
    }
}

/* Reads what the server sent; every complete frame must decode. */
static void drain(client_t *cl)
{
    while (cl->fd >= 0) {
        ssize_t n;

        if (cl->in_len == sizeof(cl->in)) {
            abort(); /* holds any legal frame, and a longer one fails to decode */
        }
        n = recv(cl->fd, cl->in + cl->in_len, sizeof(cl->in) - cl->in_len, MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        cl->in_len += (size_t)n;
        for (;;) {
            dc_rdv_msg_t msg;
            size_t used;
            dc_status_t st = dc_rdv_msg_decode(cl->in, cl->in_len, DC_RDV_MAX_FRAME, &msg, &used);

            if (st == DCOMM_INPROGRESS) {
                break;
            }
            if (st != DCOMM_OK) {
                fprintf(stderr, "rdv server sent a malformed frame: %s\n", dc_error_get());
                abort();
            }
            if (msg.type == DC_RDV_MSG_HELLO) {
                memcpy(cl->nonce, msg.nonce, sizeof(cl->nonce));
                cl->have_hello = 1;
            }
            memmove(cl->in, cl->in + used, cl->in_len - used);
            cl->in_len -= used;
        }
    }
}

static void send_msg(client_t *cl, const dc_rdv_msg_t *msg)
{
    uint8_t buf[DC_RDV_HDR_LEN + 1024];
    size_t n = dc_rdv_msg_encode(msg, buf, sizeof(buf));

    if (n > 0) {
        send_all(cl, buf, n);
    }
}

static void op_open(dc_rdv_server_t *s, client_t *cl)
{
    int sv[2];

    if (cl->fd >= 0 ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
        return;
    }
    cl->fd = sv[0];
    cl->have_hello = 0;
    cl->in_len = 0;
    if (dc_rdv_server_add_conn(s, sv[1], "fuzz") != DCOMM_OK) {
        close(cl->fd);
        cl->fd = -1;
        return;
    }
    drain(cl);
}

static void op_auth(client_t *cl, uint8_t arg)
{
    dc_rdv_msg_t auth = {.type = DC_RDV_MSG_AUTH, .rank = arg & 0x7f,
                         .role = (arg & 0x80) ? DC_RDV_ROLE_EVENTS : DC_RDV_ROLE_STORE};

    if (cl->fd < 0 || !cl->have_hello) {
        return;
    }
    fuzz_rng_buf(auth.nonce, sizeof(auth.nonce));
    dc_rdv_client_mac(fuzz_rdv_secret, cl->nonce, auth.nonce, auth.rank, auth.role, auth.mac);
    send_msg(cl, &auth);
}

static void op_request(client_t *cl, fuzz_in_t *in)
{
    dc_rdv_msg_t m = {0};
    size_t klen, vlen;
    uint8_t type = fuzz_u8(in);

    m.type = (dc_rdv_msg_type_t)(DC_RDV_MSG_SET + type % 3);
    m.id = fuzz_u8(in);
    m.wait = fuzz_u8(in) & 1;
    m.key = (const char *)fuzz_bytes(in, fuzz_u8(in), &klen);
    m.key_len = klen;
    m.val = fuzz_bytes(in, fuzz_u16(in) % 1024, &vlen);
    m.val_len = vlen;
    if (m.type == DC_RDV_MSG_ADD) {
        int64_t delta = 0;

        memcpy(&delta, m.val, DC_MIN(vlen, sizeof(delta)));
        m.num = delta;
        m.val = NULL;
        m.val_len = 0;
    }
    send_msg(cl, &m); /* an invalid key (empty, NUL inside) does not encode: nothing sent */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in_t in = {data, size};
    dc_rdv_server_t *s = NULL;
    int ops_tail = 0;

    fuzz_rng_reset();
    if (dc_rdv_server_create("127.0.0.1", 0, fuzz_rdv_secret, &s) != DCOMM_OK) {
        fprintf(stderr, "rdv server: cannot create: %s\n", dc_error_get());
        abort();
    }
    for (int k = 0; k < FUZZ_CONNS; k++) {
        clients[k].fd = -1;
    }
    for (int ops = 0; in.left > 0 && ops < FUZZ_MAX_OPS; ops++) {
        uint8_t op = fuzz_u8(&in);
        client_t *cl = &clients[fuzz_u8(&in) % FUZZ_CONNS];
        size_t n;
        const uint8_t *p;

        switch (op % 8) {
        case 0:
            op_open(s, cl);
            break;
        case 1:
            op_auth(cl, fuzz_u8(&in));
            break;
        case 2:
            p = fuzz_bytes(&in, fuzz_u16(&in), &n);
            send_all(cl, p, n);
            break;
        case 3:
            op_request(cl, &in);
            break;
        case 4:
            if (cl->fd >= 0) {
                close(cl->fd);
                cl->fd = -1;
            }
            break;
        case 5:
            if (cl->fd >= 0) {
                shutdown(cl->fd, SHUT_WR);
            }
            break;
        case 6:
            drain(cl);
            break;
        default: {
            char text[256];

            p = fuzz_bytes(&in, fuzz_u8(&in), &n);
            memcpy(text, p, n);
            text[n] = '\0';
            dc_rdv_server_broadcast(s, text);
            break;
        }
        }
        for (int rounds = 0; !(op & 0x80) && rounds < 16; rounds++) {
            if (dc_rdv_server_progress(s) == 0) {
                break;
            }
        }
    }
    while (dc_rdv_server_progress(s) > 0 && ++ops_tail < 16) {
    }
    for (int k = 0; k < FUZZ_CONNS; k++) {
        drain(&clients[k]);
    }
    dc_rdv_server_destroy(s);
    for (int k = 0; k < FUZZ_CONNS; k++) {
        if (clients[k].fd >= 0) {
            close(clients[k].fd);
            clients[k].fd = -1;
        }
    }
    return 0;
}
