/* Challenge-response authentication with HMAC-SHA256 over the job secret
 * (libsodium). Used by the rendezvous server/client and the tcp transport. */
#ifndef DC_AUTH_H
#define DC_AUTH_H

#include <stddef.h>
#include <stdint.h>

#define DC_AUTH_NONCE_LEN  32
#define DC_AUTH_MAC_LEN    32
#define DC_AUTH_SECRET_LEN 32

/* Fills buf with cryptographically random bytes. */
void dc_auth_random(void *buf, size_t len);
/* mac = HMAC-SHA256(secret, label || a || b). */
void dc_auth_mac(const uint8_t secret[DC_AUTH_SECRET_LEN], const char *label, const void *a,
                 size_t alen, const void *b, size_t blen, uint8_t mac[DC_AUTH_MAC_LEN]);
/* Constant-time verification of a mac computed as above; 1 when it matches. */
int dc_auth_verify(const uint8_t secret[DC_AUTH_SECRET_LEN], const char *label, const void *a,
                   size_t alen, const void *b, size_t blen, const uint8_t mac[DC_AUTH_MAC_LEN]);
/* Session keys for one connection, bound to its whole handshake: each is
 * HMAC-SHA256(secret, label || a || b) under its own label, so the two
 * directions never share a key and a new pair of nonces gives new keys. */
#define DC_AUTH_KEY_LEN 32
void dc_auth_session_keys(const uint8_t secret[DC_AUTH_SECRET_LEN], const char *label_a2b,
                          const char *label_b2a, const void *a, size_t alen, const void *b,
                          size_t blen, uint8_t key_a2b[DC_AUTH_KEY_LEN],
                          uint8_t key_b2a[DC_AUTH_KEY_LEN]);
/* Overwrites len bytes in a way the compiler keeps (keys on their way out). */
void dc_auth_wipe(void *buf, size_t len);
/* Secret as 64 hex characters (+ NUL) and back; parse returns 0 on success. */
void dc_auth_secret_to_hex(const uint8_t secret[DC_AUTH_SECRET_LEN], char hex[65]);
int dc_auth_secret_from_hex(const char *hex, uint8_t secret[DC_AUTH_SECRET_LEN]);

#endif
