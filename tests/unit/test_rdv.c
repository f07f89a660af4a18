/* Rendezvous store: the wire codec against truncated, oversized and random input,
 * and a live server (in a thread running its event loop) with real clients:
 * set/get/wait/add, wrong secrets, garbage and silent connections, events. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "dc_time.h"
#include "log.h"
#include "rdv.h"

/* ---- Codec ------------------------------------------------------------------------ */

static size_t encode(const dc_rdv_msg_t *m, uint8_t *buf, size_t cap)
{
    size_t n = dc_rdv_msg_encode(m, buf, cap);

    assert_int_equal(n, dc_rdv_msg_size(m));
    assert_true(n > DC_RDV_HDR_LEN);
    return n;
}

static void test_proto_roundtrip(void **state)
{
    uint8_t buf[512];
    dc_rdv_msg_t in, out;
    size_t n, used;

    (void)state;
    in = (dc_rdv_msg_t){.type = DC_RDV_MSG_SET, .id = 7, .key = "addr/3", .key_len = 6,
                        .val = "10.0.0.2:5000", .val_len = 13};
    n = encode(&in, buf, sizeof(buf));
    assert_int_equal(dc_rdv_msg_decode(buf, n, DC_RDV_MAX_FRAME, &out, &used), DCOMM_OK);
    assert_int_equal(used, n);
    assert_int_equal(out.type, DC_RDV_MSG_SET);
    assert_int_equal(out.id, 7);
    assert_int_equal(out.key_len, 6);
    assert_memory_equal(out.key, "addr/3", 6);
    assert_int_equal(out.val_len, 13);
    assert_memory_equal(out.val, "10.0.0.2:5000", 13);

    in = (dc_rdv_msg_t){.type = DC_RDV_MSG_ADD, .id = 0xffffffffu, .key = "c", .key_len = 1,
                        .num = -123456789012345ll};
    n = encode(&in, buf, sizeof(buf));
    assert_int_equal(dc_rdv_msg_decode(buf, n, DC_RDV_MAX_FRAME, &out, &used), DCOMM_OK);
    assert_int_equal(out.num, -123456789012345ll);
    assert_int_equal(out.id, 0xffffffffu);

    in = (dc_rdv_msg_t){.type = DC_RDV_MSG_REPLY, .id = 3, .status = DCOMM_ERR_TIMEOUT,
                        .num = 42};
    n = encode(&in, buf, sizeof(buf));
    assert_int_equal(dc_rdv_msg_decode(buf, n, DC_RDV_MAX_FRAME, &out, &used), DCOMM_OK);
    assert_int_equal(out.status, DCOMM_ERR_TIMEOUT);
    assert_int_equal(out.num, 42);
    assert_int_equal(out.val_len, 0);

    in = (dc_rdv_msg_t){.type = DC_RDV_MSG_AUTH, .rank = -1, .role = DC_RDV_ROLE_EVENTS};
    memset(in.nonce, 0xab, sizeof(in.nonce));
    memset(in.mac, 0xcd, sizeof(in.mac));
    n = encode(&in, buf, sizeof(buf));
    assert_true(n <= DC_RDV_HDR_LEN + DC_RDV_MAX_AUTH_FRAME);
    assert_int_equal(dc_rdv_msg_decode(buf, n, DC_RDV_MAX_AUTH_FRAME, &out, &used), DCOMM_OK);
    assert_int_equal(out.rank, -1);
    assert_int_equal(out.role, DC_RDV_ROLE_EVENTS);
    assert_memory_equal(out.nonce, in.nonce, sizeof(in.nonce));
    assert_memory_equal(out.mac, in.mac, sizeof(in.mac));

    in = (dc_rdv_msg_t){.type = DC_RDV_MSG_HELLO, .version = DC_RDV_VERSION};
    n = encode(&in, buf, sizeof(buf));
    assert_int_equal(dc_rdv_msg_decode(buf, n, DC_RDV_MAX_AUTH_FRAME, &out, &used), DCOMM_OK);
    assert_int_equal(out.version, DC_RDV_VERSION);
    /* Two frames back to back: the first is decoded, used says where the next starts. */
    memcpy(buf + n, buf, n);
    assert_int_equal(dc_rdv_msg_decode(buf, 2 * n, DC_RDV_MAX_FRAME, &out, &used), DCOMM_OK);
    assert_int_equal(used, n);
}

static void test_proto_truncated(void **state)
{
    dc_rdv_msg_t in = {.type = DC_RDV_MSG_SET, .id = 1, .key = "key", .key_len = 3,
                       .val = "value", .val_len = 5};
    dc_rdv_msg_t out;
    uint8_t buf[128];
    size_t n, used = 999;

    (void)state;
    n = encode(&in, buf, sizeof(buf));
    for (size_t len = 0; len < n; len++) {
        assert_int_equal(dc_rdv_msg_decode(buf, len, DC_RDV_MAX_FRAME, &out, &used),
                         DCOMM_INPROGRESS);
        assert_int_equal(used, 999); /* untouched */
    }
    /* The encoder refuses a buffer one byte short. */
    assert_int_equal(dc_rdv_msg_encode(&in, buf, n - 1), 0);
    /* A frame whose inner key length runs past the frame's end. */
    n = encode(&in, buf, sizeof(buf));
    buf[DC_RDV_HDR_LEN + 1 + 4 + 1] = 200; /* key length low byte */
    assert_int_equal(dc_rdv_msg_decode(buf, n, DC_RDV_MAX_FRAME, &out, &used),
                     DCOMM_ERR_INVALID_ARG);
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void test_proto_oversized(void **state)
{
    char key[DC_RDV_MAX_KEY + 2];
    uint8_t buf[1024];
    dc_rdv_msg_t m, out;
    size_t n, used;

    (void)state;
    /* Frame lengths beyond the caller's cap or the protocol's are refused at once,
     * before the body arrives. */
    put_be32(buf, DC_RDV_MAX_AUTH_FRAME + 1);
    buf[4] = DC_RDV_MSG_AUTH;
    assert_int_equal(dc_rdv_msg_decode(buf, 5, DC_RDV_MAX_AUTH_FRAME, &out, &used),
                     DCOMM_ERR_INVALID_ARG);
    put_be32(buf, 0xffffffffu);
    assert_int_equal(dc_rdv_msg_decode(buf, 5, SIZE_MAX, &out, &used), DCOMM_ERR_INVALID_ARG);
    put_be32(buf, 0);
    assert_int_equal(dc_rdv_msg_decode(buf, 5, DC_RDV_MAX_FRAME, &out, &used),
                     DCOMM_ERR_INVALID_ARG);

    /* Keys: 1..256 bytes, no NUL. */
    memset(key, 'k', sizeof(key));
    m = (dc_rdv_msg_t){.type = DC_RDV_MSG_GET, .key = key, .key_len = DC_RDV_MAX_KEY};
    assert_true(dc_rdv_msg_encode(&m, buf, sizeof(buf)) > 0);
    m.key_len = DC_RDV_MAX_KEY + 1;
    assert_int_equal(dc_rdv_msg_size(&m), 0);
    assert_int_equal(dc_rdv_msg_encode(&m, buf, sizeof(buf)), 0);
    m.key_len = 0;
    assert_int_equal(dc_rdv_msg_encode(&m, buf, sizeof(buf)), 0);

    /* A hand-made GET with a 257-byte key. */
    n = 0;
    put_be32(buf, 1 + 4 + 1 + 2 + DC_RDV_MAX_KEY + 1);
    n = 4;
    buf[n++] = DC_RDV_MSG_GET;
    memset(buf + n, 0, 5);
    n += 5;
    buf[n++] = (uint8_t)((DC_RDV_MAX_KEY + 1) >> 8);
    buf[n++] = (uint8_t)(DC_RDV_MAX_KEY + 1);
    memset(buf + n, 'k', DC_RDV_MAX_KEY + 1);
    n += DC_RDV_MAX_KEY + 1;
    assert_int_equal(dc_rdv_msg_decode(buf, n, DC_RDV_MAX_FRAME, &out, &used),
                     DCOMM_ERR_INVALID_ARG);
    assert_non_null(strstr(dc_error_get(), "key length"));

    /* A SET declaring a value over 1 MiB inside a small frame. */
    m = (dc_rdv_msg_t){.type = DC_RDV_MSG_SET, .key = "k", .key_len = 1, .val = "v",
                       .val_len = 1};
    n = encode(&m, buf, sizeof(buf));
    put_be32(buf + n - 1 - 4, DC_RDV_MAX_VALUE + 1);
    assert_int_equal(dc_rdv_msg_decode(buf, n, DC_RDV_MAX_FRAME, &out, &used),
                     DCOMM_ERR_INVALID_ARG);
    assert_non_null(strstr(dc_error_get(), "value too long"));
    m.val_len = DC_RDV_MAX_VALUE + 1;
    assert_int_equal(dc_rdv_msg_size(&m), 0);
}

static void test_proto_garbage(void **state)
{
    dc_rdv_msg_t m = {.type = DC_RDV_MSG_GET, .key = "a\0b", .key_len = 3};
    uint8_t buf[600];
    dc_rdv_msg_t out;
    size_t n, used;

    (void)state;
    /* Key with a NUL, unknown type, trailing bytes, unknown role, bad magic. */
    assert_int_equal(dc_rdv_msg_encode(&m, buf, sizeof(buf)), 0);
    m.key = "ab";
    m.key_len = 2;
    n = encode(&m, buf, sizeof(buf));
    buf[n - 1] = '\0';
    assert_int_equal(dc_rdv_msg_decode(buf, n, DC_RDV_MAX_FRAME, &out, &used),
                     DCOMM_ERR_INVALID_ARG);
    buf[4] = 99;
    assert_int_equal(dc_rdv_msg_decode(buf, n, DC_RDV_MAX_FRAME, &out, &used),
                     DCOMM_ERR_INVALID_ARG);
    n = encode(&m, buf, sizeof(buf));
    put_be32(buf, (uint32_t)(n - DC_RDV_HDR_LEN + 1));
    buf[n] = 0;
    assert_int_equal(dc_rdv_msg_decode(buf, n + 1, DC_RDV_MAX_FRAME, &out, &used),
                     DCOMM_ERR_INVALID_ARG);
    assert_non_null(strstr(dc_error_get(), "trailing"));
    m = (dc_rdv_msg_t){.type = DC_RDV_MSG_AUTH, .role = 1};
    n = encode(&m, buf, sizeof(buf));
    buf[DC_RDV_HDR_LEN + 1 + 4] = 7;
    assert_int_equal(dc_rdv_msg_decode(buf, n, DC_RDV_MAX_FRAME, &out, &used),
                     DCOMM_ERR_INVALID_ARG);
    m = (dc_rdv_msg_t){.type = DC_RDV_MSG_HELLO};
    n = encode(&m, buf, sizeof(buf));
    buf[DC_RDV_HDR_LEN + 1] ^= 1;
    assert_int_equal(dc_rdv_msg_decode(buf, n, DC_RDV_MAX_FRAME, &out, &used),
                     DCOMM_ERR_INVALID_ARG);

    /* Random frames with plausible lengths: every answer is one of the three, and
     * a decoded frame never claims more bytes than given (ASan checks the reads). */
    srand(12345);
    for (int iter = 0; iter < 200000; iter++) {
        size_t len = (size_t)(rand() % 80);
        uint8_t *frame = malloc(len + 1);
        dc_status_t status;

        for (size_t i = 0; i < len; i++) {
            frame[i] = (uint8_t)rand();
        }
        if (len >= 5) {
            put_be32(frame, (uint32_t)(len - 4 - (size_t)(rand() % 3)));
            frame[4] = (uint8_t)(1 + rand() % 9);
        }
        status = dc_rdv_msg_decode(frame, len, DC_RDV_MAX_FRAME, &out, &used);
        assert_true(status == DCOMM_OK || status == DCOMM_INPROGRESS ||
                    status == DCOMM_ERR_INVALID_ARG);
        if (status == DCOMM_OK) {
            assert_true(used <= len);
            if (out.key_len > 0) {
                assert_true((const uint8_t *)out.key + out.key_len <= frame + len);
            }
            if (out.val_len > 0) {
                assert_true((const uint8_t *)out.val + out.val_len <= frame + len);
            }
        }
        free(frame);
    }
}

/* ---- Live server ------------------------------------------------------------------- */

typedef struct command {
    char op; /* 'q' quit, 'e' broadcast text, 'f' fail the job with text */
    char text[120];
} command_t;

typedef struct server_ctx {
    dc_rdv_server_t *srv;
    int ctl[2];
    pthread_t thread;
    char addr[64];
    uint8_t secret[DC_AUTH_SECRET_LEN];
} server_ctx_t;

static void *server_main(void *arg)
{
    server_ctx_t *ctx = arg;

    for (;;) {
        struct pollfd p[2] = {{.fd = dc_rdv_server_fd(ctx->srv), .events = POLLIN},
                              {.fd = ctx->ctl[0], .events = POLLIN}};
        int t = dc_rdv_server_timeout_ms(ctx->srv);
        command_t cmd;

        poll(p, 2, t < 0 ? 1000 : t);
        if (p[1].revents && read(ctx->ctl[0], &cmd, sizeof(cmd)) == (ssize_t)sizeof(cmd)) {
            if (cmd.op == 'q') {
                return NULL;
            }
            if (cmd.op == 'f') {
                dc_rdv_server_fail(ctx->srv, cmd.text);
            } else {
                dc_rdv_server_broadcast(ctx->srv, cmd.text);
            }
        }
        dc_rdv_server_progress(ctx->srv);
    }
}

static int server_setup(void **state)
{
    server_ctx_t *ctx = calloc(1, sizeof(*ctx));

    dc_log_set_level(DC_LOG_LEVEL_NONE); /* the drops below are expected */
    dc_auth_random(ctx->secret, sizeof(ctx->secret));
    assert_int_equal(dc_rdv_server_create("127.0.0.1", 0, ctx->secret, &ctx->srv), DCOMM_OK);
    snprintf(ctx->addr, sizeof(ctx->addr), "127.0.0.1:%d", dc_rdv_server_port(ctx->srv));
    assert_int_equal(pipe(ctx->ctl), 0);
    assert_int_equal(pthread_create(&ctx->thread, NULL, server_main, ctx), 0);
    *state = ctx;
    return 0;
}

static void server_command(server_ctx_t *ctx, char op, const char *text)
{
    command_t cmd = {.op = op};

    snprintf(cmd.text, sizeof(cmd.text), "%s", text);
    assert_int_equal(write(ctx->ctl[1], &cmd, sizeof(cmd)), sizeof(cmd));
}

static int server_teardown(void **state)
{
    server_ctx_t *ctx = *state;

    server_command(ctx, 'q', "");
    pthread_join(ctx->thread, NULL);
    dc_rdv_server_destroy(ctx->srv);
    close(ctx->ctl[0]);
    close(ctx->ctl[1]);
    free(ctx);
    return 0;
}

static dc_store_t *open_client(server_ctx_t *ctx, int rank)
{
    dc_store_t *store = NULL;

    assert_int_equal(dc_rdv_client_open(ctx->addr, ctx->secret, rank, 5000, &store), DCOMM_OK);
    return store;
}

typedef struct delayed_set {
    dc_store_t *store;
    const char *key;
    const char *val;
    int delay_ms;
} delayed_set_t;

static void *delayed_set_main(void *arg)
{
    delayed_set_t *d = arg;

    dc_sleep_ns((uint64_t)d->delay_ms * 1000000ull);
    assert_int_equal(dc_store_set(d->store, d->key, d->val, strlen(d->val)), DCOMM_OK);
    return NULL;
}

static void test_server_set_get_wait(void **state)
{
    server_ctx_t *ctx = *state;
    dc_store_t *a = open_client(ctx, 0), *b = open_client(ctx, 1);
    delayed_set_t d = {.store = b, .key = "late", .val = "here", .delay_ms = 200};
    char buf[64] = {0};
    size_t len = 0;
    uint64_t t0;
    pthread_t th;

    assert_string_equal(dc_rdv_client_local_addr(a), "127.0.0.1");
    assert_int_equal(dc_store_set(a, "addr/0", "hello", 5), DCOMM_OK);
    assert_int_equal(dc_store_get(b, "addr/0", buf, sizeof(buf), &len, 1000), DCOMM_OK);
    assert_int_equal(len, 5);
    assert_memory_equal(buf, "hello", 5);
    /* Overwrite; a short buffer gets a prefix and the full length. */
    assert_int_equal(dc_store_set(a, "addr/0", "0123456789", 10), DCOMM_OK);
    assert_int_equal(dc_store_get(b, "addr/0", buf, 4, &len, 0), DCOMM_OK);
    assert_int_equal(len, 10);
    assert_memory_equal(buf, "0123", 4);
    /* Empty value. */
    assert_int_equal(dc_store_set(a, "empty", NULL, 0), DCOMM_OK);
    assert_int_equal(dc_store_get(b, "empty", buf, sizeof(buf), &len, 0), DCOMM_OK);
    assert_int_equal(len, 0);

    /* A missing key: no wait gives TIMEOUT at once; a wait times out on time. */
    assert_int_equal(dc_store_get(a, "missing", buf, sizeof(buf), &len, 0), DCOMM_ERR_TIMEOUT);
    t0 = dc_now_ns();
    assert_int_equal(dc_store_get(a, "missing", buf, sizeof(buf), &len, 300), DCOMM_ERR_TIMEOUT);
    assert_true(dc_now_ns() - t0 >= 290000000ull);
    assert_true(dc_now_ns() - t0 < 3000000000ull);
    /* The timed-out request's late reply does not confuse the next one. */
    assert_int_equal(dc_store_set(b, "missing", "now", 3), DCOMM_OK);
    assert_int_equal(dc_store_get(a, "addr/0", buf, sizeof(buf), &len, 1000), DCOMM_OK);
    assert_int_equal(len, 10);

    /* A blocked get wakes when another client sets the key. */
    t0 = dc_now_ns();
    assert_int_equal(pthread_create(&th, NULL, delayed_set_main, &d), 0);
    assert_int_equal(dc_store_get(a, "late", buf, sizeof(buf), &len, 5000), DCOMM_OK);
    assert_int_equal(len, 4);
    assert_memory_equal(buf, "here", 4);
    assert_true(dc_now_ns() - t0 >= 150000000ull);
    pthread_join(th, NULL);

    /* Bad arguments are refused by the client. */
    assert_int_equal(dc_store_set(a, "", "x", 1), DCOMM_ERR_INVALID_ARG);
    char longkey[DC_RDV_MAX_KEY + 2];
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    assert_int_equal(dc_store_set(a, longkey, "x", 1), DCOMM_ERR_INVALID_ARG);
    dc_store_barrier(a, "end", 1, 1000);
    a->ops->close(a);
    b->ops->close(b);
}

static void test_server_big_value(void **state)
{
    server_ctx_t *ctx = *state;
    dc_store_t *a = open_client(ctx, 0), *b = open_client(ctx, 1);
    uint8_t *val = malloc(DC_RDV_MAX_VALUE + 1), *got = malloc(DC_RDV_MAX_VALUE);
    size_t len = 0;

    for (size_t i = 0; i <= DC_RDV_MAX_VALUE; i++) {
        val[i] = (uint8_t)(i * 31 + 7);
    }
    assert_int_equal(dc_store_set(a, "big", val, DC_RDV_MAX_VALUE), DCOMM_OK);
    assert_int_equal(dc_store_get(b, "big", got, DC_RDV_MAX_VALUE, &len, 1000), DCOMM_OK);
    assert_int_equal(len, DC_RDV_MAX_VALUE);
    assert_memory_equal(got, val, DC_RDV_MAX_VALUE);
    assert_int_equal(dc_store_set(a, "big", val, DC_RDV_MAX_VALUE + 1), DCOMM_ERR_INVALID_ARG);
    free(val);
    free(got);
    a->ops->close(a);
    b->ops->close(b);
}

typedef struct adder {
    server_ctx_t *ctx;
    int rank;
} adder_t;

static void *adder_main(void *arg)
{
    adder_t *ad = arg;
    dc_store_t *s = open_client(ad->ctx, ad->rank);
    int64_t v;

    for (int i = 0; i < 100; i++) {
        assert_int_equal(dc_store_add(s, "counter", 1, &v), DCOMM_OK);
    }
    assert_int_equal(dc_store_barrier(s, "adders", 4, 10000), DCOMM_OK);
    s->ops->close(s);
    return NULL;
}

static void test_server_add(void **state)
{
    server_ctx_t *ctx = *state;
    dc_store_t *s = open_client(ctx, 0);
    adder_t ads[4];
    pthread_t th[4];
    char buf[32] = {0};
    size_t len;
    int64_t v = 0;

    for (int i = 0; i < 4; i++) {
        ads[i] = (adder_t){.ctx = ctx, .rank = i};
        assert_int_equal(pthread_create(&th[i], NULL, adder_main, &ads[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
    }
    assert_int_equal(dc_store_add(s, "counter", 0, &v), DCOMM_OK);
    assert_int_equal(v, 400);
    assert_int_equal(dc_store_add(s, "counter", -401, &v), DCOMM_OK);
    assert_int_equal(v, -1);
    /* A counter reads as decimal text. */
    assert_int_equal(dc_store_get(s, "counter", buf, sizeof(buf) - 1, &len, 0), DCOMM_OK);
    assert_string_equal(buf, "-1");
    /* Adding to a non-integer and overflowing are refused. */
    assert_int_equal(dc_store_set(s, "text", "abc", 3), DCOMM_OK);
    assert_int_equal(dc_store_add(s, "text", 1, &v), DCOMM_ERR_INVALID_ARG);
    assert_int_equal(dc_store_add(s, "max", INT64_MAX, &v), DCOMM_OK);
    assert_int_equal(dc_store_add(s, "max", 1, &v), DCOMM_ERR_INVALID_ARG);
    /* The connection still works after refused requests. */
    assert_int_equal(dc_store_add(s, "max", -1, &v), DCOMM_OK);
    assert_int_equal(v, INT64_MAX - 1);
    s->ops->close(s);
}

static void test_server_wrong_secret(void **state)
{
    server_ctx_t *ctx = *state;
    uint8_t wrong[DC_AUTH_SECRET_LEN];
    dc_store_t *store = NULL;
    int fd = -1;

    memcpy(wrong, ctx->secret, sizeof(wrong));
    wrong[5] ^= 0x40;
    assert_int_equal(dc_rdv_client_open(ctx->addr, wrong, 0, 3000, &store), DCOMM_ERR_AUTH);
    assert_null(store);
    assert_int_equal(dc_rdv_events_open(ctx->addr, wrong, 0, 3000, &fd), DCOMM_ERR_AUTH);
    assert_int_equal(fd, -1);
    /* Nobody listening: an error after the timeout, not a hang. */
    assert_int_not_equal(dc_rdv_client_open("127.0.0.1:1", ctx->secret, 0, 300, &store),
                         DCOMM_OK);
    assert_int_equal(dc_rdv_client_open("nonsense", ctx->secret, 0, 300, &store),
                     DCOMM_ERR_INVALID_ARG);
    store = open_client(ctx, 0);
    store->ops->close(store);
}

static int raw_connect(server_ctx_t *ctx)
{
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_port = htons((uint16_t)dc_rdv_server_port(ctx->srv))};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    return fd;
}

/* Reads until the server closes (1) or timeout_ms passes (0). */
static int closed_within(int fd, int timeout_ms)
{
    uint64_t deadline = dc_deadline_ms(timeout_ms);
    char buf[256];

    while (dc_now_ns() < deadline) {
        struct pollfd p = {.fd = fd, .events = POLLIN};

        if (poll(&p, 1, 50) > 0) {
            ssize_t n = recv(fd, buf, sizeof(buf), 0);

            if (n == 0 || (n < 0 && errno == ECONNRESET)) {
                return 1;
            }
        }
    }
    return 0;
}

static void test_server_garbage_dropped(void **state)
{
    server_ctx_t *ctx = *state;
    dc_store_t *good = open_client(ctx, 0);
    int garbage = raw_connect(ctx), huge = raw_connect(ctx), silent = raw_connect(ctx);
    uint8_t junk[64], big[8] = {0x7f, 0xff, 0xff, 0xff, DC_RDV_MSG_AUTH};
    char buf[16];
    size_t len;
    int64_t v;

    for (size_t i = 0; i < sizeof(junk); i++) {
        junk[i] = (uint8_t)(i * 37 + 1);
    }
    junk[0] = junk[1] = junk[2] = 0; /* a plausible small length, then nonsense */
    junk[3] = 20;
    assert_int_equal(send(garbage, junk, sizeof(junk), 0), sizeof(junk));
    assert_int_equal(send(huge, big, sizeof(big), 0), sizeof(big));
    assert_true(closed_within(garbage, 2000));
    assert_true(closed_within(huge, 2000));
    /* Meanwhile the good client is served. */
    assert_int_equal(dc_store_set(good, "still", "ok", 2), DCOMM_OK);
    assert_int_equal(dc_store_get(good, "still", buf, sizeof(buf), &len, 1000), DCOMM_OK);
    /* A connection that never answers the challenge is dropped after ~5 s, while the
     * good client keeps working. */
    assert_false(closed_within(silent, 500));
    assert_int_equal(dc_store_add(good, "n", 1, &v), DCOMM_OK);
    assert_true(closed_within(silent, 8000));
    assert_int_equal(dc_store_add(good, "n", 1, &v), DCOMM_OK);
    assert_int_equal(v, 2);
    close(garbage);
    close(huge);
    close(silent);
    good->ops->close(good);
}

static void test_server_events(void **state)
{
    server_ctx_t *ctx = *state;
    char msg[128];
    int fd1 = -1, fd2 = -1, rc = 0;
    uint64_t deadline;

    assert_int_equal(dc_rdv_events_open(ctx->addr, ctx->secret, 1, 3000, &fd1), DCOMM_OK);
    assert_int_equal(dc_rdv_events_open(ctx->addr, ctx->secret, 2, 3000, &fd2), DCOMM_OK);
    assert_int_equal(dc_rdv_events_read(fd1, msg, sizeof(msg)), 0);
    server_command(ctx, 'e', "rank 2 killed by signal 9 (Killed)");
    for (int i = 0; i < 2; i++) {
        int fd = i == 0 ? fd1 : fd2;

        deadline = dc_deadline_ms(3000);
        while ((rc = dc_rdv_events_read(fd, msg, sizeof(msg))) == 0 && dc_now_ns() < deadline) {
            struct pollfd p = {.fd = fd, .events = POLLIN};

            poll(&p, 1, 100);
        }
        assert_int_equal(rc, 1);
        assert_string_equal(msg, "rank 2 killed by signal 9 (Killed)");
    }
    /* Truncation to the caller's buffer. */
    server_command(ctx, 'e', "0123456789");
    deadline = dc_deadline_ms(3000);
    while ((rc = dc_rdv_events_read(fd1, msg, 5)) == 0 && dc_now_ns() < deadline) {
        dc_sleep_ns(10000000);
    }
    assert_int_equal(rc, 1);
    assert_string_equal(msg, "0123");
    close(fd1);
    close(fd2);
}

/* A failed job (dlaunch saw a rank die) answers every waiting get, and every
 * later get of a key nobody set, with PEER_LOST and the cause at once: a rank
 * still starting up never waits out its start timeout for a dead peer. */
static void *fail_later(void *arg)
{
    dc_sleep_ns(300000000);
    server_command(arg, 'f', "rank 0 killed by signal 9 (Killed)");
    return NULL;
}

static void test_server_fail(void **state)
{
    server_ctx_t *ctx = *state;
    dc_store_t *a = open_client(ctx, 1), *b = open_client(ctx, 2);
    char buf[64];
    size_t len;
    uint64_t t0;
    pthread_t th;

    assert_int_equal(dc_store_set(a, "there", "1", 1), DCOMM_OK);
    /* b waits for a key rank 0 would have set; the job fails meanwhile. */
    assert_int_equal(pthread_create(&th, NULL, fail_later, ctx), 0);
    t0 = dc_now_ns();
    assert_int_equal(dc_store_get(b, "host/0", buf, sizeof(buf), &len, 20000),
                     DCOMM_ERR_PEER_LOST);
    assert_true(dc_now_ns() - t0 < 5000000000ull);
    assert_non_null(strstr(dc_error_get(), "rank 0 killed by signal 9"));
    pthread_join(th, NULL);
    /* What is there can still be read; a get that would wait fails at once. */
    assert_int_equal(dc_store_get(b, "there", buf, sizeof(buf), &len, 1000), DCOMM_OK);
    t0 = dc_now_ns();
    assert_int_equal(dc_store_get(a, "never", buf, sizeof(buf), &len, 20000),
                     DCOMM_ERR_PEER_LOST);
    assert_true(dc_now_ns() - t0 < 5000000000ull);
    a->ops->close(a);
    b->ops->close(b);
}

static void test_events_peer_lost(void **state)
{
    uint8_t secret[DC_AUTH_SECRET_LEN];
    dc_rdv_server_t *srv;
    server_ctx_t *ctx;
    char addr[64], msg[64];
    dc_store_t *store = NULL;
    uint64_t deadline;
    int fd = -1, rc;

    (void)state;
    dc_auth_random(secret, sizeof(secret));
    assert_int_equal(dc_rdv_server_create("127.0.0.1", 0, secret, &srv), DCOMM_OK);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", dc_rdv_server_port(srv));
    /* Nobody runs this server's loop: the client times out instead of hanging. */
    assert_int_equal(dc_rdv_events_open(addr, secret, 0, 200, &fd), DCOMM_ERR_TIMEOUT);
    assert_int_equal(dc_rdv_client_open(addr, secret, 0, 200, &store), DCOMM_ERR_TIMEOUT);
    dc_rdv_server_destroy(srv);

    /* With a running server: ranks seen, then the launcher going away. */
    server_setup((void **)&ctx);
    store = open_client(ctx, 3);
    assert_int_equal(dc_rdv_events_open(ctx->addr, ctx->secret, 1, 3000, &fd), DCOMM_OK);
    server_command(ctx, 'q', "");
    pthread_join(ctx->thread, NULL);
    assert_int_equal(dc_rdv_server_ranks_seen(ctx->srv, 4), 2);
    assert_int_equal(dc_rdv_server_ranks_seen(ctx->srv, 2), 1);
    dc_rdv_server_destroy(ctx->srv);
    deadline = dc_deadline_ms(3000);
    while ((rc = dc_rdv_events_read(fd, msg, sizeof(msg))) == 0 && dc_now_ns() < deadline) {
        dc_sleep_ns(10000000);
    }
    assert_int_equal(rc, DCOMM_ERR_PEER_LOST);
    assert_int_equal(dc_store_set(store, "k", "v", 1), DCOMM_ERR_PEER_LOST);
    assert_int_equal(dc_store_set(store, "k", "v", 1), DCOMM_ERR_PEER_LOST);
    store->ops->close(store);
    close(fd);
    close(ctx->ctl[0]);
    close(ctx->ctl[1]);
    free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_proto_roundtrip),
        cmocka_unit_test(test_proto_truncated),
        cmocka_unit_test(test_proto_oversized),
        cmocka_unit_test(test_proto_garbage),
        cmocka_unit_test_setup_teardown(test_server_set_get_wait, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_server_big_value, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_server_add, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_server_wrong_secret, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_server_garbage_dropped, server_setup,
                                        server_teardown),
        cmocka_unit_test_setup_teardown(test_server_events, server_setup, server_teardown),
        cmocka_unit_test_setup_teardown(test_server_fail, server_setup, server_teardown),
        cmocka_unit_test(test_events_peer_lost),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
