/*
 * Tests of the tcp transport's encrypted records: sealing and opening on their
 * own (every changed byte, replay, reordering, another key or cipher fails),
 * and a client that knows the secret sending rank 1 tampered records over a
 * real connection (tcp_procs.c): the receive fails with DCOMM_ERR_AUTH, or
 * PEER_LOST for a truncated stream, and no changed byte is delivered.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tcp_procs.h"

/* ---- encrypted streams ------------------------------------------------------------ */

/* Records on their own: round trip, every single-byte change anywhere in a
 * record fails, so do replay, reordering and another key; a partial record
 * asks for more; lengths out of range are refused before anything is read. */
static void records_check(int aes)
{
    static dc_tcp_crypt_t tx, rx, other, wrong_cipher;
    static uint8_t plain[DC_TCP_REC_MAX], rec[3][DC_TCP_REC_MAX + DC_TCP_REC_OVERHEAD];
    static uint8_t out[DC_TCP_REC_MAX], key[DC_AUTH_KEY_LEN];
    size_t lens[3] = {1, 1000, DC_TCP_REC_MAX}, reclen[3], plen, used;

    memset(key, 0x42, sizeof(key));
    dc_tcp_crypt_init(&tx, key, aes);
    dc_tcp_crypt_init(&rx, key, aes);
    dc_tcp_crypt_init(&wrong_cipher, key, !aes);
    assert_int_equal(tx.aes, aes);
    key[0] ^= 1;
    dc_tcp_crypt_init(&other, key, aes);
    for (size_t i = 0; i < sizeof(plain); i++) {
        plain[i] = (uint8_t)(i * 7 + 3);
    }
    for (int i = 0; i < 3; i++) {
        reclen[i] = dc_tcp_record_seal(&tx, plain, lens[i], rec[i]);
        assert_int_equal(reclen[i], lens[i] + DC_TCP_REC_OVERHEAD);
        /* Ciphertext, not the plaintext. */
        assert_true(lens[i] < 16 || memcmp(rec[i] + DC_TCP_REC_HDR, plain, 16) != 0);
    }
    assert_int_equal(tx.seq, 3);

    /* Partial: more needed, nothing consumed. */
    for (size_t avail = 0; avail < reclen[1]; avail += 97) {
        assert_int_equal(dc_tcp_record_open(&rx, rec[1], avail, out, sizeof(out), &plen, &used),
                         0);
    }
    /* Out of order (record 1 first), and another key. */
    assert_int_equal(dc_tcp_record_open(&rx, rec[1], reclen[1], out, sizeof(out), &plen, &used),
                     DCOMM_ERR_AUTH);
    assert_non_null(strstr(dc_error_get(), "failed authentication"));
    assert_int_equal(dc_tcp_record_open(&other, rec[0], reclen[0], out, sizeof(out), &plen,
                                        &used), DCOMM_ERR_AUTH);
    if (dc_tcp_aes_available()) { /* the same key under the other cipher */
        assert_int_equal(dc_tcp_record_open(&wrong_cipher, rec[0], reclen[0], out, sizeof(out),
                                            &plen, &used), DCOMM_ERR_AUTH);
    }
    assert_int_equal(rx.seq, 0);
    /* Every byte of record 0 flipped in turn: never opens (a changed length
     * may also just ask for bytes that never come). */
    for (size_t i = 0; i < reclen[0]; i++) {
        int rc;

        rec[0][i] ^= 0x01;
        rc = dc_tcp_record_open(&rx, rec[0], reclen[0], out, sizeof(out), &plen, &used);
        assert_true(i < DC_TCP_REC_HDR ? rc != 1 && rc <= 0 : rc == DCOMM_ERR_AUTH);
        rec[0][i] ^= 0x01;
    }
    /* Room too small for the plaintext. */
    assert_int_equal(dc_tcp_record_open(&rx, rec[0], reclen[0], out, 0, &plen, &used),
                     DCOMM_ERR_INVALID_ARG);
    /* In order: each opens once; a replay fails. */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(dc_tcp_record_open(&rx, rec[i], reclen[i], out, sizeof(out), &plen,
                                            &used), 1);
        assert_int_equal(plen, lens[i]);
        assert_int_equal(used, reclen[i]);
        assert_memory_equal(out, plain, lens[i]);
    }
    assert_int_equal(dc_tcp_record_open(&rx, rec[2], reclen[2], out, sizeof(out), &plen, &used),
                     DCOMM_ERR_AUTH);
    /* Lengths 0 and over the maximum: refused from the header alone. */
    dc_tcp_put_u32(rec[0], 0);
    assert_int_equal(dc_tcp_record_open(&rx, rec[0], DC_TCP_REC_HDR, out, sizeof(out), &plen,
                                        &used), DCOMM_ERR_AUTH);
    dc_tcp_put_u32(rec[0], DC_TCP_REC_MAX + 1);
    assert_int_equal(dc_tcp_record_open(&rx, rec[0], DC_TCP_REC_HDR, out, sizeof(out), &plen,
                                        &used), DCOMM_ERR_AUTH);
    assert_non_null(strstr(dc_error_get(), "out of range"));
    dc_tcp_put_u32(rec[0], 0xffffffffu);
    assert_int_equal(dc_tcp_record_open(&rx, rec[0], DC_TCP_REC_HDR, out, sizeof(out), &plen,
                                        &used), DCOMM_ERR_AUTH);
}

static void test_records(void **state)
{
    (void)state;
    records_check(0); /* ChaCha20-Poly1305 */
    if (dc_tcp_aes_available()) {
        records_check(1); /* AES-256-GCM */
    } else {
        printf("[          ] no AES-NI: AES-256-GCM records not tested\n");
    }
}

/* A man in the middle that knows the secret's handshake (here: a client that
 * has the secret, standing in for one that rewrites a real stream) sends rank 1
 * valid records, then a broken one; rank 1 must fail the receive with
 * DCOMM_ERR_AUTH naming rank 0, and never deliver changed bytes. */
typedef enum { TAMPER_FLIP, TAMPER_REPLAY, TAMPER_REORDER, TAMPER_LENGTH, TAMPER_TRUNCATE,
               TAMPER_NCASES } tamper_t;

static tamper_t tamper_case;
static int tamper_aes; /* the client offers AES-256-GCM */
static const char marker[] = "plaintext marker 0123456789";

/* A message {tag, 4-byte value} sealed as one record. */
static size_t seal_msg(dc_tcp_crypt_t *c, uint64_t tag, int32_t value, uint8_t *out)
{
    uint8_t plain[DC_TCP_HDR_LEN + 4];

    dc_tcp_put_u64(plain, tag);
    dc_tcp_put_u64(plain + 8, 4);
    memcpy(plain + DC_TCP_HDR_LEN, &value, 4);
    return dc_tcp_record_seal(c, plain, sizeof(plain), out);
}

static void tamper_client(rank_ctx_t *ctx)
{
    uint8_t hello[DC_TCP_HELLO_LEN], answer[DC_TCP_ANSWER_LEN], proof[DC_TCP_PROOF_LEN];
    uint8_t c2s[DC_AUTH_KEY_LEN], s2c[DC_AUTH_KEY_LEN], rec[3][64], in[256], out[256];
    static dc_tcp_crypt_t tx, rx;
    size_t len[3], got = 0, plen = 0, used = 0;
    int fd = raw_connect(ctx, 1);

    CHECK(recv(fd, hello, sizeof(hello), MSG_WAITALL) == (ssize_t)sizeof(hello));
    CHECK(dc_tcp_get_u32(hello + 12) & DC_TCP_FLAG_ENCRYPT);
    forge_answer_flags(hello, test_secret, 0, 1,
                       DC_TCP_FLAG_ENCRYPT | (tamper_aes ? DC_TCP_FLAG_AESGCM : 0), answer);
    CHECK(send(fd, answer, sizeof(answer), MSG_NOSIGNAL) == (ssize_t)sizeof(answer));
    CHECK(recv(fd, proof, sizeof(proof), MSG_WAITALL) == (ssize_t)sizeof(proof));
    CHECK(dc_auth_verify(test_secret, DC_TCP_LABEL_SERVER, answer + 16, DC_AUTH_NONCE_LEN,
                         hello, sizeof(hello), proof));
    dc_auth_session_keys(test_secret, DC_TCP_LABEL_C2S, DC_TCP_LABEL_S2C, hello, sizeof(hello),
                         answer, sizeof(answer), c2s, s2c);
    dc_tcp_crypt_init(&tx, c2s, tamper_aes);
    dc_tcp_crypt_init(&rx, s2c, tamper_aes);

    /* Rank 1's message arrives sealed under the server-to-client key: the
     * marker is not on the wire, and opens from it. */
    while (plen == 0) {
        ssize_t n = recv(fd, in + got, sizeof(in) - got, 0);
        int rc;

        CHECK(n > 0);
        got += (size_t)n;
        rc = dc_tcp_record_open(&rx, in, got, out, sizeof(out), &plen, &used);
        CHECK(rc >= 0);
    }
    CHECK(memmem(in, got, marker, sizeof(marker) - 1) == NULL);
    CHECK_EQ(plen, DC_TCP_HDR_LEN + sizeof(marker));
    CHECK_EQ(dc_tcp_get_u64(out), 9);
    CHECK(memcmp(out + DC_TCP_HDR_LEN, marker, sizeof(marker)) == 0);

    for (int i = 0; i < 3; i++) {
        len[i] = seal_msg(&tx, 5 + (uint64_t)i, 1000 + i, rec[i]);
    }
    switch (tamper_case) {
    case TAMPER_FLIP:   /* a bit of the second message's value */
        rec[1][DC_TCP_REC_HDR + DC_TCP_HDR_LEN] ^= 0x04;
        break;
    case TAMPER_REPLAY: /* the first record again in place of the second */
        memcpy(rec[1], rec[0], len[0]);
        break;
    case TAMPER_REORDER: /* third before second (all three have one length) */
        memcpy(in, rec[1], len[1]);
        memcpy(rec[1], rec[2], len[2]);
        memcpy(rec[2], in, len[1]);
        break;
    case TAMPER_LENGTH: /* a length the stream cannot have */
        dc_tcp_put_u32(rec[1], 0x7fffffffu);
        break;
    case TAMPER_TRUNCATE: /* half the second record, then the end of the stream */
        len[1] /= 2;
        len[2] = 0;
        break;
    default:
        break;
    }
    for (int i = 0; i < 3; i++) {
        CHECK(send(fd, rec[i], len[i], MSG_NOSIGNAL) == (ssize_t)len[i]);
    }
    if (tamper_case != TAMPER_TRUNCATE) {
        store_wait(ctx, "tamper/checked");
    }
    close(fd);
}

static void tamper_fn(rank_ctx_t *ctx)
{
    dc_request_t reqs[4];
    int32_t vals[3] = {0, 0, 0};
    char msg[sizeof(marker)];

    if (ctx->rank == 0) {
        tamper_client(ctx);
        return;
    }
    memcpy(msg, marker, sizeof(marker));
    connect_peer(ctx, 0);
    CHECK_EQ(tcp->isend(ctx->eps[0], msg, sizeof(msg), 9, &reqs[3]), DCOMM_OK);
    drive(ctx, &reqs[3], 1);
    CHECK_EQ(reqs[3].status, DCOMM_OK);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(tcp->irecv(ctx->eps[0], &vals[i], 4, 5 + (uint64_t)i, &reqs[i]), DCOMM_OK);
    }
    drive(ctx, reqs, 3);
    CHECK_EQ(reqs[0].status, DCOMM_OK); /* the first record is intact */
    CHECK_EQ(vals[0], 1000);
    if (tamper_case == TAMPER_TRUNCATE) {
        /* Cut short: a lost peer, as a killed rank is, saying where it broke. */
        for (int i = 1; i < 3; i++) {
            CHECK_EQ(reqs[i].status, DCOMM_ERR_PEER_LOST);
            CHECK(vals[i] == 0);
        }
        CHECK(strstr(dc_error_get(), "rank 0") != NULL);
        CHECK(strstr(dc_error_get(), "truncated") != NULL);
        CHECK_EQ(tcp->check(ctx->tp), DCOMM_ERR_PEER_LOST);
        return;
    }
    for (int i = 1; i < 3; i++) {
        CHECK_EQ(reqs[i].status, DCOMM_ERR_AUTH);
        CHECK(vals[i] == 0); /* nothing changed was delivered */
    }
    CHECK(strstr(dc_error_get(), "from rank 0") != NULL);
    CHECK(strstr(dc_error_get(), tamper_case == TAMPER_LENGTH ? "out of range"
                                                               : "failed authentication") != NULL);
    /* The connection is dead: check() says so, and so do later requests. */
    CHECK_EQ(tcp->check(ctx->tp), DCOMM_ERR_AUTH);
    CHECK(strstr(dc_error_get(), "rank 0") != NULL);
    CHECK_EQ(tcp->irecv(ctx->eps[0], &vals[0], 4, 8, &reqs[0]), DCOMM_OK);
    drive(ctx, reqs, 1);
    CHECK_EQ(reqs[0].status, DCOMM_ERR_AUTH);
    store_flag(ctx, "tamper/checked");
}

static void test_tamper(void **state)
{
    /* Rank 0 only publishes an address; its part is played by hand. */
    test_spec_t spec = {.nranks = 2, .manual_connect = 1, .killed_rank = -1, .encrypt = 3,
                        .fn = tamper_fn};

    (void)state;
    /* ChaCha20-Poly1305 (the client offers no AES), then AES-256-GCM. */
    for (tamper_aes = 0; tamper_aes <= dc_tcp_aes_available(); tamper_aes++) {
        for (tamper_case = 0; tamper_case < TAMPER_NCASES; tamper_case++) {
            run_procs(&spec);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_records),
        cmocka_unit_test(test_tamper),
    };

    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
