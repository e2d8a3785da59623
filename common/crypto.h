/*
 * crypto.h -- the few cryptographic primitives herald needs, over OpenSSL.
 *
 * - random bytes and random tokens (CSPRNG; failure to get randomness is a
 *   panic: herald must never run with predictable secrets);
 * - SHA-256 (API keys and one-time codes are stored only as hashes; they are
 *   high-entropy or short-lived, so a fast hash plus constant-time compare is
 *   the right tool, not a password KDF);
 * - constant-time comparison;
 * - AES-256-GCM sealing of secrets at rest (provider credentials) under the
 *   operator's master key.  Sealed format: 12-byte nonce | ciphertext | 16-byte tag.
 *
 * Thread safety: all functions are thread-safe.
 */
#ifndef HERALD_CRYPTO_H
#define HERALD_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define HR_KEY_LEN 32
#define HR_SEAL_OVERHEAD (12 + 16)

void hr_random_bytes(void *buf, size_t n);

/* n random characters of a base32 alphabet (a-z2-7) into out[n+1]. */
void hr_random_token(char *out, size_t n);

/* SHA-256 of data as 64 lower-case hex digits into out[65]. */
void hr_sha256_hex(const void *data, size_t len, char out[65]);

/* HMAC-SHA256 of data under key (any length) into out[32]. */
void hr_hmac_sha256(const void *key, size_t key_len, const void *data, size_t len, uint8_t out[32]);

/* Constant-time equality of two n-byte buffers. */
bool hr_ct_equal(const void *a, const void *b, size_t n);

/* Parse exactly 64 hex digits into a 32-byte key. */
bool hr_key_from_hex(const char *hex, uint8_t key[HR_KEY_LEN], hr_err *err) HR_MUST_CHECK;

/*
 * Seal plaintext under key; *out (heap, caller frees) receives
 * len + HR_SEAL_OVERHEAD bytes.  `aad` binds the secret to its owner (e.g.
 * "tenant:42/account:sms-main") so a sealed value cannot be moved to another row.
 */
void hr_seal(const uint8_t key[HR_KEY_LEN], const char *aad, const void *plain, size_t len,
	     uint8_t **out, size_t *out_len);

/* Open what hr_seal produced; fails (HR_ERR_INVALID) on a wrong key, aad or tampering. */
bool hr_open(const uint8_t key[HR_KEY_LEN], const char *aad, const uint8_t *sealed, size_t len,
	     char **plain, size_t *plain_len, hr_err *err) HR_MUST_CHECK;

#endif
