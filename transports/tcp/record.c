/*
 * Records of an encrypted tcp stream (format in tcp.h): AES-256-GCM or
 * ChaCha20-Poly1305 from libsodium, the record number as the nonce, the length
 * field as additional data. No state but the direction's key and record number, so the opener can
 * be fuzzed on its own.
 */
#include <sodium.h>
#include <string.h>

#include "status.h"
#include "tcp.h"

_Static_assert(DC_AUTH_KEY_LEN == crypto_aead_chacha20poly1305_ietf_KEYBYTES, "key size");
_Static_assert(DC_TCP_REC_TAG == crypto_aead_chacha20poly1305_ietf_ABYTES, "tag size");
_Static_assert(DC_TCP_REC_TAG == crypto_aead_aes256gcm_ABYTES, "tag size");
_Static_assert(crypto_aead_aes256gcm_NPUBBYTES == crypto_aead_chacha20poly1305_ietf_NPUBBYTES,
               "nonce size");
_Static_assert(sizeof(((dc_tcp_crypt_t *)0)->aes_state) == sizeof(crypto_aead_aes256gcm_state),
               "AES state size");

int dc_tcp_aes_available(void)
{
    return sodium_init() >= 0 && crypto_aead_aes256gcm_is_available();
}

void dc_tcp_crypt_init(dc_tcp_crypt_t *c, const uint8_t key[DC_AUTH_KEY_LEN], int aes)
{
    memcpy(c->key, key, DC_AUTH_KEY_LEN);
    c->seq = 0;
    c->aes = aes && dc_tcp_aes_available();
    if (c->aes) {
        crypto_aead_aes256gcm_beforenm((crypto_aead_aes256gcm_state *)c->aes_state, key);
    }
}

/* 96-bit nonce: the record number, little-endian, then zeros. Each direction
 * of each connection has its own key, so a number is never used twice with
 * one key. */
static void record_nonce(uint64_t seq, uint8_t nonce[crypto_aead_chacha20poly1305_ietf_NPUBBYTES])
{
    memset(nonce, 0, crypto_aead_chacha20poly1305_ietf_NPUBBYTES);
    dc_tcp_put_u64(nonce, seq);
}

size_t dc_tcp_record_seal(dc_tcp_crypt_t *c, const void *plain, size_t len, uint8_t *out)
{
    uint8_t nonce[crypto_aead_chacha20poly1305_ietf_NPUBBYTES];
    unsigned long long taglen = 0;

    record_nonce(c->seq++, nonce);
    dc_tcp_put_u32(out, (uint32_t)len);
    if (c->aes) {
        crypto_aead_aes256gcm_encrypt_detached_afternm(
            out + DC_TCP_REC_HDR, out + DC_TCP_REC_HDR + len, &taglen, plain, len, out,
            DC_TCP_REC_HDR, NULL, nonce, (const crypto_aead_aes256gcm_state *)c->aes_state);
    } else {
        crypto_aead_chacha20poly1305_ietf_encrypt_detached(
            out + DC_TCP_REC_HDR, out + DC_TCP_REC_HDR + len, &taglen, plain, len, out,
            DC_TCP_REC_HDR, NULL, nonce, c->key);
    }
    return DC_TCP_REC_OVERHEAD + len;
}

int dc_tcp_record_len(const uint8_t *in, size_t avail, size_t *plain_len_p)
{
    uint32_t len;

    if (avail < DC_TCP_REC_HDR) {
        return 0;
    }
    len = dc_tcp_get_u32(in);
    if (len == 0 || len > DC_TCP_REC_MAX) {
        return dc_error_set(DCOMM_ERR_AUTH, "record length %u out of range (1..%u)", len,
                            DC_TCP_REC_MAX);
    }
    *plain_len_p = len;
    return 1;
}

int dc_tcp_record_open(dc_tcp_crypt_t *c, const uint8_t *in, size_t avail, void *out, size_t cap,
                       size_t *plain_len_p, size_t *used_p)
{
    uint8_t nonce[crypto_aead_chacha20poly1305_ietf_NPUBBYTES];
    size_t len = 0;
    int rc = dc_tcp_record_len(in, avail, &len);

    if (rc <= 0) {
        return rc;
    }
    if (avail - DC_TCP_REC_HDR < len + DC_TCP_REC_TAG) {
        return 0;
    }
    if (cap < len) {
        return dc_error_set(DCOMM_ERR_INVALID_ARG, "record of %zu bytes, room for %zu", len,
                            cap);
    }
    record_nonce(c->seq, nonce);
    if ((c->aes ? crypto_aead_aes256gcm_decrypt_detached_afternm(
                      out, NULL, in + DC_TCP_REC_HDR, len, in + DC_TCP_REC_HDR + len, in,
                      DC_TCP_REC_HDR, nonce, (const crypto_aead_aes256gcm_state *)c->aes_state)
                : crypto_aead_chacha20poly1305_ietf_decrypt_detached(
                      out, NULL, in + DC_TCP_REC_HDR, len, in + DC_TCP_REC_HDR + len, in,
                      DC_TCP_REC_HDR, nonce, c->key)) != 0) {
        return dc_error_set(DCOMM_ERR_AUTH, "record %llu (%zu bytes) failed authentication: "
                            "changed, dropped, replayed or reordered on the way",
                            (unsigned long long)c->seq, len);
    }
    c->seq++;
    *plain_len_p = len;
    *used_p = DC_TCP_REC_OVERHEAD + len;
    return 1;
}
