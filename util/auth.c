/* HMAC-SHA256 challenge-response over the job secret, through libsodium. */
#include "auth.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

static void auth_init(void)
{
    /* sodium_init is idempotent and thread-safe after the first call. */
    if (sodium_init() < 0) {
        fprintf(stderr, "dcomm: libsodium failed to initialize\n");
    }
}

void dc_auth_random(void *buf, size_t len)
{
    auth_init();
    randombytes_buf(buf, len);
}

void dc_auth_mac(const uint8_t secret[DC_AUTH_SECRET_LEN], const char *label, const void *a,
                 size_t alen, const void *b, size_t blen, uint8_t mac[DC_AUTH_MAC_LEN])
{
    crypto_auth_hmacsha256_state st;

    auth_init();
    crypto_auth_hmacsha256_init(&st, secret, DC_AUTH_SECRET_LEN);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)label, strlen(label) + 1);
    if (alen > 0) {
        crypto_auth_hmacsha256_update(&st, a, alen);
    }
    if (blen > 0) {
        crypto_auth_hmacsha256_update(&st, b, blen);
    }
    crypto_auth_hmacsha256_final(&st, mac);
}

int dc_auth_verify(const uint8_t secret[DC_AUTH_SECRET_LEN], const char *label, const void *a,
                   size_t alen, const void *b, size_t blen, const uint8_t mac[DC_AUTH_MAC_LEN])
{
    uint8_t expect[DC_AUTH_MAC_LEN];

    dc_auth_mac(secret, label, a, alen, b, blen, expect);
    return sodium_memcmp(expect, mac, DC_AUTH_MAC_LEN) == 0;
}

void dc_auth_session_keys(const uint8_t secret[DC_AUTH_SECRET_LEN], const char *label_a2b,
                          const char *label_b2a, const void *a, size_t alen, const void *b,
                          size_t blen, uint8_t key_a2b[DC_AUTH_KEY_LEN],
                          uint8_t key_b2a[DC_AUTH_KEY_LEN])
{
    _Static_assert(DC_AUTH_KEY_LEN == DC_AUTH_MAC_LEN, "a key is one HMAC-SHA256");
    dc_auth_mac(secret, label_a2b, a, alen, b, blen, key_a2b);
    dc_auth_mac(secret, label_b2a, a, alen, b, blen, key_b2a);
}

void dc_auth_wipe(void *buf, size_t len)
{
    sodium_memzero(buf, len);
}

void dc_auth_secret_to_hex(const uint8_t secret[DC_AUTH_SECRET_LEN], char hex[65])
{
    sodium_bin2hex(hex, 65, secret, DC_AUTH_SECRET_LEN);
}

int dc_auth_secret_from_hex(const char *hex, uint8_t secret[DC_AUTH_SECRET_LEN])
{
    size_t len = 0;

    if (hex == NULL || strlen(hex) != 2 * DC_AUTH_SECRET_LEN) {
        return -1;
    }
    if (sodium_hex2bin(secret, DC_AUTH_SECRET_LEN, hex, 2 * DC_AUTH_SECRET_LEN, NULL, &len,
                       NULL) != 0 ||
        len != DC_AUTH_SECRET_LEN) {
        return -1;
    }
    return 0;
}
