/*
 * crypto.c -- see crypto.h.
 */
#include "crypto.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "alloc.h"
#include "log.h"

void hr_random_bytes(void *buf, size_t n)
{
	if (RAND_bytes(buf, (int)n) != 1)
		hr_panic("crypto: RAND_bytes failed: no randomness");
}

void hr_random_token(char *out, size_t n)
{
	static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
	uint8_t buf[256];
	while (n > 0) {
		size_t chunk = n < sizeof buf ? n : sizeof buf;
		hr_random_bytes(buf, chunk);
		for (size_t i = 0; i < chunk; i++)
			*out++ = alphabet[buf[i] & 31]; /* 256 % 32 == 0: no bias */
		n -= chunk;
	}
	*out = '\0';
}

void hr_sha256_hex(const void *data, size_t len, char out[65])
{
	static const char hex[] = "0123456789abcdef";
	uint8_t md[SHA256_DIGEST_LENGTH];
	SHA256(data, len, md);
	for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[64] = '\0';
}

void hr_hmac_sha256(const void *key, size_t key_len, const void *data, size_t len, uint8_t out[32])
{
	unsigned int n = 32;
	if (!HMAC(EVP_sha256(), key, (int)key_len, data, len, out, &n) || n != 32)
		hr_panic("crypto: HMAC-SHA256 failed");
}

bool hr_ct_equal(const void *a, const void *b, size_t n)
{
	return CRYPTO_memcmp(a, b, n) == 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

bool hr_key_from_hex(const char *hex, uint8_t key[HR_KEY_LEN], hr_err *err)
{
	size_t len = strlen(hex);
	while (len && (hex[len - 1] == '\n' || hex[len - 1] == ' '))
		len--;
	if (len != 2 * HR_KEY_LEN)
		return hr_fail(err, HR_ERR_INVALID, "master_key",
			       "master key must be 64 hex digits, got %zu characters", len);
	for (size_t i = 0; i < HR_KEY_LEN; i++) {
		int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return hr_fail(err, HR_ERR_INVALID, "master_key",
				       "master key has a non-hex character at position %zu", 2 * i);
		key[i] = (uint8_t)(hi << 4 | lo);
	}
	return true;
}

void hr_seal(const uint8_t key[HR_KEY_LEN], const char *aad, const void *plain, size_t len,
	     uint8_t **out, size_t *out_len)
{
	uint8_t *buf = hr_malloc(len + HR_SEAL_OVERHEAD);
	uint8_t *nonce = buf, *ct = buf + 12, *tag = buf + 12 + len;
	int n = 0;
	hr_random_bytes(nonce, 12);
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	if (!ctx || EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce) != 1 ||
	    EVP_EncryptUpdate(ctx, NULL, &n, (const uint8_t *)aad, (int)strlen(aad)) != 1 ||
	    EVP_EncryptUpdate(ctx, ct, &n, plain, (int)len) != 1 ||
	    EVP_EncryptFinal_ex(ctx, ct + n, &n) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag) != 1)
		hr_panic("crypto: AES-256-GCM encryption failed");
	EVP_CIPHER_CTX_free(ctx);
	*out = buf;
	*out_len = len + HR_SEAL_OVERHEAD;
}

bool hr_open(const uint8_t key[HR_KEY_LEN], const char *aad, const uint8_t *sealed, size_t len,
	     char **plain, size_t *plain_len, hr_err *err)
{
	if (len < HR_SEAL_OVERHEAD)
		return hr_fail(err, HR_ERR_INVALID, NULL, "sealed secret is too short (%zu bytes)", len);
	size_t n = len - HR_SEAL_OVERHEAD;
	const uint8_t *nonce = sealed, *ct = sealed + 12, *tag = sealed + 12 + n;
	char *out = hr_malloc(n + 1);
	int m = 0;
	bool ok = false;
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	if (!ctx)
		hr_panic("crypto: EVP_CIPHER_CTX_new failed");
	if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce) == 1 &&
	    EVP_DecryptUpdate(ctx, NULL, &m, (const uint8_t *)aad, (int)strlen(aad)) == 1 &&
	    EVP_DecryptUpdate(ctx, (uint8_t *)out, &m, ct, (int)n) == 1 &&
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, (void *)tag) == 1 &&
	    EVP_DecryptFinal_ex(ctx, (uint8_t *)out + m, &m) == 1)
		ok = true;
	EVP_CIPHER_CTX_free(ctx);
	if (!ok) {
		hr_free(out);
		return hr_fail(err, HR_ERR_INVALID, NULL,
			       "sealed secret does not open: wrong master key or tampered data");
	}
	out[n] = '\0';
	*plain = out;
	*plain_len = n;
	return true;
}
